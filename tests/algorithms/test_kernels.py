"""Batch-last kernels (chunked Cholesky, RLS / Greville prefixes) against NumPy / LAPACK and the slow references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mesaopt.algorithms as A
from mesaopt.algorithms import kernels as K
from mesaopt.algorithms.least_squares import greville_prefix_weights, rls_prefix_weights


def _data(b: int, n: int, d: int, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, d, generator=g, dtype=dtype), torch.randn(b, n, generator=g, dtype=dtype)


@pytest.fixture
def tiny_chunks(monkeypatch):
    """Force several chunks (and a ragged last one) on small batches."""
    monkeypatch.setattr(K, "CHUNK_ELEMS", 1000)


def spd_solve_bl(a: torch.Tensor, r: torch.Tensor, rtol: float = 0.0, shift: float = 0.0):
    """(A + shift I)^{-1} R through ``cholesky_solve_bl``: a (c, d, d), r (c, d, k) -> (solution (c, d, k), ok (c,))."""
    c, d, _ = a.shape
    k = r.shape[-1]
    m = a.new_empty(d, d + k, c)
    m[:, :d].copy_(a.permute(1, 2, 0))
    m[:, d:].copy_(r.permute(1, 2, 0))
    if shift:
        m[:, :d].diagonal(0, 0, 1).add_(shift)
    ok = K.cholesky_solve_bl(m, d, rtol)
    return K.from_batch_last(m[:, d:]), ok


def test_cholesky_solve_bl_matches_lapack_and_flags_indefinite():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(7, 6, 6, generator=g, dtype=torch.float64)
    a = a @ a.transpose(1, 2) + 0.1 * torch.eye(6, dtype=torch.float64)
    a[3] = -a[3]  # not positive definite
    r = torch.randn(7, 6, 2, generator=g, dtype=torch.float64)
    sol, ok = spd_solve_bl(a, r)
    assert ok.tolist() == [True, True, True, False, True, True, True]
    ref = torch.linalg.solve(a, r)
    torch.testing.assert_close(sol[ok], ref[ok], atol=1e-10, rtol=0)


def test_spd_solve_bl_shift_and_rtol():
    x, _ = _data(4, 10, 5, seed=1)
    a = x.transpose(1, 2) @ x
    r = torch.ones(4, 5, 1, dtype=torch.float64)
    sol, ok = spd_solve_bl(a, r, shift=0.7)
    torch.testing.assert_close(sol, torch.linalg.solve(a + 0.7 * torch.eye(5, dtype=torch.float64), r),
                               atol=1e-12, rtol=0)
    a[1, :, 4] = a[1, :, 3]  # rank-deficient Gram (columns 3 and 4 of X equal)
    a[1, 4, :] = a[1, 3, :]
    assert spd_solve_bl(a, r, rtol=1e-7)[1].tolist() == [True, False, True, True]


@pytest.mark.parametrize("n,d", [(40, 20), (20, 20), (12, 20), (1, 5), (7, 3)])
def test_ols_matches_lstsq_float64(n, d, tiny_chunks):
    x, y = _data(9, n, d, seed=n + d)
    w = A.OLS().fit(x, y)
    for i in range(9):
        ref = np.linalg.lstsq(x[i].numpy(), y[i].numpy(), rcond=None)[0]
        np.testing.assert_allclose(w[i].numpy(), ref, atol=1e-10 * max(1.0, np.abs(ref).max()), rtol=0)


def test_ols_rank_deficient_and_ill_conditioned_fall_back_to_pinv(tiny_chunks):
    x, y = _data(6, 30, 8, seed=3)
    x[0, :, 7] = x[0, :, 6]  # exactly rank-deficient (N > d)
    x[1, :, 5] = x[1, :, 4] + 1e-9 * x[1, :, 3]  # cond(X) ~ 1e9: normal equations would lose ~all digits
    x[2, 5:] = x[2, :5].repeat(5, 1)  # rank 5 < d = 8 with N = 30
    x[3, :, 0] = 0.0  # a zero column
    w = A.OLS().fit(x, y)
    for i in range(6):
        ref = np.linalg.pinv(x[i].numpy()) @ y[i].numpy()
        np.testing.assert_allclose(w[i].numpy(), ref, atol=1e-8 * max(1.0, np.abs(ref).max()), rtol=0)
    xd, yd = _data(3, 4, 9, seed=4)  # N < d, duplicated row: dual Gram singular
    xd[1, 3] = xd[1, 0]
    w = A.OLS().fit(xd, yd)
    for i in range(3):
        np.testing.assert_allclose(w[i].numpy(), np.linalg.pinv(xd[i].numpy()) @ yd[i].numpy(), atol=1e-9)


def test_ridge_chunked_matches_closed_form(tiny_chunks):
    x, y = _data(11, 9, 6, seed=5)
    q = torch.randn(11, 2, 6, dtype=torch.float64)
    lam = 0.3
    pred = A.Ridge(lam)(x.float(), y.float(), q.float())
    assert pred.dtype == torch.float32
    w = torch.linalg.solve(x.transpose(1, 2) @ x + lam * torch.eye(6, dtype=torch.float64),
                           (x.transpose(1, 2) @ y.unsqueeze(-1))).squeeze(-1)
    torch.testing.assert_close(A.Ridge(lam).fit(x, y), w, atol=1e-12, rtol=0)
    torch.testing.assert_close(pred.double(), (q * w.unsqueeze(1)).sum(-1), atol=1e-4, rtol=0)


@pytest.mark.parametrize("t,d", [(12, 4), (7, 9), (10, 10)])
def test_fast_prefixes_match_references(t, d, tiny_chunks):
    x, y = _data(13, t, d, seed=t * d)
    x[2, 5:] = x[2, 0]  # repeated rows: the spanned branch of Greville while rank < d
    torch.testing.assert_close(A.OLS().prefix_weights(x, y), greville_prefix_weights(x, y), atol=1e-9, rtol=0)
    torch.testing.assert_close(A.Ridge(0.4).prefix_weights(x, y), rls_prefix_weights(x, y, 0.4), atol=1e-10, rtol=0)
    pred = A.OLS().prefix(x, y)
    torch.testing.assert_close(pred, (x * greville_prefix_weights(x, y)).sum(-1), atol=1e-9, rtol=0)
    torch.testing.assert_close(A.Ridge(0.4).prefix(x, y), (x * rls_prefix_weights(x, y, 0.4)).sum(-1),  # GP form
                               atol=1e-10, rtol=0)
    torch.testing.assert_close(A.Ridge(0.0).prefix(x, y), pred, atol=0, rtol=0)


def test_prefix_full_rank_switch_matches_numpy():
    """After every task reaches rank d the Greville kernel switches to plain Sherman-Morrison steps."""
    x, y = _data(5, 30, 4, seed=8)
    pre = A.OLS().prefix(x, y).numpy()
    for i in range(5):
        for s in range(1, 30):
            ref = x[i, s].numpy() @ np.linalg.lstsq(x[i, :s].numpy(), y[i, :s].numpy(), rcond=None)[0]
            assert abs(pre[i, s] - ref) <= 1e-9 * max(1.0, abs(ref))


def test_empty_shapes():
    x, y = _data(0, 5, 3)
    assert A.OLS().fit(x, y).shape == (0, 3) and A.Ridge(1.0).prefix(x, y).shape == (0, 5)
    x, y = _data(2, 0, 3)
    assert A.OLS().prefix(x, y).shape == (2, 0)
