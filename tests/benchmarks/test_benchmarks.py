"""Smoke tests: every benchmark runs at tiny sizes and reports its ratios; math helpers checked directly."""

from __future__ import annotations

import json
import math

import pytest
import torch

from benchmarks import __main__ as bench_main
from benchmarks.common import compare, count_flops
from benchmarks.time_to_curve import _Stages, fit_extrapolation
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


def test_time_to_curve_quick(tmp_path):
    assert bench_main.main(["time-to-curve", "--quick", "--no-plot", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results-quick.json").read_text())["results"]["time-to-curve"]
    lines = (tmp_path / "time_to_curve-quick.jsonl").read_text().splitlines()
    assert len(lines) == len(res["trajectory"]) >= 1
    assert res["steps"] >= 1 and math.isfinite(res["final_err_at"])
    assert len(res["final_curve_fresh"]) == 9
    assert res["final_err_at_fresh"] == pytest.approx(res["final_curve_fresh"][8], abs=1e-5)
    model, state = load_model(res["model"])  # the final weights are saved (safetensors) and rebuild the GPT
    assert state["step"] == res["steps"] and state["extra"]["recipe"]["gate"]["threshold"] == 100.0
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


def _recipe(**kw):
    return {"dims": {"start": 2, "end": 4, "inc": 1, "interval": 3},
            "curriculum_points": {"start": 5, "end": 9, "inc": 2, "interval": 3}, "warmup": 2, **kw}


def test_fixed_stages_follow_the_ramps_and_schedule():
    st = _Stages(_recipe(decay={"steps": 4, "min_ratio": 0.1}), d=4, points=9)
    assert [st.at(s) for s in (1, 3, 4, 7, 100)] == [(2, 5), (2, 5), (3, 7), (4, 9), (4, 9)]
    assert not st.full(6) and st.full(7)
    assert [st.lr_factor(s) for s in (1, 2, 3)] == [0.5, 1.0, 1.0]
    assert st.lr_factor(7) == pytest.approx(1.0) and st.lr_factor(9) == pytest.approx(0.55)
    assert st.lr_factor(11) == pytest.approx(0.1) and st.lr_factor(50) == pytest.approx(0.1)


def test_gated_stages_advance_only_when_the_late_prefix_error_is_low():
    st = _Stages(_recipe(gate={"threshold": 0.5, "min_steps": 2, "ema": 0.0}), d=4, points=9)
    high, low = torch.full((8, 5), 10.0), torch.zeros(8, 5)
    low[:, :3] = 100.0  # early prefixes (< 1.5 dims examples) do not count
    for step in range(1, 6):
        st.observe(step, high, 2)
    assert st.at(6) == (2, 5) and not st.full(6)
    st.observe(6, low, 2)
    assert st.at(7) == (3, 7) and not st.full(7)
    low7 = torch.zeros(8, 7)
    low7[:, :4] = 100.0
    st.observe(7, low7, 3)
    assert st.at(8) == (3, 7)  # min_steps: a new stage runs at least 2 steps
    st.observe(8, low7, 3)
    assert st.at(9) == (4, 9) and st.full(9) and not st.full(8)


def test_time_to_curve_stops_only_after_the_fresh_check(tmp_path):
    from benchmarks.time_to_curve import QUICK, run

    res = run(out=tmp_path, target=100.0, plot=True, recipe=QUICK)
    assert (tmp_path / "time_to_curve.png").stat().st_size > 0  # trajectory + eval-batch and fresh curves
    lines = [json.loads(s) for s in (tmp_path / "time_to_curve.jsonl").read_text().splitlines()]
    assert res["reached"] and res["time_to_target_s"] == lines[-1]["wall_s"]
    assert lines[-1]["full_curriculum"] and lines[-1]["err_at_fresh"] <= 100.0
    assert all("err_at_fresh" not in r for r in lines[:-1])  # checked only once the eval batch is below target
    model, state = load_model(res["model"])
    assert state["optimizer"]["class"] == "AdamW" and state["extra"]["stage"]["full_step"] is not None


def test_time_to_curve_resume_gives_the_same_numbers(tmp_path):
    from benchmarks.time_to_curve import QUICK, run

    rc = {**QUICK, "max_steps": 9}
    full = run(out=tmp_path / "a", target=0.0, plot=False, recipe=rc)  # target 0: never reached, runs 9 steps
    cut = run(out=tmp_path / "b", target=0.0, plot=False, recipe={**rc, "max_steps": 6})  # the "killed" run
    assert cut["steps"] == 6 and cut["resumed_at_step"] is None
    res = run(out=tmp_path / "b", target=0.0, plot=False, recipe=rc, resume=True)
    assert res["resumed_at_step"] == 6 and res["steps"] == 9
    assert [r["err_at"] for r in res["trajectory"]] == [r["err_at"] for r in full["trajectory"]]
    assert res["final_curve_fresh"] == full["final_curve_fresh"]
    lines = [json.loads(s) for s in (tmp_path / "b" / "time_to_curve.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [3, 6, 9]
    a, _ = load_model(tmp_path / "a" / "time_to_curve_model")
    b, _ = load_model(tmp_path / "b" / "time_to_curve_model")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_time_to_curve_resume_refuses_another_recipe(tmp_path, capsys):
    from benchmarks.time_to_curve import QUICK, run

    run(out=tmp_path, target=0.0, plot=False, recipe={**QUICK, "max_steps": 3})
    with pytest.raises(ValueError, match=r"different recipe \(fields \['seed'\]\)"):
        run(out=tmp_path, target=0.0, plot=False, recipe=QUICK, seed=5, resume=True)
    args = ["time-to-curve", "--quick", "--no-plot", "--out", str(tmp_path)]
    assert bench_main.main(args) == 0
    code = bench_main.main([*args, "--seed", "5", "--resume"])
    assert code == 2 and "different recipe" in capsys.readouterr().err
