"""garg-d20: the recipe is the time-to-curve recipe, the quick run writes a normal run folder, the OLS baseline
matches NumPy least squares on the same sequences, and the stop rule ends the run."""

from __future__ import annotations

import numpy as np
import pytest

from mesaopt import experiments
from mesaopt.errors import ConfigError
from mesaopt.experiments.garg_d20 import recipe
from mesaopt.seeding import generator
from mesaopt.tasks import LinearRegression


def test_recipe_is_the_documented_one():
    r = recipe()
    assert (r.lr, r.warmup_steps, r.batch_size, r.grad_clip, r.weight_decay) == (5e-4, 200, 64, 1.0, 0.0)
    assert r.curriculum.mode == "gated" and r.curriculum.gate.threshold == 0.15 and r.curriculum.gate.min_steps == 100
    assert (r.curriculum.dims.start, r.curriculum.dims.end, r.curriculum.points.start, r.curriculum.points.inc) == \
        (2, 20, 6, 3)
    assert (r.schedule, r.decay_steps, r.min_lr_ratio) == ("cosine_after_curriculum", 12_000, 0.1)
    assert (r.stop.target, r.stop.at, r.stop.fresh_sequences) == (0.05, 40, 4000)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("gd20") / "run"
    return experiments.run("garg-d20", out=out, quick=True, progress=False,
                           overrides={"train.stop.target": 100.0, "train.steps": 30}), out


def test_quick_run_stops_on_target_and_writes_a_run_folder(quick):
    res, out = quick
    m = res.metrics
    assert m["reached"] == 1.0 and m["steps_to_target"] == m["steps"] <= 30
    assert m["curriculum_complete_step"] <= m["steps_to_target"]
    assert m["target_err_fresh"] <= 100.0 and m["target_err_eval"] <= 100.0
    for f in ("curve.png", "trajectory.png", "ckpt/model.safetensors", "metrics.jsonl", "config.yaml"):
        assert (out / f).is_file()


def test_ols_curve_matches_numpy_lstsq(quick):
    res, _ = quick
    cfg = res.config
    d, T, n = cfg["d"], cfg["n_points"], cfg["eval_sequences"]
    gen = generator(cfg["seed"], "final-eval")
    task = LinearRegression(d=d)
    chunks = [task.sample(min(cfg["eval_chunk"], n - i), T, gen) for i in range(0, n, cfg["eval_chunk"])]
    xs = np.concatenate([b.xs.double().numpy() for b in chunks])
    ys = np.concatenate([b.ys.double().numpy() for b in chunks])
    for k in (0, 1, d - 1, d + 2, T - 1):
        if k == 0:
            pred = np.zeros(len(xs))
        else:  # min-norm least squares from the first k examples, per sequence
            pred = np.array([xs[i, k] @ np.linalg.lstsq(xs[i, :k], ys[i, :k], rcond=None)[0] for i in range(len(xs))])
        ref = float(np.mean((pred - ys[:, k]) ** 2)) / d
        assert res.metrics[f"ols_err_at_{k}"] == pytest.approx(ref, rel=1e-4, abs=1e-9)


def test_config_rejects_inconsistent_sizes():
    with pytest.raises(ConfigError, match="train.n_points"):
        experiments.make_config("garg-d20", {"train.n_points": 11})  # owned by the experiment: n_points
    with pytest.raises(ConfigError, match="stop.at"):
        experiments.make_config("garg-d20", {"n_points": 21})
    assert experiments.make_config("garg-d20", {"n_points": 21, "train.stop.at": 20}).train.stop.at == 20


def test_example_job_file_is_the_recipe():
    from pathlib import Path

    from mesaopt.experiments.garg_d20 import GargD20Config
    from mesaopt.train.job import make_job

    root = Path(__file__).resolve().parents[2]
    job = make_job(root / "examples" / "garg_d20_recipe.yaml")
    assert job.train.model_dump() == recipe().model_dump()
    m = GargD20Config().model
    assert job.model == {"kind": "gpt", "d": 20, "n_positions": 41, "layers": m.layers, "heads": m.heads,
                         "width": m.width}
