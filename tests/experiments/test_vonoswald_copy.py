from __future__ import annotations

from mesaopt import experiments

TINY = {"d": 3, "n_context": 4, "train.steps": 30, "train.batch_size": 64, "train.eval_every": 10,
        "train.ckpt_every": 15, "eval_batch_size": 256, "lr_fit_batch_size": 256}


def test_same_seed_same_numbers_and_artifacts(tmp_path):
    a = experiments.run("vonoswald-copy", overrides=TINY, out=tmp_path / "a", progress=False)
    b = experiments.run("vonoswald-copy", overrides=TINY, out=tmp_path / "b", progress=False)
    c = experiments.run("vonoswald-copy", overrides={**TINY, "seed": 1}, out=tmp_path / "c", progress=False)
    assert a.metrics == b.metrics and a.metrics["loss"] != c.metrics["loss"]
    for key in ("loss", "gd_loss", "sens_cos", "copy_mass"):
        assert key in a.metrics
    assert a.metrics["construction_err"] < 1e-9
    for name in ("attention.png", "loss.png", "metrics.jsonl"):
        assert (tmp_path / "a" / name).is_file()
