from __future__ import annotations

import numpy as np
import pytest
import torch

from mesaopt.constructions import gd_layer_matrices, gd_plus_plus, lsa_gd
from mesaopt.errors import ConfigError
from mesaopt.learner import prefix_by_solves
from mesaopt.models.lsa import READOUT_SIGN

F64 = torch.float64


def _np_gd(X: np.ndarray, y: np.ndarray, Xq: np.ndarray, lrs: list[float]) -> np.ndarray:
    """Independent reference: per-task GD on (1/2N) sum (w.x - y)^2 from w = 0 -> preds after each step (L, B, Q)."""
    B, N, d = X.shape
    out = np.zeros((len(lrs), B, Xq.shape[1]))
    for b in range(B):
        w = np.zeros(d)
        for k, lr in enumerate(lrs):
            grad = X[b].T @ (X[b] @ w - y[b]) / N
            w = w - lr * grad
            out[k, b] = Xq[b] @ w
    return out


def _np_gdpp(X: np.ndarray, y: np.ndarray, Xq: np.ndarray, lrs: list[float], gammas: list[float]) -> np.ndarray:
    """Independent GD++ reference: GD step on the current inputs, then x <- (I - gamma Sigma_hat) x for all x."""
    B, N, d = X.shape
    out = np.zeros((len(lrs), B, Xq.shape[1]))
    for b in range(B):
        x, xq, r, pred = X[b].copy(), Xq[b].copy(), y[b].copy(), np.zeros(Xq.shape[1])
        for k, (lr, g) in enumerate(zip(lrs, gammas, strict=True)):
            step = lr * x.T @ r / N          # GD step on the current (transformed) data, from the residual
            pred, r = pred + xq @ step, r - x @ step
            T = np.eye(d) - g * x.T @ x / N  # curvature correction applied to every input
            x, xq = x @ T.T, xq @ T.T
            out[k, b] = pred
    return out


def _data(d, n, b=4, q=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, n, d, generator=g, dtype=F64), torch.randn(b, n, generator=g, dtype=F64),
            torch.randn(b, q, d, generator=g, dtype=F64))


