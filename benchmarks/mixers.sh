#!/usr/bin/env bash
# Every registered mixer in its default ("auto") form against softmax attention, forward and
# forward+backward, batch 4, d_model 256, 4 heads. Results: benchmarks/results/mixers/.
set -euo pipefail
cd "$(dirname "$0")/.."
# One thread: on a shared box, two OpenMP threads spin against the other jobs and time contention
# (the chunked form measured up to 100x slower with 2 threads than with 1 there).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
MIXERS="$(python -c 'from recurrences.layers import available_mixers; print(",".join(available_mixers()))')"
recurrences bench --mixers "$MIXERS" --baseline attention --lengths 256,1024,4096 --batch 4 --d-model 256 \
    --n-heads 4 --backward --repeats "${REPEATS:-3}" --max-seconds "${MAX_SECONDS:-60}" \
    --out benchmarks/results/mixers "$@"
