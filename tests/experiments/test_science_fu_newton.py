"""fu-newton science: the reference algorithms on ill-conditioned data, and the experiment's fitted summaries.

Independent references (NumPy, written here):

* Iterative Newton (Newton-Schulz, Fu et al. / their code): S = X^T X, M_0 = 2 S / ||S S^T||_F,
  M_{k+1} = 2 M_k - M_k S M_k, w_k = M_k X^T y. On kappa = 100 data it reaches least squares (to 1e-6
  relative) in 20 iterations, while GD with its best lr is still > 1e3 times farther after 64 steps (why Fu et al.
  compare layers to Newton);
* the summaries of a quick run: ``newton_slope`` is the least-squares line best_newton_iter ~ layer (x = layer,
  over layers inside the scan) and ``gd_log2_slope`` the line log2(best_gd_steps) ~ layer, refitted with
  np.polyfit from the per-layer metrics; noiseless N > d: OLS loss 0.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mesaopt import experiments
from mesaopt.algorithms import GD, OLS, IterativeNewton
from mesaopt.tasks import LinearRegression

D, N, KAPPA = 5, 20, 100.0


def np_newton(x, y, xq, iters):
    s = np.einsum("bnd,bne->bde", x, x)
    xty = np.einsum("bnd,bn->bd", x, y)
    ss = s @ np.swapaxes(s, 1, 2)
    m = 2.0 / np.linalg.norm(ss, axis=(1, 2))[:, None, None] * s
    for _ in range(iters):
        m = 2 * m - m @ s @ m
    return np.einsum("bqd,bd->bq", xq, np.einsum("bde,be->bd", m, xty))


def test_newton_reaches_least_squares_in_few_iterations_gd_does_not():
    task = LinearRegression(d=D, noise_std=0.0, x_dist="anisotropic", condition_number=KAPPA)
    cx, cy, qx, qy = task.sample(512, N + 1, torch.Generator().manual_seed(0), dtype=torch.float64).split(N)
    x, y, xq, yq = (t.numpy() for t in (cx, cy, qx, qy))
    scale = float(np.mean(yq**2))
    for k in (0, 3, 8, 12):
        torch.testing.assert_close(IterativeNewton(steps=k)(cx, cy, qx).numpy(), np_newton(x, y, xq, k),
                                   rtol=1e-8, atol=1e-8)
    w_ols = np.linalg.solve(np.einsum("bnd,bne->bde", x, x), np.einsum("bnd,bn->bd", x, y)[..., None])[..., 0]
    ols = np.einsum("bqd,bd->bq", xq, w_ols)
    torch.testing.assert_close(OLS()(cx, cy, qx).numpy(), ols, rtol=1e-6, atol=1e-8)
    assert np.mean((ols - yq) ** 2) < 1e-12 * scale  # noiseless, N > d: exact
    assert np.mean((np_newton(x, y, xq, 20) - ols) ** 2) < 1e-6 * scale
    assert np.mean((np_newton(x, y, xq, 2) - ols) ** 2) > 1e-2 * scale
    lam_max = np.linalg.eigvalsh(np.einsum("bnd,bne->bde", x, x) / N)[:, -1]
    best_gd = min(float(np.mean((GD(steps=64, lr=lr)(cx, cy, qx).numpy() - ols) ** 2))
                  for lr in np.geomspace(0.01, 1.9 / np.median(lam_max), 20))
    assert best_gd > 1000 * float(np.mean((np_newton(x, y, xq, 20) - ols) ** 2))


@pytest.mark.slow
def test_quick_run_summaries_are_the_line_fits_of_the_per_layer_matches(tmp_path):
    over = {"train.steps": 100, "layers": 3, "probe_batch_size": 512, "eval_batch_size": 256}
    res = experiments.run("fu-newton", overrides=over, out=tmp_path / "r", quick=True, progress=False)
    m, cfg = res.metrics, res.config
    L, kmax = cfg["layers"], cfg["max_newton_iters"]
    layers = np.arange(1, L + 1, dtype=float)
    best_newton = np.array([m[f"best_newton_iter_l{i}"] for i in range(1, L + 1)])
    best_gd = np.array([m[f"best_gd_steps_l{i}"] for i in range(1, L + 1)])
    assert np.all((0 <= best_newton) & (best_newton <= kmax)) and np.all(best_gd >= 1)
    inside = best_newton < kmax
    if inside.sum() >= 2 and np.ptp(layers[inside]) > 0:
        slope = np.polyfit(layers[inside], best_newton[inside], 1)[0]
        assert m["newton_slope"] == pytest.approx(slope, abs=1e-9)
    assert m["gd_log2_slope"] == pytest.approx(np.polyfit(layers, np.log2(best_gd), 1)[0], abs=1e-9)
    assert m["ols_loss"] < 1e-10 * max(m["model_loss"], 1e-3)
    assert m[f"layer_loss_l{L}"] == pytest.approx(m["last_layer_probe_loss"], rel=1e-12)
    for i in range(1, L + 1):  # the reported similarity is the maximum over the scan: at least the k = 0 one
        assert -1.0 <= m[f"newton_sim_l{i}"] <= 1.0 and m[f"gd_sim_l{i}"] <= 1.0 + 1e-12


@pytest.mark.parametrize("iters", [(2, 4, 6), (1, 2, 3, 5)])
def test_layers_that_are_newton_iterates_are_matched_to_them_and_the_slope_is_iterations_per_layer(iters):
    # a hand-built "model" whose layer l outputs exactly Newton iteration iters[l-1] (NumPy, above): every layer must
    # be matched to its own iteration with similarity 1, and the line iteration ~ layer fitted with x = layer
    from mesaopt.experiments.fu_newton import FuNewtonConfig, match_layers

    b = LinearRegression(d=D, x_dist="anisotropic", condition_number=KAPPA).sample(
        512, N + 1, torch.Generator().manual_seed(3))
    cx, cy, qx, qy = b.split(N)
    x, y, xq = (t.double().numpy() for t in (cx, cy, qx))
    lay = torch.tensor(np.stack([np_newton(x, y, xq, k) for k in iters]))  # (L, B, 1)
    cfg = FuNewtonConfig(d=D, n_context=N, layers=len(iters), max_newton_iters=8, max_gd_steps=16, n_lr=4)
    m, _ = match_layers(lay, cx, cy, qx, qy.double(), cfg)
    layers = np.arange(1, len(iters) + 1, dtype=float)
    a, c = np.polyfit(layers, np.array(iters, dtype=float), 1)
    for i, k in enumerate(iters, start=1):
        assert m[f"best_newton_iter_l{i}"] == k
        assert m[f"newton_sim_l{i}"] == pytest.approx(1.0, abs=1e-9)
        assert m[f"layer_loss_l{i}"] == pytest.approx(np.mean((lay[i - 1].numpy() - qy.double().numpy()) ** 2))
    assert m["newton_slope"] == pytest.approx(a, abs=1e-9) and m["newton_intercept"] == pytest.approx(c, abs=1e-9)
    assert m["newton_r2"] == pytest.approx(1.0 - np.sum((iters - (a * layers + c)) ** 2)
                                           / np.sum((iters - np.mean(iters)) ** 2), abs=1e-9)
