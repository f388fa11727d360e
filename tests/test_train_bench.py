"""The bench: mixer and scan timing grids, ratios to the baseline, skipped cells, memory, files."""

from __future__ import annotations

import json

import pytest
import torch

import recurrences.train.testing  # noqa: F401  (registers the _toy mixers)
from recurrences.train import bench as bench_mod
from recurrences.train.bench import (
    PeakMemory,
    bench_mixers,
    bench_scan,
    format_table,
    parse_mixer_list,
    scan_methods,
    write_bench,
)


def test_parse_mixer_list_forms_and_errors():
    assert parse_mixer_list("_toy-ema,_toy-bimean:reference") == [
        ("_toy-ema", "auto"),
        ("_toy-bimean", "reference"),
    ]
    assert parse_mixer_list("_toy-ema", forms_all=True) == [("_toy-ema", "reference")]
    assert parse_mixer_list("_toy-ema,_toy-ema") == [("_toy-ema", "auto")]
    with pytest.raises(ValueError, match="unknown mixer 'nope'.*known mixers: .*_toy-ema"):
        parse_mixer_list("nope")
    with pytest.raises(ValueError, match="has no form 'fast'; its forms: auto, reference"):
        parse_mixer_list("_toy-ema:fast")
    with pytest.raises(ValueError, match="--mixers"):
        parse_mixer_list(" , ")


def test_peak_memory_counts_live_tensors():
    with PeakMemory() as m:
        a = torch.ones(1000)  # 4000 bytes
        b = a * 2  # 4000 more, both alive
        del a, b
        c = torch.ones(500)  # the peak stays 8000
    assert m.peak >= 8000 and m.peak < 8000 + 2000
    assert m.live == c.numel() * 4
    assert PeakMemory().peak == 0


def test_bench_scan_ratios_and_files(tmp_path):
    res = bench_scan([3, 16], batch=2, d=4, backward=True, repeats=2, progress=False)
    assert res.baseline == "sequential" and res.targets[0] == "sequential"
    assert set(res.targets) == set(scan_methods())
    assert len(res.cells) == len(res.targets) * 2 * 2
    for c in res.cells:
        assert c.status == "ok" and c.median_s > 0 and 1 <= len(c.times_s) <= 2 and c.peak_bytes > 0
        base = res.cell("sequential", c.T, c.pass_)
        assert c.ratio == pytest.approx(c.median_s / base.median_s)
    assert all(c.ratio == 1.0 for c in res.cells if c.target == "sequential")
    files = write_bench(res, tmp_path, command="recurrences bench --scan")
    data = json.loads(files["json"].read_text())
    assert data["kind"] == "scan" and data["command"] == "recurrences bench --scan"
    assert data["environment"]["torch"] == torch.__version__
    assert {c["pass"] for c in data["cells"]} == {"forward", "forward+backward"}
    assert files["png"].is_file() and files["png"].stat().st_size > 0
    table = format_table(res)
    assert "baseline: sequential" in table and "x1.00" in table
    with pytest.raises(ValueError, match="unknown"):
        bench_scan([4], methods=["warp"], progress=False)
    with pytest.raises(ValueError, match="--lengths"):
        bench_scan([0], progress=False)


def test_bench_mixers_baseline_and_skips(tmp_path):
    mixers = parse_mixer_list("_toy-bimean,_toy-ema:reference")
    res = bench_mixers(
        mixers, [4, 8], batch=2, d_model=8, n_heads=1, backward=True, repeats=1, progress=False
    )
    assert res.baseline == "_toy-bimean" and res.targets == ["_toy-bimean", "_toy-ema:reference"]
    assert all(c.status == "ok" and c.ratio is not None for c in res.cells)
    # a baseline that is not in the list is added and measured in the same run
    res2 = bench_mixers(
        mixers[:1], [4], batch=1, d_model=4, baseline="_toy-ema", repeats=1, progress=False, memory=False
    )
    assert res2.baseline == "_toy-ema" and "_toy-ema" in res2.targets
    assert all(c.peak_bytes is None for c in res2.cells)
    # a cell over its time budget is recorded as skipped, and so are longer lengths of the same target
    slow = bench_mixers(mixers[:1], [4, 8], batch=1, d_model=4, max_seconds=1e-12, repeats=1, progress=False)
    assert [c.status for c in slow.cells] == ["skipped", "skipped"]
    assert "too slow" in slow.cells[0].reason and slow.cells[0].median_s is None
    write_bench(slow, tmp_path)  # skipped cells serialise too
    assert "skipped" in format_table(slow)


def test_out_of_memory_is_a_skipped_cell_not_a_crash():
    def oom():
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    status, times, peak, reason = bench_mod._time_cell(
        oom, repeats=2, max_seconds=10, device=torch.device("cpu"), memory=True
    )
    assert status == "skipped" and "out of memory" in reason and times == []

    def bug():
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        bench_mod._time_cell(bug, repeats=1, max_seconds=10, device=torch.device("cpu"), memory=False)
