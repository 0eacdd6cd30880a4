"""vonoswald-recurrent science: the damped roll-out of a GD layer is GD with a scaled lr; tied depth helps.

Independent references, written here in NumPy:

* S steps of GD from w = 0 on (1/2N) sum (w^T x_i - y_i)^2 with step size lambda * eta: the roll-out of the
  hand-built one-GD-step layer (``constructions.lsa_gd`` with lr eta) under the paper's rule (every application
  adds lambda times the layer's update to the y-slots) must give exactly these predictions;
* a Monte Carlo estimate (40k tasks, x ~ U(-1/2, 1/2)^d, w ~ N(0, I), noiseless) of the loss of K-step GD
  over a fine lr grid, and of S damped GD steps at the experiment's fitted lr.

Claims (von Oswald et al., Sec. 3-4): the tied two-application LSA beats the best 2-step GD (it can run tied
GD++); the trained single layer rolled out with damping tracks damped GD step for step and keeps improving.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mesaopt import constructions, experiments
from mesaopt.models.lsa_rollout import damped_rollout

D, N, LAM, S_MAX = 10, 10, 0.75, 6
OVER = {"d": D, "n_context": N, "ks": [1, 2], "rollout_steps": S_MAX, "damping": LAM, "train.steps": 1000,
        "train.eval_every": 250, "train.ckpt_every": 0, "train.warmup_steps": 20, "train.lr": 1e-2,
        "eval_batch_size": 8192, "fit_batch_size": 8192}


def np_gd_preds(x: np.ndarray, y: np.ndarray, xq: np.ndarray, steps: int, lr: float) -> np.ndarray:
    """Query predictions after 1..steps GD steps from w = 0: x (B,N,d), y (B,N), xq (B,Q,d) -> (steps, B, Q)."""
    w = np.zeros((x.shape[0], x.shape[2]))
    out = []
    for _ in range(steps):
        w = w - lr / x.shape[1] * np.einsum("bnd,bn->bd", x, np.einsum("bnd,bd->bn", x, w) - y)
        out.append(np.einsum("bqd,bd->bq", xq, w))
    return np.stack(out)


@pytest.fixture(scope="module")
def mc():
    rng = np.random.default_rng(5)
    b = 40_000
    x = rng.uniform(-0.5, 0.5, (b, N, D))
    w = rng.standard_normal((b, D))
    xq = rng.uniform(-0.5, 0.5, (b, 1, D))
    return x, np.einsum("bnd,bd->bn", x, w), xq, np.einsum("bqd,bd->bq", xq, w)


def np_half_losses(mc, steps: int, lr: float) -> np.ndarray:
    x, y, xq, yq = mc
    return 0.5 * ((np_gd_preds(x, y, xq, steps, lr) - yq[None]) ** 2).mean(axis=(1, 2))


@pytest.mark.parametrize("eta", [3.0, 6.5])
def test_rollout_of_the_gd_construction_is_gd_with_lr_times_damping(eta):
    rng = np.random.default_rng(1)
    x, y, xq = rng.uniform(-0.5, 0.5, (64, N, D)), rng.standard_normal((64, N)), rng.uniform(-0.5, 0.5, (64, 3, D))
    layer = constructions.lsa_gd(d=D, steps=1, lr=eta, dtype=torch.float64)
    with torch.no_grad():
        got = damped_rollout(layer, *(torch.from_numpy(a) for a in (x, y, xq)), steps=12, damping=LAM).numpy()
    np.testing.assert_allclose(got, np_gd_preds(x, y, xq, 12, LAM * eta), rtol=1e-9, atol=1e-12)
    # the damping really is the step size: undamped GD differs
    assert np.abs(got - np_gd_preds(x, y, xq, 12, eta)).max() > 1e-2


@pytest.fixture(scope="module")
def metrics(tmp_path_factory):
    out = tmp_path_factory.mktemp("vonoswald-recurrent")
    return experiments.run("vonoswald-recurrent", overrides=OVER, out=out / "run", progress=False).metrics


@pytest.mark.slow
def test_tied_two_applications_beat_two_gd_steps(metrics, mc):
    lrs = np.geomspace(2.0, 20.0, 61)
    best = {k: min(float(np_half_losses(mc, k, lr)[-1]) for lr in lrs) for k in (1, 2)}
    assert metrics["gd_loss_k2"] == pytest.approx(best[2], rel=0.05)
    assert metrics["lsa_loss_k1"] == pytest.approx(best[1], rel=0.04)  # one layer = one optimal GD step
    assert metrics["lsa_loss_k2"] < 0.9 * best[2]  # tied GD++ beats GD: so does the trained tied LSA
    assert metrics["lsa_loss_k2"] < 1.25 * metrics["gdpp_loss_k2"]  # and heads for tied GD++ (1000 steps only)


@pytest.mark.slow
def test_damped_rollout_of_the_trained_layer_tracks_damped_gd(metrics, mc):
    assert metrics["construction_rollout_err"] < 1e-10
    ref = np_half_losses(mc, S_MAX, LAM * metrics["gd_lr_k1"])
    roll = np.array([metrics[f"rollout_loss_s{s}"] for s in range(1, S_MAX + 1)])
    damped = np.array([metrics[f"gd_damped_loss_s{s}"] for s in range(1, S_MAX + 1)])
    np.testing.assert_allclose(damped, ref, rtol=0.05)
    np.testing.assert_allclose(roll, ref, rtol=0.08)
    assert np.all(np.diff(roll) < 0)  # every further damped application still helps
    assert roll[-1] < 0.75 * metrics["lsa_loss_k1"]
    fitted = np.array([metrics[f"gd_rollout_loss_s{s}"] for s in range(1, S_MAX + 1)])
    assert np.all(fitted <= damped * 1.02)  # a fitted lr per S is at least as good as the damped one
