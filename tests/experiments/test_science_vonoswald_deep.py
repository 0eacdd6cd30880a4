"""vonoswald-deep science: K-step GD / GD++ baselines recomputed in NumPy; depth helps the trained LSA.

Independent references (NumPy Monte Carlo on its own 40k tasks, x ~ U(-1/2, 1/2)^d, w ~ N(0, I), noiseless):

* K-step GD from w = 0 on (1/2N) sum (w^T x_i - y_i)^2, loss (1/2 MSE) scanned over a fine lr grid: the
  experiment's fitted ``gd_lr_k{K}`` must be the grid optimum and ``gd_loss_k{K}`` its loss;
* GD++ (von Oswald Sec. 4, our convention: per layer delta = (lr/N) X_k^T r, r <- r - X_k delta, every input
  x <- (I - gamma X_k^T X_k / N) x, query included) run in NumPy with the experiment's fitted (lr, gamma):
  its loss must be ``gdpp_loss_k{K}``, and for K = 2 clearly below the best 2-step GD loss;
* the same NumPy GD++ with one (lr, gamma) per layer, the experiment's ``gdpp_layerwise_{lr,gamma}_k2_l{l}``: its
  loss must be ``gdpp_layerwise_loss_k2``, below the shared fit's, and the trained 2-layer LSA must reach it
  (von Oswald Fig. 3: the trained deep LSA tracks GD++ with per-layer parameters).
"""

from __future__ import annotations

import numpy as np
import pytest

from mesaopt import experiments

D, N = 5, 10
OVER = {"d": D, "n_context": N, "ks": [1, 2], "train.steps": 3000, "train.eval_every": 250, "train.ckpt_every": 0,
        "train.warmup_steps": 20, "train.lr": 1e-2, "train.batch_size": 512, "train.schedule": "warmup_cosine",
        "train.min_lr_ratio": 0.02, "eval_batch_size": 8192, "fit_batch_size": 8192, "interp_points": 3}


@pytest.fixture(scope="module")
def mc():
    rng = np.random.default_rng(2)
    b = 40_000
    x = rng.uniform(-0.5, 0.5, (b, N, D))
    w = rng.standard_normal((b, D))
    xq = rng.uniform(-0.5, 0.5, (b, D))
    return x, np.einsum("bnd,bd->bn", x, w), xq, np.einsum("bd,bd->b", xq, w)


def np_gd_half_loss(mc, steps: int, lrs: np.ndarray) -> np.ndarray:
    """1/2 MSE of ``steps`` GD steps for every lr in ``lrs``: (L,)."""
    x, y, xq, yq = mc
    out = []
    for lr in lrs:
        w = np.zeros((x.shape[0], D))
        for _ in range(steps):
            w = w - lr / N * np.einsum("bnd,bn->bd", x, np.einsum("bnd,bd->bn", x, w) - y)
        out.append(0.5 * np.mean((np.einsum("bd,bd->b", xq, w) - yq) ** 2))
    return np.array(out)


def np_gdpp_half_loss(mc, steps: int, lr: float | list[float], gamma: float | list[float]) -> float:
    """1/2 MSE of ``steps`` GD++ layers; lr / gamma one number for every layer or one per layer."""
    x, y, xq, yq = mc
    lrs = list(lr) if isinstance(lr, list) else [lr] * steps
    gammas = list(gamma) if isinstance(gamma, list) else [gamma] * steps
    xk, qk, r = x.copy(), xq.copy(), y.copy()
    pred = np.zeros_like(yq)
    eye = np.eye(D)
    for lr_k, gamma_k in zip(lrs, gammas, strict=True):
        delta = lr_k / N * np.einsum("bnd,bn->bd", xk, r)
        pred += np.einsum("bd,bd->b", qk, delta)
        r = r - np.einsum("bnd,bd->bn", xk, delta)
        t = eye - gamma_k * np.einsum("bnd,bne->bde", xk, xk) / N
        xk, qk = np.einsum("bnd,bed->bne", xk, t), np.einsum("bd,bed->be", qk, t)
    return float(0.5 * np.mean((pred - yq) ** 2))


