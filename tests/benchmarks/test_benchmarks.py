"""Smoke tests: every benchmark runs at tiny sizes and reports its ratios; math helpers checked directly."""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import __main__ as bench_main
from benchmarks.common import compare, count_flops
from benchmarks.time_to_curve import fit_extrapolation
from mesaopt.tasks import LinearRegression
from mesaopt.train.checkpoint import load_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    torch.set_num_threads(1)
    assert bench_main.main(["--quick", "--threads", "1", "--out", str(out)]) == 0
    return json.loads((out / "results-quick.json").read_text()), out


def test_default_set_reports_ratios(report):
    rep, out = report
    res = rep["results"]
    assert set(res) == {"peaks", "lsa", "algorithms", "gpt", "startup"}
    assert res["startup"]["ratio_to_python"]["help"] > 1 and res["startup"]["median_s"]["python_pass"] > 0
    assert rep["machine"]["cores"] >= 1
    assert res["peaks"]["float32_gflops"] > 0 and res["peaks"]["bfloat16_gflops"] > 0
    assert all(r["speedup"] > 0 for r in res["algorithms"]["rows"].values())
    assert all(r["max_abs_pred_diff"] < 1e-4 for r in res["algorithms"]["rows"].values())
    assert res["gpt"]["speedup_mesaopt_fp32_vs_hf"] > 0
    assert 0 <= res["gpt"]["params"]["hf"] - res["gpt"]["params"]["mesaopt"] <= 32  # + unused 1-token wte
    assert res["gpt"]["loss_curve_fp32_vs_bf16"]["rel_diff_last10pct"] < 0.1
    curve = res["lsa"]["curve"]
    assert [r["n"] for r in curve] == [16, 32, 64]
    assert all(r["max_abs_diff"] < 1e-4 for r in curve)
    assert res["lsa"]["big_step"]["gflops"] > 0
    for name in ("lsa_cost_vs_n.png", "algorithms_cost.png", "gpt_throughput.png"):
        assert (out / name).stat().st_size > 0


def test_time_to_curve_quick_is_a_garg_d20_run(tmp_path):
    assert bench_main.main(["time-to-curve", "--quick", "--no-plot", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results-quick.json").read_text())["results"]["time-to-curve"]
    run = tmp_path / "garg-d20-seed0-quick"
    results = json.loads((run / "results.json").read_text())
    assert res["run"] == str(run) and results["experiment"] == "garg-d20"
    assert res["steps"] == results["metrics"]["steps"] >= 1
    assert res["final_err_at_fresh"] == results["metrics"]["err_at_8"]
    evals = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines() if "stop_err" in s]
    assert [r["err_at"] for r in res["trajectory"]] == [r["stop_err"] for r in evals]
    model, state = load_model(run)  # the run folder keeps the weights (safetensors) and rebuilds the GPT
    assert state["step"] == res["steps"]
    b = LinearRegression(d=4).sample(8, 9, torch.Generator().manual_seed(0))
    assert model.prefix(b.xs, b.ys).shape == (8, 9)


def test_unknown_benchmark_exits_2(capsys):
    assert bench_main.main(["nope"]) == 2
    assert "unknown benchmark" in capsys.readouterr().err


def test_fit_extrapolation_recovers_power_law():
    traj = [{"wall_s": t, "err_at": 2.0 * t ** -0.5, "full_curriculum": True} for t in (10, 20, 40, 80, 160, 320)]
    fit = fit_extrapolation(traj, 0.05)
    assert fit["slope"] == pytest.approx(-0.5, abs=1e-6)
    assert fit["predicted_wall_s"] == pytest.approx((2.0 / 0.05) ** 2, rel=1e-4)


def test_count_flops_and_compare():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert count_flops(lambda: a @ b) == 2 * 8 * 16 * 4
    secs = compare({"x": lambda: a @ b, "y": lambda: a @ b}, repeats=2)
    assert set(secs) == {"x", "y"} and all(s > 0 for s in secs.values())


def test_time_to_curve_stops_on_the_target_and_resumes(tmp_path, capsys):
    from benchmarks.time_to_curve import run

    res = run(quick=True, out=tmp_path / "a", target=100.0, plot=True)
    assert res["reached"] and res["steps_to_target"] == res["steps"]
    assert (tmp_path / "a" / "garg-d20-seed0-quick" / "trajectory.png").stat().st_size > 0
    last = res["trajectory"][-1]
    assert last["full_curriculum"] and last["err_at_fresh"] <= 100.0
    assert all(r["err_at_fresh"] is None for r in res["trajectory"][:-1])  # checked once the eval batch passes
    cut = run(quick=True, out=tmp_path / "b", target=0.0 + 1e-9, max_steps=9, plot=False)
    assert cut["steps"] == 9 and not cut["reached"]
    args = ["time-to-curve", "--quick", "--no-plot", "--out", str(tmp_path / "c"), "--resume"]
    assert bench_main.main(args) == 2 and "resume" in capsys.readouterr().err
