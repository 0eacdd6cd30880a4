"""Lasso against scikit-learn's Lasso(fit_intercept=False) and its KKT conditions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import Lasso as SkLasso

import mesaopt.algorithms as A
from mesaopt.errors import ConfigError
from mesaopt.learner import prefix_by_solves


def _data(b: int, n: int, d: int, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, d, generator=g, dtype=dtype)
    w = torch.randn(b, d, generator=g, dtype=dtype) * (torch.rand(b, d, generator=g, dtype=dtype) < 0.4)
    y = torch.einsum("bnd,bd->bn", x, w) + 0.1 * torch.randn(b, n, generator=g, dtype=dtype)
    return x, y, torch.randn(b, 2, d, generator=g, dtype=dtype)


@pytest.mark.parametrize("alpha", [0.01, 0.1, 0.5])
@pytest.mark.parametrize("n,d", [(4, 8), (8, 8), (20, 6)])
def test_lasso_matches_sklearn(alpha, n, d):
    x, y, q = _data(3, n, d)
    w = A.Lasso(alpha).fit(x, y)
    for i in range(3):
        sk = SkLasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=200_000).fit(x[i].numpy(), y[i].numpy())
        np.testing.assert_allclose(w[i].numpy(), sk.coef_, atol=1e-8)
    torch.testing.assert_close(A.Lasso(alpha)(x, y, q), torch.einsum("bqd,bd->bq", q, w))


@pytest.mark.parametrize("n,d,alpha", [(12, 5, 0.05), (4, 6, 0.2)])
def test_coordinate_descent_fallback_matches_homotopy(n, d, alpha):
    from mesaopt.algorithms.sparse import lasso_cd, lasso_solve

    x, y, _ = _data(3, n, d, seed=5)
    cnt = torch.full((3,), float(n), dtype=torch.float64)
    torch.testing.assert_close(lasso_cd(x, y, cnt, alpha), lasso_solve(x, y, cnt, alpha), atol=1e-8, rtol=0)


def test_lasso_zero_alpha_is_least_squares():
    x, y, _ = _data(2, 12, 4, seed=6)
    torch.testing.assert_close(A.Lasso(0.0).fit(x, y), A.OLS().fit(x, y), atol=1e-9, rtol=0)


def test_lasso_kkt_conditions():
    x, y, _ = _data(4, 15, 6, seed=1)
    alpha = 0.1
    w = A.Lasso(alpha).fit(x, y)
    grad = torch.einsum("bnd,bn->bd", x, y - torch.einsum("bnd,bd->bn", x, w)) / 15  # X^T r / N
    active = w.abs() > 1e-12
    torch.testing.assert_close(grad[active], alpha * torch.sign(w[active]), atol=1e-8, rtol=0)
    assert (grad[~active].abs() <= alpha + 1e-8).all()


def test_lasso_large_alpha_is_zero_and_float32():
    x, y, q = _data(2, 10, 4, seed=2, dtype=torch.float32)
    assert (A.Lasso(100.0).fit(x, y) == 0).all()
    out = A.Lasso(0.05)(x, y, q)
    assert out.dtype == torch.float32
    ref = A.Lasso(0.05)(x.double(), y.double(), q.double())
    np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=1e-4)


def test_lasso_prefix_matches_solves():
    x, y, _ = _data(3, 9, 4, seed=3)
    alg = A.Lasso(0.05)
    pre = alg.prefix(x, y)
    torch.testing.assert_close(pre, prefix_by_solves(alg, x, y), atol=1e-7, rtol=0)
    assert (pre[:, 0] == 0).all()


def test_lasso_bad_hparams_and_roundtrip():
    for kw in ({"alpha": -0.1}, {"tol": 0.0}, {"max_iter": 0}):
        with pytest.raises(ConfigError):
            A.Lasso(**kw)
    alg = A.build({"kind": "lasso", "alpha": 0.2})
    assert isinstance(alg, A.Lasso) and alg.spec()["alpha"] == 0.2


def _correlated(b: int, n: int, d: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    mix = torch.eye(d, dtype=torch.float64) + 0.8 * torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5
    x = torch.randn(b, n, d, generator=g, dtype=torch.float64) @ mix
    w = torch.randn(b, d, generator=g, dtype=torch.float64)
    return x, torch.einsum("bnd,bd->bn", x, w) + 0.3 * torch.randn(b, n, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("n,d,alpha", [(30, 10, 0.02), (6, 10, 0.05), (40, 20, 0.05)])
def test_sweep_homotopy_matches_sklearn_and_masked_homotopy(n, d, alpha):
    """The batch-last sweep-operator path (joins and drops along correlated paths) against sklearn and LARS."""
    from mesaopt.algorithms.kernels import from_batch_last, to_batch_last
    from mesaopt.algorithms.sparse import lasso_homotopy, lasso_homotopy_bl

    x, y = _correlated(24, n, d, seed=n + d)
    s, b = x.transpose(1, 2) @ x / n, torch.einsum("bnd,bn->bd", x, y) / n
    w_bl, done = lasso_homotopy_bl(to_batch_last(s), to_batch_last(b), alpha, max_steps=8 * d + 2 * n + 20)
    w_bl = from_batch_last(w_bl)
    w_ref, done_ref = lasso_homotopy(s, b, alpha, max_steps=8 * d + 2 * n + 20)
    assert bool(done.all()) and bool(done_ref.all())
    torch.testing.assert_close(w_bl, w_ref, atol=1e-9, rtol=0)
    for i in range(0, 24, 3):
        sk = SkLasso(alpha=alpha, fit_intercept=False, tol=1e-14, max_iter=500_000).fit(x[i].numpy(), y[i].numpy())
        np.testing.assert_allclose(w_bl[i].numpy(), sk.coef_, atol=1e-7)


def test_sweep_homotopy_unfinished_tasks_are_resolved():
    from mesaopt.algorithms.kernels import to_batch_last
    from mesaopt.algorithms.sparse import lasso_homotopy_bl, lasso_solve

    x, y = _correlated(5, 25, 8, seed=9)
    s, b = x.transpose(1, 2) @ x / 25, torch.einsum("bnd,bn->bd", x, y) / 25
    _, done = lasso_homotopy_bl(to_batch_last(s), to_batch_last(b), 0.01, max_steps=2)
    assert not bool(done.any())  # too few events: every task must be handed to the fallback
    w = lasso_solve(x, y, torch.full((5,), 25.0, dtype=torch.float64), 0.01)
    for i in range(5):
        sk = SkLasso(alpha=0.01, fit_intercept=False, tol=1e-14, max_iter=500_000).fit(x[i].numpy(), y[i].numpy())
        np.testing.assert_allclose(w[i].numpy(), sk.coef_, atol=1e-7)


def test_active_set_iterations_are_exact_when_accepted_and_leftovers_resolved(monkeypatch):
    """Active-set solves accepted by the KKT check equal the homotopy; tasks left over go to the homotopy."""
    import mesaopt.algorithms.sparse as S
    from mesaopt.algorithms.kernels import from_batch_last, to_batch_last

    x, y = _correlated(40, 12, 10, seed=11)
    s, b = x.transpose(1, 2) @ x / 12, torch.einsum("bnd,bn->bd", x, y) / 12
    w, good = S.lasso_active_set_bl(to_batch_last(s), to_batch_last(b), 0.03, iters=1)
    ref, _ = S.lasso_homotopy(s, b, 0.03, max_steps=200)
    assert 0 < int(good.sum()) < 40  # one solve: some accepted, some not
    torch.testing.assert_close(from_batch_last(w)[good], ref[good], atol=1e-10, rtol=0)
    monkeypatch.setattr(S.lasso_active_set_bl, "__defaults__", (1,))  # force leftovers inside lasso_solve
    sol = S.lasso_solve(x.float(), y.float(), torch.full((40,), 12.0), 0.03)
    ref32 = S.lasso_solve(x.float().double(), y.float().double(), torch.full((40,), 12.0, dtype=torch.float64), 0.03)
    torch.testing.assert_close(sol, ref32, atol=1e-12, rtol=0)
    for i in range(0, 40, 8):
        sk = SkLasso(alpha=0.03, fit_intercept=False, tol=1e-14, max_iter=500_000).fit(x[i].float().double().numpy(),
                                                                                      y[i].float().double().numpy())
        np.testing.assert_allclose(sol[i].numpy(), sk.coef_, atol=1e-7)
