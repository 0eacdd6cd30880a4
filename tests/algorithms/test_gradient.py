"""GD, PreconditionedGD and GD++ against explicit NumPy loops; lr / gamma fits against nearby values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mesaopt.algorithms as A
from mesaopt.algorithms.base import full_counts
from mesaopt.algorithms.gradient import SpectralLoss, fit_batch, gdpp_trajectory
from mesaopt.errors import ConfigError, ShapeError
from mesaopt.learner import prefix_by_solves
from mesaopt.tasks import LinearRegression


def _data(b: int, n: int, d: int, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, n, d, generator=g, dtype=dtype), torch.randn(b, n, generator=g, dtype=dtype),
            torch.randn(b, 2, d, generator=g, dtype=dtype))


def _np_gd(x: np.ndarray, y: np.ndarray, steps: int, lr: float, p: np.ndarray | None = None) -> list[np.ndarray]:
    n, d = x.shape
    w = np.zeros(d)
    ws = [w]
    for _ in range(steps):
        grad = sum((w @ x[i] - y[i]) * x[i] for i in range(n)) / n  # gradient of (1/2N) sum (w^T x - y)^2
        w = w - lr * (grad if p is None else p @ grad)
        ws.append(w)
    return ws


def _np_gdpp_tokens(x: np.ndarray, y: np.ndarray, xq: np.ndarray, steps: int, lr: float, gamma: float) -> float:
    """Token-level simulation: tokens (x_j, y_j), query (x_q, 0); read-out is minus the query's y slot."""
    n = x.shape[0]
    xs, ys, q, yq = x.copy(), y.copy(), xq.copy(), 0.0
    for _ in range(steps):
        new_ys = ys - lr / n * np.array([sum(ys[i] * xs[i] @ xs[j] for i in range(n)) for j in range(n)])
        new_yq = yq - lr / n * sum(ys[i] * xs[i] @ q for i in range(n))
        new_xs = np.array([xs[j] - gamma / n * sum(xs[i] * (xs[i] @ xs[j]) for i in range(n)) for j in range(n)])
        new_q = q - gamma / n * sum(xs[i] * (xs[i] @ q) for i in range(n))
        xs, ys, q, yq = new_xs, new_ys, new_q, new_yq
    return -yq


@pytest.mark.parametrize("n,d", [(3, 5), (5, 5), (12, 4)])
@pytest.mark.parametrize("steps", [1, 4])
def test_gd_matches_numpy_loop(n, d, steps):
    x, y, q = _data(2, n, d)
    lr = 0.3
    traj = A.GD(steps, lr).trajectory(x, y)
    assert traj.shape == (2, steps + 1, d)
    for i in range(2):
        ref = _np_gd(x[i].numpy(), y[i].numpy(), steps, lr)
        np.testing.assert_allclose(traj[i].numpy(), np.stack(ref), atol=1e-10)
    torch.testing.assert_close(A.GD(steps, lr).fit(x, y), traj[:, -1])
    torch.testing.assert_close(A.GD(steps, lr)(x, y, q), torch.einsum("bqd,bd->bq", q, traj[:, -1]))


def test_gd_one_step_closed_form():
    x, y, _ = _data(3, 7, 4)
    w1 = A.GD(1, 0.6).fit(x, y)
    torch.testing.assert_close(w1, 0.6 / 7 * torch.einsum("bnd,bn->bd", x, y))


def test_preconditioned_gd_matches_numpy_and_identity_is_gd():
    x, y, _ = _data(2, 9, 4, seed=1)
    p = np.array([[1.0, 0.2, 0, 0], [0.2, 2.0, 0, 0], [0, 0, 0.5, 0.1], [0, 0, 0.1, 1.0]])
    traj = A.PreconditionedGD(3, 0.4, p).trajectory(x, y)
    for i in range(2):
        np.testing.assert_allclose(traj[i].numpy(), np.stack(_np_gd(x[i].numpy(), y[i].numpy(), 3, 0.4, p)),
                                   atol=1e-10)
    torch.testing.assert_close(A.PreconditionedGD(3, 0.4, torch.eye(4)).fit(x, y), A.GD(3, 0.4).fit(x, y))


@pytest.mark.parametrize("n,d,steps,gamma", [(6, 3, 1, 0.3), (8, 4, 3, 0.2), (3, 5, 2, 0.5)])
def test_gdpp_matches_token_simulation(n, d, steps, gamma):
    x, y, q = _data(2, n, d, seed=2)
    pred = A.GDPlusPlus(steps, 0.5, gamma)(x, y, q)
    for i in range(2):
        for j in range(2):
            ref = _np_gdpp_tokens(x[i].numpy(), y[i].numpy(), q[i, j].numpy(), steps, 0.5, gamma)
            assert pred[i, j].item() == pytest.approx(ref, abs=1e-10)


