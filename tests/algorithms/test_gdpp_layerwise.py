"""GDPlusPlus.fit_layerwise: one (lr, gamma) per layer fitted on the loss, checked against NumPy optima."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mesaopt.algorithms import GDPlusPlus
from mesaopt.tasks import LinearRegression

TASK = LinearRegression(d=2, noise_std=0.0, x_dist="uniform", input_range=1.0)
N, B, Q = 4, 256, 4
PLAIN = {"stable_margin": None, "validation_factor": 0}  # the plain loss minimum on the fit batch


def _batch(seed: int) -> tuple[np.ndarray, ...]:
    """The batch the fit draws from generator(seed): contexts (B, N, d), (B, N), queries (B, Q, d), (B, Q)."""
    b = TASK.sample(B, N + Q, torch.Generator().manual_seed(seed), dtype=torch.float64)
    return tuple(t.numpy() for t in b.split(N))


def np_gdpp_pred(batch, lrs, gammas, n: int = N) -> np.ndarray:
    """GD++ by hand (von Oswald Sec. 4, gamma multiplying X^T X / N): per layer delta = (lr/N) X^T r, the query
    prediction gains x_q^T delta, r <- r - X delta, and every input x <- (I - gamma X^T X / N) x -> (B, Q)."""
    x, y, xq, _ = batch
    pred, r = np.zeros(xq.shape[:2]), y.copy()
    for lr, g in zip(lrs, gammas, strict=True):
        delta = lr / n * np.einsum("bnd,bn->bd", x, r)
        pred = pred + np.einsum("bqd,bd->bq", xq, delta)
        r = r - np.einsum("bnd,bd->bn", x, delta)
        t = np.eye(x.shape[-1]) - g * np.einsum("bnd,bne->bde", x, x) / n
        x, xq = np.einsum("bnd,bed->bne", x, t), np.einsum("bqd,bed->bqe", xq, t)
    return pred


def np_mse(batch, lrs, gammas) -> float:
    return float(np.mean((np_gdpp_pred(batch, lrs, gammas) - batch[3]) ** 2))


def test_one_layer_is_the_closed_form_optimal_step():
    fit = GDPlusPlus.fit_layerwise(TASK, 1, N, torch.Generator().manual_seed(0), batch_size=B, n_queries=Q, **PLAIN)
    x, y, xq, yq = _batch(0)
    g = np.einsum("bqd,bnd,bn->bq", xq, x, y) / N  # prediction of one step with lr 1
    assert fit.lr[0] == pytest.approx(float((g * yq).sum() / (g * g).sum()), rel=1e-6)


def test_two_layers_match_an_exhaustive_numpy_search():
    batch = _batch(1)
    fit = GDPlusPlus.fit_layerwise(TASK, 2, N, torch.Generator().manual_seed(1), batch_size=B, n_queries=Q, **PLAIN)
    shared = GDPlusPlus.fit_hparams(TASK, 2, N, torch.Generator().manual_seed(1), batch_size=B, n_queries=Q)
    # the prediction is linear in lr2 for fixed (lr1, gamma1): grid over (lr1, gamma1), exact least squares in lr2,
    # then a finer grid around the best cell
    yq = batch[3]
    lo1, hi1, lo_g, hi_g = 0.0, 60.0, -20.0, 40.0
    best = (np.inf, 0.0, 0.0, 0.0)
    for _ in range(3):
        for lr1 in np.linspace(lo1, hi1, 41):
            for g1 in np.linspace(lo_g, hi_g, 41):
                a = np_gdpp_pred(batch, [lr1, 0.0], [g1, 0.0])
                b = np_gdpp_pred(batch, [lr1, 1.0], [g1, 0.0]) - a
                lr2 = float(((yq - a) * b).sum() / (b * b).sum())
                loss = float(np.mean((a + lr2 * b - yq) ** 2))
                if loss < best[0]:
                    best = (loss, lr1, lr2, g1)
        s1, sg = (hi1 - lo1) / 40 * 2, (hi_g - lo_g) / 40 * 2
        lo1, hi1, lo_g, hi_g = best[1] - s1, best[1] + s1, best[3] - sg, best[3] + sg
    got = np_mse(batch, fit.lr, fit.gamma)
    assert got <= best[0] * (1 + 1e-6)
    assert fit.lr == pytest.approx([best[1], best[2]], rel=0.02)
    assert fit.gamma[0] == pytest.approx(best[3], rel=0.02, abs=0.05) and fit.gamma[1] == 0.0
    assert got < np_mse(batch, [shared.lr] * 2, [shared.gamma] * 2) * (1 - 1e-3)  # strictly better here


@pytest.mark.parametrize(("steps", "plain"), [(1, False), (2, False), (3, True)])
def test_never_above_the_shared_fit_on_the_fit_batch(steps, plain):
    batch = _batch(7)
    fit = GDPlusPlus.fit_layerwise(TASK, steps, N, torch.Generator().manual_seed(7), batch_size=B, n_queries=Q,
                                   **(PLAIN if plain else {}))
    shared = GDPlusPlus.fit_hparams(TASK, steps, N, torch.Generator().manual_seed(7), batch_size=B, n_queries=Q)
    assert len(fit.lr) == len(fit.gamma) == steps and fit.gamma[-1] == 0.0
    assert np_mse(batch, fit.lr, fit.gamma) <= np_mse(batch, [shared.lr] * steps, [shared.gamma] * steps) * (1 + 1e-9)


def test_validation_and_stability_keep_the_held_out_loss_below_the_shared_fit():
    """The default fit (stability penalty + choice on a validation batch) beats the shared fit on fresh tasks."""
    task = LinearRegression(d=3, noise_std=0.0, x_dist="uniform", input_range=1.0)
    n, b = 6, 512
    fresh = task.sample(20_000, n + Q, torch.Generator().manual_seed(99), dtype=torch.float64).split(n)
    fresh = tuple(t.numpy() for t in fresh)

    def held_out(fit: GDPlusPlus) -> float:
        x, y, xq, yq = fresh
        return float(np.mean((np_gdpp_pred(fresh, fit.lr, fit.gamma, n) - yq) ** 2))

    def fit(**kw) -> GDPlusPlus:
        return GDPlusPlus.fit_layerwise(task, 3, n, torch.Generator().manual_seed(5), batch_size=b, **kw)

    shared = GDPlusPlus.fit_hparams(task, 3, n, torch.Generator().manual_seed(5), batch_size=b)
    shared_loss = held_out(GDPlusPlus(3, [shared.lr] * 3, [shared.gamma] * 3))
    assert held_out(fit()) < 0.8 * shared_loss