@pytest.fixture(scope="module")
def gd_scan(mc):
    """lr grid and the NumPy K-step GD loss on it, K = 1, 2."""
    lrs = np.geomspace(2.0, 20.0, 81)
    return lrs, {k: np_gd_half_loss(mc, k, lrs) for k in (1, 2)}


@pytest.fixture(scope="module")
def metrics(tmp_path_factory):
    out = tmp_path_factory.mktemp("vonoswald-deep")
    return experiments.run("vonoswald-deep", overrides=OVER, out=out / "run", progress=False).metrics


def test_numpy_gdpp_with_gamma_zero_is_gd(mc):
    assert np_gdpp_half_loss(mc, 2, 7.0, 0.0) == pytest.approx(float(np_gd_half_loss(mc, 2, np.array([7.0]))[0]),
                                                               rel=1e-10)


@pytest.mark.slow
@pytest.mark.parametrize("k", [1, 2])
def test_fitted_gd_is_the_numpy_optimum(metrics, mc, gd_scan, k):
    lrs, losses = gd_scan[0], gd_scan[1][k]
    best = int(np.argmin(losses))
    assert 0 < best < len(lrs) - 1
    assert metrics[f"gd_lr_k{k}"] == pytest.approx(lrs[best], rel=0.06)
    assert metrics[f"gd_loss_k{k}"] == pytest.approx(losses[best], rel=0.05)
    # and that loss is the loss of K GD steps at the reported lr
    at = float(np_gd_half_loss(mc, k, np.array([metrics[f"gd_lr_k{k}"]]))[0])
    assert metrics[f"gd_loss_k{k}"] == pytest.approx(at, rel=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("k", [1, 2])
def test_gdpp_loss_is_numpy_gdpp_with_the_fitted_hparams(metrics, mc, k):
    ref = np_gdpp_half_loss(mc, k, metrics[f"gdpp_lr_k{k}"], metrics[f"gdpp_gamma_k{k}"])
    assert metrics[f"gdpp_loss_k{k}"] == pytest.approx(ref, rel=0.05)
    assert metrics[f"gdpp_loss_k{k}"] <= metrics[f"gd_loss_k{k}"] * 1.01


@pytest.mark.slow
def test_gdpp_beats_gd_at_two_steps_and_depth_helps_the_lsa(metrics, gd_scan):
    best_gd1, best_gd2 = float(gd_scan[1][1].min()), float(gd_scan[1][2].min())
    # the curvature correction is worth a lot at K = 2 (von Oswald Fig. 4: GD++ << GD)
    assert metrics["gdpp_loss_k2"] < 0.6 * best_gd2
    # one layer = one optimal GD step
    assert metrics["lsa_loss_k1"] == pytest.approx(best_gd1, rel=0.03)
    assert metrics["sens_cos_k1"] > 0.995
    # a second layer helps: the 2-layer LSA is clearly below the best single GD step
    assert metrics["lsa_loss_k2"] < 0.85 * best_gd1


@pytest.mark.slow
def test_layerwise_gdpp_is_numpy_gdpp_with_the_fitted_per_layer_values_and_the_lsa_reaches_it(metrics, mc):
    lrs = [metrics[f"gdpp_layerwise_lr_k2_l{layer}"] for layer in (1, 2)]
    gammas = [metrics[f"gdpp_layerwise_gamma_k2_l{layer}"] for layer in (1, 2)]
    ref = np_gdpp_half_loss(mc, 2, lrs, gammas)
    assert metrics["gdpp_layerwise_loss_k2"] == pytest.approx(ref, rel=0.05)
    # one (lr, gamma) per layer is worth more than one shared pair (same NumPy tasks for both)
    shared = np_gdpp_half_loss(mc, 2, metrics["gdpp_lr_k2"], metrics["gdpp_gamma_k2"])
    assert ref < 0.95 * shared
    # the trained 2-layer LSA reaches the per-layer GD++ (within 10 %, or below it)
    assert metrics["lsa_loss_k2"] <= 1.10 * ref
    assert metrics["lsa_over_gdpp_layerwise_k2"] == pytest.approx(
        metrics["lsa_loss_k2"] / metrics["gdpp_layerwise_loss_k2"], rel=1e-9)