def test_gdpp_trajectory_is_per_layer_readout():
    x, y, q = _data(1, 6, 3, seed=3)
    traj = A.GDPlusPlus(3, 0.4, 0.3).trajectory(x, y)
    for k in range(4):
        ref = _np_gdpp_tokens(x[0].numpy(), y[0].numpy(), q[0, 0].numpy(), k, 0.4, 0.3)
        assert (q[0, 0] @ traj[0, k]).item() == pytest.approx(ref, abs=1e-10)


def test_gdpp_gamma_zero_is_gd():
    x, y, _ = _data(3, 7, 4, seed=4)
    torch.testing.assert_close(A.GDPlusPlus(4, 0.3, 0.0).trajectory(x, y), A.GD(4, 0.3).trajectory(x, y))


@pytest.mark.parametrize("alg", [A.GD(3, 0.3), A.GDPlusPlus(2, 0.4, 0.2), A.PreconditionedGD(2, 0.3, 2 * torch.eye(4))])
def test_prefix_matches_solves(alg):
    x, y, _ = _data(3, 9, 4, seed=5)
    pre = alg.prefix(x, y)
    torch.testing.assert_close(pre, prefix_by_solves(alg, x, y), atol=1e-10, rtol=0)
    assert (pre[:, 0] == 0).all()


def test_prefix_chunking_is_invisible(monkeypatch):
    import mesaopt.algorithms.base as base

    x, y, _ = _data(5, 6, 3, seed=6)
    full = A.GD(2, 0.5).prefix(x, y)
    monkeypatch.setattr(base, "PREFIX_CHUNK_ELEMS", 10)
    monkeypatch.setattr(base.chunked_prefix, "__defaults__", (10,))
    torch.testing.assert_close(A.GD(2, 0.5).prefix(x, y), full, atol=1e-12, rtol=0)


@settings(max_examples=20, deadline=None)
@given(b=st.integers(1, 3), t=st.integers(1, 8), d=st.integers(1, 5), steps=st.integers(0, 3),
       lr=st.floats(0.01, 1.0), gamma=st.floats(-0.3, 0.3), seed=st.integers(0, 1000))
def test_gdpp_prefix_property(b, t, d, steps, lr, gamma, seed):
    x, y, _ = _data(b, t, d, seed=seed)
    alg = A.GDPlusPlus(steps, lr, gamma)
    torch.testing.assert_close(alg.prefix(x, y), prefix_by_solves(alg, x, y), atol=1e-9, rtol=1e-9)


def test_float32_path():
    x, y, q = _data(2, 8, 3, seed=7, dtype=torch.float32)
    out = A.GD(3, 0.3)(x, y, q)
    assert out.dtype == torch.float32
    ref = A.GD(3, 0.3)(x.double(), y.double(), q.double())
    np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=1e-4)


def test_spectral_loss_matches_direct_iteration():
    task = LinearRegression(d=4, noise_std=0.1)
    cx, cy, qx, qy = fit_batch(task, 6, torch.Generator().manual_seed(0), 64, 3)
    sl = SpectralLoss(cx, cy, qx, qy)
    for steps, lr, gamma in [(1, 0.5, 0.0), (3, 0.7, 0.0), (4, 0.6, 0.2), (2, 1.1, -0.1)]:
        w = gdpp_trajectory(cx, cy, full_counts(cx), steps, lr, gamma)[:, -1]
        direct = ((torch.einsum("bqd,bd->bq", qx, w) - qy) ** 2).mean().item()
        assert sl(steps, lr, gamma) == pytest.approx(direct, rel=1e-10)


def _direct_loss(alg, task, n_context, seed, batch_size, n_queries=4):
    cx, cy, qx, qy = fit_batch(task, n_context, torch.Generator().manual_seed(seed), batch_size, n_queries)
    return ((alg(cx, cy, qx) - qy) ** 2).mean().item()


@pytest.mark.parametrize("steps", [1, 3])
def test_fit_lr_is_a_local_minimum(steps):
    task = LinearRegression(d=5, noise_std=0.1, x_dist="uniform", input_range=1.0)
    gd = A.GD.fit_lr(task, steps, 8, torch.Generator().manual_seed(11), batch_size=512)
    assert isinstance(gd.lr, float) and gd.steps == steps
    best = _direct_loss(gd, task, 8, 11, 512)
    for f in (0.9, 0.97, 1.03, 1.1):
        assert best <= _direct_loss(A.GD(steps, gd.lr * f), task, 8, 11, 512) + 1e-12
    # scipy on the direct loss agrees with the fitted lr
    from scipy.optimize import minimize_scalar

    res = minimize_scalar(lambda v: _direct_loss(A.GD(steps, v), task, 8, 11, 512),
                          bounds=(gd.lr * 0.5, gd.lr * 1.5), method="bounded", options={"xatol": 1e-6})
    assert res.x == pytest.approx(gd.lr, rel=1e-3)


