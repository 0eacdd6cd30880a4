"""Smoke test: the hooks benchmark runs at tiny sizes and reports its ratios per model family."""

from __future__ import annotations

import json

import torch

from benchmarks import __main__ as bench_main


def test_hooks_benchmark_reports_ratios(tmp_path):
    n = torch.get_num_threads()
    try:
        assert bench_main.main(["hooks", "--quick", "--threads", "1", "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(n)
    rows = json.loads((tmp_path / "results-quick.json").read_text())["results"]["hooks"]["rows"]
    assert set(rows) == {"lsa", "softmax", "gpt", "ebt"}
    for r in rows.values():
        assert r["hook_points"] > 0 and r["flag_check_fraction"] < 0.01
        assert all(r[f"ratio_{k}"] > 0 for k in ("idle", "noop", "unfused", "control"))
