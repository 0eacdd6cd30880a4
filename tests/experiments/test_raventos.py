"""raventos-pool / raventos-diversity: evaluation against independent NumPy references, transition, end to end."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mesaopt.experiments.raventos import RaventosConfig, RaventosPoolConfig, evaluate, transition
from mesaopt.io import to_json
from mesaopt.seeding import generator
from mesaopt.tasks import LinearRegression


def _np_dmmse_prefix(xs, ys, pool, noise_var):
    """Posterior mean over the pool from examples 0..t-1, one t at a time (float64 NumPy)."""
    b, t, _ = xs.shape
    out = np.zeros((b, t))
    for s in range(t):
        res = ys[:, :s, None] - np.einsum("btd,md->btm", xs[:, :s], pool)
        logw = -(res**2).sum(1) / (2 * noise_var)
        w = np.exp(logw - logw.max(1, keepdims=True))
        w /= w.sum(1, keepdims=True)
        out[:, s] = np.einsum("bm,md,bd->b", w, pool, xs[:, s])
    return out


def _np_ridge_prefix(xs, ys, lam):
    b, t, d = xs.shape
    out = np.zeros((b, t))
    for s in range(t):
        a = np.einsum("btd,bte->bde", xs[:, :s], xs[:, :s]) + lam * np.eye(d)
        w = np.linalg.solve(a, np.einsum("btd,bt->bd", xs[:, :s], ys[:, :s])[..., None])[..., 0]
        out[:, s] = (w * xs[:, s]).sum(1)
    return out


class _Const(torch.nn.Module):
    """A 'model' predicting a constant c everywhere."""

    def __init__(self, c: float):
        super().__init__()
        self.c = c

    def prefix(self, xs, ys):
        return torch.full(ys.shape, self.c, dtype=ys.dtype)


@pytest.mark.parametrize("fresh", [False, True])
def test_evaluate_matches_numpy_reference(fresh):
    noise_var, d, k, bsz = 0.25, 3, 5, 64
    task = LinearRegression(d=d, noise_std=math.sqrt(noise_var), n_tasks=4, pool_seed=7)
    out = evaluate(_Const(0.3), task, noise_var, bsz, k, generator(0, "t"), fresh)
    # redraw the same batch independently
    src = LinearRegression(d=d, noise_std=math.sqrt(noise_var)) if fresh else task
    b = src.sample(bsz, k, generator(0, "t"))
    xs, ys = b.xs.double().numpy(), b.ys.double().numpy()
    dm = _np_dmmse_prefix(xs, ys, task.pool.numpy(), noise_var)
    rg = _np_ridge_prefix(xs, ys, noise_var)
    assert out["err_model"] == pytest.approx(((0.3 - ys) ** 2).mean() / d, rel=1e-6)
    assert out["err_dmmse"] == pytest.approx(((dm - ys) ** 2).mean() / d, rel=1e-4)
    assert out["err_ridge"] == pytest.approx(((rg - ys) ** 2).mean() / d, rel=1e-4)
    assert out["dist_dmmse"] == pytest.approx(((dm - 0.3) ** 2).mean() / d, rel=1e-4)
    assert out["dist_ridge"] == pytest.approx(((rg - 0.3) ** 2).mean() / d, rel=1e-4)
    if not fresh:  # dMMSE is Bayes-optimal on the pool: it beats ridge there
        assert out["err_dmmse"] < out["err_ridge"]


def test_transition_interpolates_last_sign_change():
    m = [2, 8, 32, 128]
    # ratio ridge/dmmse: 4, 2, 1/2, 1/8 -> log crosses zero halfway (in log2 M) between 8 and 32
    dd = np.array([1.0, 1.0, 1.0, 1.0])
    dr = np.array([4.0, 2.0, 0.5, 0.125])
    assert transition(m, dd, dr) == pytest.approx(16.0)
    assert math.isnan(transition(m, dd, np.array([4.0, 2.0, 2.0, 1.5])))  # never closer to ridge
    assert transition(m, dd, np.array([0.5, 0.5, 0.5, 0.5])) == 2.0  # already at the smallest M
    # a dip below and back above counts from the last crossing
    assert transition(m, dd, np.array([0.5, 2.0, 2.0, 0.5])) == pytest.approx(64.0)


def test_configs_validate():
    with pytest.raises(ValueError):
        RaventosConfig(m_values=[8, 2])
    with pytest.raises(ValueError):
        RaventosConfig(m_values=[4])
    tcfg = RaventosPoolConfig(seed=3).train.to_train(seed=3, device="cpu", n_points=16, objective="prefix")
    assert tcfg.objective == "prefix" and tcfg.n_points == 16 and tcfg.steps == 3000
    assert "objective" not in RaventosPoolConfig.model_fields["train"].annotation.model_fields
    assert RaventosPoolConfig(d=4).train.curriculum.dims.end == 4  # the ramp is capped at d in the config itself


@pytest.mark.slow
def test_diversity_end_to_end_tiny(tmp_path):
    from mesaopt import experiments

    over = {"m_values": [1, 256], "layers": 1, "width": 16, "heads": 1, "d": 4, "k": 8, "eval_batch_size": 256,
            "train.steps": 150, "train.batch_size": 32, "train.warmup_steps": 10, "train.lr": 3e-3,
            "train.eval_every": 0, "train.ckpt_every": 0, "max_parallel": 2}
    res = experiments.run("raventos-diversity", overrides=over, out=tmp_path, progress=False)
    m = res.metrics
    for key in ("dist_dmmse_m1", "dist_ridge_m1", "dist_dmmse_m256", "dist_ridge_m256", "transition_m",
                "err_model_fresh_m256"):
        assert key in m
    # with one task the dMMSE prediction is w_1^T x at every position; the model learns it: dMMSE-distance small
    assert m["dist_dmmse_m1"] < m["dist_ridge_m1"]
    assert (tmp_path / "raventos.png").is_file() and (tmp_path / "sweep" / "sweep.parquet").is_file()
    again = experiments.run("raventos-diversity", out=tmp_path, resume=True, progress=False)
    assert to_json(again.metrics) == to_json(m)  # the finished trials were reused (NaN-safe comparison)
