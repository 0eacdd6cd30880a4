from __future__ import annotations

import yaml

from mesaopt import experiments

TINY = {"train.steps": 40, "train.batch_size": 128, "train.eval_every": 10, "train.ckpt_every": 20,
        "train.schedule": "constant", "eval_batch_size": 256, "lr_fit_batch_size": 256, "d": 4, "n_context": 6}


def test_same_seed_same_numbers(tmp_path):
    a = experiments.run("vonoswald-gd", overrides=TINY, out=tmp_path / "a", progress=False)
    b = experiments.run("vonoswald-gd", overrides=TINY, out=tmp_path / "b", progress=False)
    c = experiments.run("vonoswald-gd", overrides={**TINY, "seed": 1}, out=tmp_path / "c", progress=False)
    assert a.metrics == b.metrics
    assert a.metrics["lsa_loss"] != c.metrics["lsa_loss"]
    assert a.metrics["construction_err"] <= 1e-12


def test_resume_extends_a_run_to_the_same_result(tmp_path):
    full = experiments.run("vonoswald-gd", overrides=TINY, out=tmp_path / "full", progress=False)
    half = tmp_path / "half"
    experiments.run("vonoswald-gd", overrides={**TINY, "train.steps": 20}, out=half, progress=False)
    cfg = yaml.safe_load((half / "config.yaml").read_text())
    cfg["train"]["steps"] = 40  # the "killed" run had been asked for 40 steps
    (half / "config.yaml").write_text(yaml.safe_dump(cfg))
    resumed = experiments.run("vonoswald-gd", out=half, resume=True, progress=False)
    assert resumed.metrics == full.metrics
