"""raventos-* science: distances to dMMSE and ridge on constructed learners, and the two Bayes regimes.

Independent references (NumPy, written here): the dMMSE prefix prediction is the posterior mean over the
finite pool {w_m}, weights softmax_m(-sum_{i<t} (y_i - w_m^T x_i)^2 / (2 sigma^2)); ridge at lam = sigma^2 is
(X^T X + sigma^2 I)^-1 X^T y on the prefix. A learner that *is* dMMSE (resp. ridge) must sit at distance 0 from
it and at the NumPy dMMSE-ridge distance from the other; dMMSE is Bayes-optimal on the pool and ridge on fresh
Gaussian tasks (Raventos et al.'s two regimes). End to end: a transformer pretrained on one task (M = 1) is
the dMMSE predictor, far from ridge.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mesaopt import experiments
from mesaopt.algorithms import DMMSE, Ridge
from mesaopt.experiments.raventos import evaluate
from mesaopt.tasks import LinearRegression

D, K, VAR = 4, 10, 0.25


def np_dmmse(xs, ys, pool):
    b, t, _ = xs.shape
    out = np.zeros((b, t))
    for s in range(t):
        res = ys[:, :s, None] - np.einsum("btd,md->btm", xs[:, :s], pool)
        logw = -(res**2).sum(1) / (2 * VAR)
        w = np.exp(logw - logw.max(1, keepdims=True))
        w /= w.sum(1, keepdims=True)
        out[:, s] = np.einsum("bm,md,bd->b", w, pool, xs[:, s])
    return out


def np_ridge(xs, ys):
    b, t, d = xs.shape
    out = np.zeros((b, t))
    for s in range(t):
        a = np.einsum("btd,bte->bde", xs[:, :s], xs[:, :s]) + VAR * np.eye(d)
        w = np.linalg.solve(a, np.einsum("btd,bt->bd", xs[:, :s], ys[:, :s])[..., None])[..., 0]
        out[:, s] = (w * xs[:, s]).sum(1)
    return out


class _Pred(torch.nn.Module):
    """A 'model' whose prefix predictions are those of a reference learner."""

    def __init__(self, learner):
        super().__init__()
        self.learner = learner

    def prefix(self, xs, ys):
        return self.learner.prefix(xs, ys)


def _task(m: int) -> LinearRegression:
    return LinearRegression(d=D, noise_std=math.sqrt(VAR), n_tasks=m, pool_seed=11)


@pytest.mark.parametrize("fresh", [False, True])
def test_distances_of_constructed_dmmse_and_ridge_learners(fresh):
    task = _task(4)
    g = lambda: torch.Generator().manual_seed(123)  # noqa: E731  (the same batch for every call)
    as_dmmse = evaluate(_Pred(DMMSE.for_task(task)), task, VAR, 512, K, g(), fresh)
    as_ridge = evaluate(_Pred(Ridge(lam=VAR)), task, VAR, 512, K, g(), fresh)
    src = LinearRegression(d=D, noise_std=math.sqrt(VAR)) if fresh else task
    b = src.sample(512, K, g())
    xs, ys = b.xs.double().numpy(), b.ys.double().numpy()
    dm, rg = np_dmmse(xs, ys, task.pool.double().numpy()), np_ridge(xs, ys)
    gap = float(((dm - rg) ** 2).mean() / D)
    assert gap > 0.05  # the two estimators really differ on this pool
    assert as_dmmse["dist_dmmse"] < 1e-8 and as_ridge["dist_ridge"] < 1e-8
    assert as_dmmse["dist_ridge"] == pytest.approx(gap, rel=1e-4)
    assert as_ridge["dist_dmmse"] == pytest.approx(gap, rel=1e-4)
    err_dm, err_rg = float(((dm - ys) ** 2).mean() / D), float(((rg - ys) ** 2).mean() / D)
    assert as_dmmse["err_model"] == pytest.approx(err_dm, rel=1e-4)
    assert as_ridge["err_model"] == pytest.approx(err_rg, rel=1e-4)
    if fresh:  # on fresh Gaussian tasks ridge is Bayes-optimal and dMMSE (4 tasks) is badly wrong
        assert err_rg < 0.5 * err_dm
    else:  # on the pool, dMMSE is Bayes-optimal
        assert err_dm < 0.8 * err_rg


@pytest.mark.slow
def test_transformer_pretrained_on_one_task_is_the_dmmse_predictor(tmp_path):
    over = {"n_tasks": 1, "d": D, "k": K, "noise_var": VAR, "layers": 1, "width": 16, "heads": 1,
            "eval_batch_size": 512, "train.steps": 200, "train.batch_size": 32, "train.warmup_steps": 10,
            "train.lr": 3e-3, "train.eval_every": 0, "train.ckpt_every": 0, "train.curriculum": None}
    m = experiments.run("raventos-pool", overrides=over, out=tmp_path / "r", progress=False).metrics
    # M = 1: dMMSE predicts w_1^T x at every position; ridge starts at 0 and learns w slowly
    assert m["dist_dmmse_pool"] < 0.25 * m["dist_ridge_pool"]
    # and the model's error is close to dMMSE's (noise variance / d = 0.0625 at best)
    assert m["err_model_pool"] < m["err_dmmse_pool"] + 0.5 * (m["err_ridge_pool"] - m["err_dmmse_pool"])
    assert m["err_dmmse_pool"] == pytest.approx(VAR / D, rel=0.15)