def _rel(a: torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    b = b.detach().numpy() if isinstance(b, torch.Tensor) else b
    return float(np.linalg.norm(a.detach().numpy() - b) / np.linalg.norm(b))


@pytest.mark.parametrize("steps", [1, 2, 3, 4])
@pytest.mark.parametrize("d,n", [(1, 5), (6, 3), (10, 10), (4, 20)])
def test_lsa_gd_equals_gd(steps, d, n):
    cx, cy, qx = _data(d, n, seed=steps * 100 + d)
    lrs = [0.9, 0.5, 0.3, 0.7][:steps]
    lrs = [lr / max(1.0, d / n) for lr in lrs]  # keep GD stable when N < d
    ref = _np_gd(cx.numpy(), cy.numpy(), qx.numpy(), lrs)
    for heads, param in [(1, "merged"), (3, "separate")]:
        m = lsa_gd(d, steps=steps, lr=lrs, heads=heads, dtype=F64, param=param)
        assert m.layers == steps and m.heads == heads
        layers = m.forward_layers(cx, cy, qx)
        for k in range(steps):  # layer k's read-out is k+1 GD steps
            assert _rel(layers[k], ref[k]) <= 1e-5, (k, heads, param)
        assert _rel(m(cx, cy, qx), ref[-1]) <= 1e-5


def test_scalar_lr_and_float32_default():
    cx, cy, qx = _data(5, 8)
    m = lsa_gd(5, steps=2, lr=0.6)
    assert m.w_kq().dtype == torch.float32
    ref = _np_gd(cx.numpy(), cy.numpy(), qx.numpy(), [0.6, 0.6])[-1]
    got = m(cx.float(), cy.float(), qx.float())
    np.testing.assert_allclose(got.detach().numpy(), ref, atol=1e-5, rtol=1e-5)


def test_construction_matrices_and_readout_sign():
    m = lsa_gd(3, steps=2, lr=[0.5, 0.25], heads=2, dtype=F64)
    kq = torch.zeros(4, 4, dtype=F64)
    kq[:3, :3] = torch.eye(3, dtype=F64)
    for layer, lr in enumerate([0.5, 0.25]):
        for h in range(2):
            assert torch.equal(m.w_kq(layer, h), kq)
            pv = torch.zeros(4, 4, dtype=F64)
            pv[3, 3] = -lr / 2
            assert torch.equal(m.w_pv(layer, h), pv)
    assert READOUT_SIGN == -1.0
    # one GD step by hand: y_hat = (lr/N) sum_i y_i x_i . x_q  (the query slot holds -y_hat)
    cx, cy, qx = _data(3, 5, b=1, q=1)
    w1 = 0.5 / 5 * (cx[0].T @ cy[0])
    torch.testing.assert_close(lsa_gd(3, lr=0.5, dtype=F64)(cx, cy, qx)[0, 0], qx[0, 0] @ w1)


def test_lsa_gd_queries_independent_and_prefix():
    cx, cy, qx = _data(4, 6)
    m = lsa_gd(4, steps=3, lr=[0.5, 0.4, 0.3], dtype=F64)
    full = m(cx, cy, qx)
    torch.testing.assert_close(m(cx, cy, qx[:, 1:2]), full[:, 1:2], rtol=1e-12, atol=1e-12)
    xs, ys = torch.cat([cx, qx], 1), torch.randn(4, 9, dtype=F64, generator=torch.Generator().manual_seed(1))
    pre = m.prefix(xs, ys)
    torch.testing.assert_close(pre, prefix_by_solves(m, xs, ys), rtol=1e-10, atol=1e-12)
    for t in [1, 4, 8]:
        ref = _np_gd(xs[:, :t].numpy(), ys[:, :t].numpy(), xs[:, t:t + 1].numpy(), [0.5, 0.4, 0.3])[-1, :, 0]
        np.testing.assert_allclose(pre[:, t].detach().numpy(), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("steps", [1, 2, 3, 4])
@pytest.mark.parametrize("d,n", [(3, 8), (6, 4)])
def test_gd_plus_plus_equals_reference(steps, d, n):
    cx, cy, qx = _data(d, n, seed=steps)
    lrs, gammas = [0.5, 0.4, 0.6, 0.3][:steps], [0.3, 0.2, 0.25, 0.1][:steps]
    ref = _np_gdpp(cx.numpy(), cy.numpy(), qx.numpy(), lrs, gammas)
    for param in ["merged", "separate"]:
        m = gd_plus_plus(d, steps=steps, lr=lrs, gamma=gammas, heads=2, dtype=F64, param=param)
        layers = m.forward_layers(cx, cy, qx)
        for k in range(steps):
            assert _rel(layers[k], ref[k]) <= 1e-5
    # gamma = 0 is plain GD, and gamma changes the answer only from the second step on
    torch.testing.assert_close(gd_plus_plus(d, steps, lrs, 0.0, dtype=F64)(cx, cy, qx),
                               lsa_gd(d, steps, lrs, dtype=F64)(cx, cy, qx))
    if steps > 1:
        assert _rel(gd_plus_plus(d, steps, lrs, 0.0, dtype=F64)(cx, cy, qx), ref[-1]) > 1e-3


def test_gd_layer_matrices_shapes():
    kq, pv = gd_layer_matrices(2, lr=0.4, gamma=0.2, heads=2, dtype=F64)
    assert kq.shape == pv.shape == (2, 3, 3)
    torch.testing.assert_close(pv.sum(0), torch.diag(torch.tensor([-0.2, -0.2, -0.4], dtype=F64)))


def test_bad_arguments():
    for kw in [dict(steps=0), dict(lr=[0.1, 0.2]), dict(lr=float("inf")), dict(heads=0), dict(steps=True),
               dict(param="x")]:
        with pytest.raises(ConfigError):
            lsa_gd(3, **kw)
    with pytest.raises(ConfigError):
        gd_plus_plus(3, steps=2, gamma=[0.1])


@pytest.mark.parametrize("steps", [1, 2, 3, 4])
@pytest.mark.parametrize("d,n", [(1, 5), (6, 3), (10, 10), (4, 20)])
def test_lsa_gd_equals_algorithms_gd(steps, d, n):
    from mesaopt.algorithms import GD

    cx, cy, qx = _data(d, n, seed=7 * steps + n)
    lr = 0.6 / max(1.0, d / n)
    gd = GD(steps=steps, lr=lr)
    m = lsa_gd(d, steps=steps, lr=lr, dtype=F64)
    traj = gd.trajectory(cx, cy)  # (B, steps + 1, d)
    layers = m.forward_layers(cx, cy, qx)
    for k in range(steps):
        ref = torch.einsum("bqd,bd->bq", qx, traj[:, k + 1])
        assert _rel(layers[k], ref) <= 1e-5
    ref = gd(cx, cy, qx)
    assert _rel(m(cx, cy, qx), ref) <= 1e-5
    xs, ys = torch.cat([cx, qx], 1), torch.cat([cy, torch.randn(qx.shape[:2], dtype=F64)], 1)
    torch.testing.assert_close(m.prefix(xs, ys), gd.prefix(xs, ys), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("steps", [1, 3])
def test_gd_plus_plus_equals_algorithms_gdpp(steps):
    from mesaopt.algorithms import GDPlusPlus

    cx, cy, qx = _data(5, 7, seed=steps)
    ref = GDPlusPlus(steps=steps, lr=0.5, gamma=0.4)(cx, cy, qx)
    got = gd_plus_plus(5, steps=steps, lr=0.5, gamma=0.4, dtype=F64)(cx, cy, qx)
    assert _rel(got, ref) <= 1e-5


def test_gd_plus_plus_per_step_equals_algorithms_gdpp_per_step():
    """The construction and the one GD++ implementation (``gdpp_trajectory``) agree with per-step (lr, gamma)."""
    from mesaopt.algorithms import GDPlusPlus

    cx, cy, qx = _data(4, 9, seed=3)
    lrs, gammas = [0.5, 0.3, 0.7], [0.4, -0.2, 0.0]
    ref = _np_gdpp(cx.numpy(), cy.numpy(), qx.numpy(), lrs, gammas)
    got = GDPlusPlus(steps=3, lr=lrs, gamma=gammas)(cx, cy, qx)
    np.testing.assert_allclose(got.numpy(), ref[-1], rtol=1e-9, atol=1e-10)
    assert _rel(gd_plus_plus(4, steps=3, lr=lrs, gamma=gammas, dtype=F64)(cx, cy, qx), got) <= 1e-5
