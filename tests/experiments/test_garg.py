"""garg-curves: config handling, error metric, and an end-to-end quick run (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mesaopt.algorithms import OLS
from mesaopt.errors import ConfigError
from mesaopt.experiments import make_config, run
from mesaopt.experiments.garg import squared_errors


def test_config_defaults_and_partial_train_overrides():
    cfg = make_config("garg-curves", overrides={"lr": "3e-3", "train.curriculum.dims.interval": "7"})
    assert cfg.train.lr == 3e-3 and cfg.train.objective == "prefix"  # experiment defaults kept
    assert cfg.train.curriculum.dims.interval == 7 and cfg.train.curriculum.dims.end == cfg.d
    assert cfg.report_points() == [3, 5, 10, 15]
    assert make_config("garg-curves", overrides={"report_at": [2, 4]}).report_points() == [2, 4]
    with pytest.raises(ConfigError, match="report_at"):
        make_config("garg-curves", overrides={"report_at": [16]})
    with pytest.raises(ConfigError, match="sparsity"):
        make_config("garg-curves", overrides={"d": "2", "sparse.sparsity": "3"})
    with pytest.raises(ConfigError, match="size"):
        make_config("garg-curves", overrides={"model.size": "huge"})


def test_squared_errors_is_prefix_error_over_d():
    g = torch.Generator().manual_seed(0)
    xs, ys = torch.randn(7, 6, 3, generator=g), torch.randn(7, 6, generator=g)
    got = squared_errors(OLS(), xs, ys, d=3, chunk=3)
    ref = np.zeros((7, 6))
    for t in range(6):
        for b in range(7):
            x, y = xs[b, :t].double().numpy(), ys[b, :t].double().numpy()
            w = np.linalg.pinv(x) @ y if t else np.zeros(3)
            ref[b, t] = (w @ xs[b, t].double().numpy() - ys[b, t].item()) ** 2 / 3
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-8)


@pytest.mark.slow
def test_quick_run_writes_metrics(tmp_path):
    over = {"train.steps": "30", "sparse.train_steps": "10", "train.warmup_steps": "10", "eval_batch": "64",
            "train.eval_every": "15"}
    res = run("garg-curves", overrides=over, out=tmp_path, quick=True, progress=False)
    data = json.loads((tmp_path / "results.json").read_text())
    m = data["metrics"]
    for n in (3, 5, 10, 15):
        for name in ("transformer", "ols", "ridge", "averaging", "knn", "lasso", "sparse_transformer"):
            assert np.isfinite(m[f"{name}_err_at_{n}"]), (name, n)
    assert m["transformer_over_ols_at_10"] > 0 and m["transformer_below_averaging"] in (0.0, 1.0)
    assert m["ridge_lam"] == pytest.approx(0.25)
    assert m["ridge_err_at_15"] <= m["averaging_err_at_15"]
    assert {"curves.png", "curves.pdf", "curves.json", "dense/metrics.jsonl"} <= set(res.artifacts)
    curves = json.loads((tmp_path / "curves.json").read_text())
    assert len(curves["dense"]["ols"]) == 16
