#!/usr/bin/env bash
# The scan core: every linear_scan method against method "sequential" (the reference loop), forward
# and forward+backward, batch 8, state width 256, T = 256 .. 16384. Results: benchmarks/results/scan/.
set -euo pipefail
cd "$(dirname "$0")/.."
# One thread: on a shared box, two OpenMP threads spin against the other jobs and time contention
# (the chunked form measured up to 100x slower with 2 threads than with 1 there).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
recurrences bench --scan --lengths 256,1024,4096,16384 --batch 8 --d 256 --backward \
    --repeats "${REPEATS:-3}" --max-seconds "${MAX_SECONDS:-120}" --out benchmarks/results/scan "$@"
