from __future__ import annotations

from mesaopt import experiments

TINY = {"train.steps": 30, "train.batch_size": 64, "train.eval_every": 10, "train.ckpt_every": 15,
        "features": 4, "hidden": 8, "eval_batch_size": 256, "fit_batch_size": 256}


def test_same_seed_same_numbers_and_artifacts(tmp_path):
    a = experiments.run("vonoswald-sine", overrides=TINY, out=tmp_path / "a", progress=False)
    b = experiments.run("vonoswald-sine", overrides=TINY, out=tmp_path / "b", progress=False)
    c = experiments.run("vonoswald-sine", overrides={**TINY, "seed": 1}, out=tmp_path / "c", progress=False)
    assert a.metrics == b.metrics and a.metrics["mlp_lsa_loss"] != c.metrics["mlp_lsa_loss"]
    for key in ("mlp_lsa_loss", "lsa_loss", "gd_features_loss", "sens_cos_gd_features"):
        assert key in a.metrics
    for name in ("losses.png", "examples.png", "alignment.png", "mlp_lsa/metrics.jsonl", "lsa/metrics.jsonl"):
        assert (tmp_path / "a" / name).is_file()