def test_fit_hparams_beats_gd_and_is_local_minimum():
    task = LinearRegression(d=4, noise_std=0.0, x_dist="anisotropic", condition_number=5.0)
    gen = torch.Generator().manual_seed(3)
    gdpp = A.GDPlusPlus.fit_hparams(task, 2, 10, gen, batch_size=512)
    gd = A.GD.fit_lr(task, 2, 10, torch.Generator().manual_seed(3), batch_size=512)
    best = _direct_loss(gdpp, task, 10, 3, 512)
    assert best <= _direct_loss(gd, task, 10, 3, 512) + 1e-12
    assert gdpp.gamma != 0.0
    for dl, dg in [(1.02, 0), (0.98, 0), (1, 0.02), (1, -0.02)]:
        other = A.GDPlusPlus(2, gdpp.lr * dl, gdpp.gamma + dg * gd.lr)
        assert best <= _direct_loss(other, task, 10, 3, 512) + 1e-10


def test_unfitted_optimal_lr_raises():
    gd = A.GD(2, "optimal")
    x, y, q = _data(1, 4, 2)
    for call in (lambda: gd(x, y, q), lambda: gd.fit(x, y), lambda: gd.prefix(x, y), lambda: gd.trajectory(x, y)):
        with pytest.raises(ConfigError, match="fit_lr"):
            call()
    assert A.build({"kind": "gd", "steps": 2, "lr": "optimal"}).lr == "optimal"


def test_bad_hparams():
    for kwargs in ({"steps": -1}, {"steps": 1.5}, {"lr": "fast"}, {"lr": float("inf")}):
        with pytest.raises(ConfigError):
            A.GD(**kwargs)
    with pytest.raises(ConfigError, match="gamma"):
        A.GDPlusPlus(1, 0.1, gamma="big")
    with pytest.raises(ConfigError, match="precond"):
        A.PreconditionedGD(1, 0.1, [[1.0, 0.0]])
    with pytest.raises(ConfigError, match="precond"):
        A.PreconditionedGD(1, 0.1, None)
    x, y, q = _data(1, 4, 3)
    with pytest.raises(ShapeError, match="precond"):
        A.PreconditionedGD(1, 0.1, torch.eye(2))(x, y, q)


def test_build_roundtrip():
    for alg in [A.GD(3, 0.5), A.GDPlusPlus(2, 0.3, 0.1), A.PreconditionedGD(1, 0.2, [[1.0, 0.0], [0.0, 2.0]])]:
        again = A.build(alg.spec())
        assert type(again) is type(alg) and again.spec() == alg.spec()
    assert A.build({"kind": "gd", "steps": 3, "lr": 0.5}).hparams() == {"steps": 3, "lr": 0.5}


def test_gdpp_per_step_hparams_and_autograd():
    x, y, q = _data(3, 7, 3, seed=5)
    # per-step lists: constant lists are the scalar GD++, and the spec round-trips through build
    torch.testing.assert_close(A.GDPlusPlus(3, [0.4] * 3, [0.3] * 3).trajectory(x, y),
                               A.GDPlusPlus(3, 0.4, 0.3).trajectory(x, y))
    alg = A.GDPlusPlus(2, [0.4, 0.6], [0.2, 0.0])
    assert alg.hparams() == {"steps": 2, "lr": [0.4, 0.6], "gamma": [0.2, 0.0]}
    torch.testing.assert_close(A.build(alg.spec())(x, y, q), alg(x, y, q))
    for kw in [dict(lr=[0.1]), dict(gamma=[0.1, float("nan")]), dict(lr=[0.1, "a"])]:
        with pytest.raises((ConfigError, ValueError)):
            A.GDPlusPlus(2, **kw)
    # gdpp_trajectory is differentiable in per-step (lr, gamma): autograd matches central differences
    lrs = torch.tensor([0.4, 0.6, 0.3], dtype=torch.float64, requires_grad=True)
    gammas = torch.tensor([0.2, -0.1, 0.0], dtype=torch.float64, requires_grad=True)

    def f(lr: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        return gdpp_trajectory(x, y, full_counts(x), 3, lr, gamma)[:, -1].pow(2).sum()

    torch.autograd.gradcheck(f, (lrs, gammas))
    with pytest.raises(ShapeError):
        gdpp_trajectory(x, y, full_counts(x), 2, lrs, gammas[:2])
