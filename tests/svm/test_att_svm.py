"""Att-SVM: margins, infeasibility, and agreement with independent scipy formulations (dual QP, nuclear dual)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from mesaopt.errors import ConfigError, ShapeError
from mesaopt.svm import SVMInfeasible, att_svm, correlation, is_feasible
from mesaopt.tasks.selection import sample_selection


def _rows(X: np.ndarray, Z: np.ndarray, alpha) -> np.ndarray:
    """Independent constraint rows vec((x_alpha - x_t) z_iᵀ), built with explicit loops."""
    rows = []
    for i in range(X.shape[0]):
        for t in range(X.shape[1]):
            if t != alpha[i]:
                rows.append(np.outer(X[i, alpha[i]] - X[i, t], Z[i]).ravel())
    return np.array(rows)


def _problem(n, T, d, seed):
    p = sample_selection(n, T, d, torch.Generator().manual_seed(seed))
    return p, p.X.numpy(), p.Z.numpy(), p.optimal_tokens().numpy()


@pytest.mark.parametrize("norm", ["fro", "nuc"])
@pytest.mark.parametrize("seed", [0, 1])
def test_all_margins_hold_and_active_are_tight(norm, seed):
    p, X, Z, a = _problem(4, 5, 6, seed)
    sol = att_svm(p.X, p.Z, p.optimal_tokens(), norm=norm)
    M = _rows(X, Z, a)
    assert (M @ sol.W.ravel()).min() >= 1 - 1e-6
    assert np.nanmin(sol.margins) >= 1 - 1e-6 and sol.min_margin == pytest.approx((M @ sol.W.ravel()).min())
    assert sol.n_active >= 1 and np.allclose(sol.margins[sol.active], 1.0, atol=1e-5)
    assert not sol.active[np.arange(4), a].any()
    expect = np.linalg.norm(sol.W, "fro" if norm == "fro" else "nuc")
    assert sol.objective == pytest.approx(expect)


@pytest.mark.parametrize("seed", [0, 3])
def test_frobenius_matches_scipy_dual_qp_and_kkt(seed):
    _, X, Z, a = _problem(3, 4, 3, seed)
    sol = att_svm(X, Z, a, norm="fro")
    M = _rows(X, Z, a)
    G = M @ M.T
    res = minimize(lambda lam: 0.5 * lam @ G @ lam - lam.sum(), np.zeros(len(M)), jac=lambda lam: G @ lam - 1,
                   method="L-BFGS-B", bounds=[(0, None)] * len(M), options={"ftol": 1e-15, "gtol": 1e-12})
    lam = res.x
    W_dual = (M.T @ lam).reshape(3, 3)
    np.testing.assert_allclose(sol.W, W_dual, atol=1e-6)
    # KKT: multipliers live on active constraints only; primal objective = dual objective
    slack = M @ sol.W.ravel() - 1
    assert np.all(lam[slack > 1e-4] < 1e-8)
    assert 0.5 * np.sum(sol.W**2) == pytest.approx(lam.sum() - 0.5 * lam @ G @ lam, rel=1e-7)


def test_frobenius_matches_scipy_primal_slsqp():
    _, X, Z, a = _problem(2, 3, 3, 5)
    M = _rows(X, Z, a)
    res = minimize(lambda w: 0.5 * w @ w, np.ones(9), jac=lambda w: w, method="SLSQP",
                   constraints=[{"type": "ineq", "fun": lambda w: M @ w - 1, "jac": lambda w: M}],
                   options={"ftol": 1e-14, "maxiter": 500})
    np.testing.assert_allclose(att_svm(X, Z, a, norm="fro").W.ravel(), res.x, atol=1e-6)


def test_nuclear_matches_scipy_dual():
    """Strong duality: min ||W||_* = max 1ᵀlam s.t. ||sum_k lam_k A_k||_op <= 1, lam >= 0 (solved by SLSQP)."""
    _, X, Z, a = _problem(2, 3, 3, 2)
    sol = att_svm(X, Z, a, norm="nuc")
    M = _rows(X, Z, a)

    def op(lam):
        return np.linalg.norm((M.T @ lam).reshape(3, 3), 2)

    res = minimize(lambda lam: -lam.sum(), np.full(len(M), 0.1), jac=lambda lam: -np.ones_like(lam), method="SLSQP",
                   bounds=[(0, None)] * len(M), constraints=[{"type": "ineq", "fun": lambda lam: 1 - op(lam)}],
                   options={"ftol": 1e-12, "maxiter": 300})
    assert op(res.x) <= 1 + 1e-7
    assert res.x.sum() == pytest.approx(sol.objective, rel=1e-6)
    # each norm's solution is optimal in its own norm
    fro = att_svm(X, Z, a, norm="fro")
    assert sol.objective <= np.linalg.norm(fro.W, "nuc") + 1e-6
    assert fro.objective <= np.linalg.norm(sol.W, "fro") + 1e-6


def test_nuclear_matches_factorized_primal():
    """||W||_* = min (||K||² + ||Q||²)/2 over W = K Qᵀ: solve the factorized Att-SVM with SLSQP from random starts."""
    _, X, Z, a = _problem(2, 3, 3, 0)
    sol = att_svm(X, Z, a, norm="nuc")
    A = _rows(X, Z, a).reshape(-1, 3, 3)

    def cons(p):
        K, Q = p[:9].reshape(3, 3), p[9:].reshape(3, 3)
        return np.einsum("kde,de->k", A, K @ Q.T) - 1

    def jac(p):
        K, Q = p[:9].reshape(3, 3), p[9:].reshape(3, 3)
        return np.hstack([(A @ Q).reshape(len(A), 9), (A.transpose(0, 2, 1) @ K).reshape(len(A), 9)])

    rng = np.random.default_rng(0)
    best = np.inf
    for _ in range(2):
        res = minimize(lambda p: 0.5 * p @ p, rng.normal(size=18), jac=lambda p: p, method="SLSQP",
                       constraints=[{"type": "ineq", "fun": cons, "jac": jac}], options={"ftol": 1e-14, "maxiter": 500})
        if cons(res.x).min() > -1e-9:
            best = min(best, res.fun)
    assert best == pytest.approx(sol.objective, rel=1e-6)


def _orthonormal(d, r, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, r)))
    return q


def test_basis_restricted_svm_matches_projected_duals():
    """W = U M Vᵀ: Frobenius vs the dual QP on projected constraints Uᵀ A_k V, nuclear vs max 1ᵀlam s.t.
    ||Uᵀ (sum_k lam_k A_k) V||_op <= 1 (SLSQP); the solution lies in the given column / row spaces."""
    _, X, Z, a = _problem(2, 3, 4, 1)
    U, V = _orthonormal(4, 3, 0), _orthonormal(4, 2, 1)
    A = _rows(X, Z, a).reshape(-1, 4, 4)
    P = np.einsum("di,kde,ej->kij", U, A, V).reshape(len(A), -1)  # projected constraint rows (k, 3*2)
    G = P @ P.T
    fro = att_svm(X, Z, a, norm="fro", basis=(U, V))
    res = minimize(lambda lam: 0.5 * lam @ G @ lam - lam.sum(), np.zeros(len(P)), jac=lambda lam: G @ lam - 1,
                   method="L-BFGS-B", bounds=[(0, None)] * len(P), options={"ftol": 1e-15, "gtol": 1e-12})
    np.testing.assert_allclose(fro.W, U @ (P.T @ res.x).reshape(3, 2) @ V.T, atol=1e-6)

    nuc = att_svm(X, Z, a, norm="nuc", basis=(torch.from_numpy(U), V))

    def op(lam):
        return np.linalg.norm((P.T @ lam).reshape(3, 2), 2)

    res = minimize(lambda lam: -lam.sum(), np.full(len(P), 0.1), jac=lambda lam: -np.ones_like(lam), method="SLSQP",
                   bounds=[(0, None)] * len(P), constraints=[{"type": "ineq", "fun": lambda lam: 1 - op(lam)}],
                   options={"ftol": 1e-12, "maxiter": 300})
    assert op(res.x) <= 1 + 1e-7 and res.x.sum() == pytest.approx(nuc.objective, rel=1e-6)
    for sol in (fro, nuc):
        assert sol.min_margin >= 1 - 1e-6
        np.testing.assert_allclose(sol.W - U @ U.T @ sol.W @ V @ V.T, 0, atol=1e-9)
    assert nuc.objective >= att_svm(X, Z, a, norm="nuc").objective - 1e-7  # a restriction cannot do better


def test_full_basis_equals_unrestricted_and_bad_basis():
    p, X, Z, a = _problem(3, 4, 4, 0)
    R1, R2 = _orthonormal(4, 4, 2), _orthonormal(4, 4, 3)
    for norm in ("fro", "nuc"):
        free, rot = att_svm(X, Z, a, norm=norm), att_svm(X, Z, a, norm=norm, basis=(R1, R2))
        assert rot.objective == pytest.approx(free.objective, rel=1e-6) and correlation(rot.W, free.W) > 1 - 1e-6
    with pytest.raises(ConfigError, match="orthonormal"):
        att_svm(X, Z, a, basis=(2 * R1, R2))
    with pytest.raises(ShapeError, match="basis V"):
        att_svm(X, Z, a, basis=(R1, np.ones((3, 1))))
    with pytest.raises(SVMInfeasible, match="within the given basis"):
        att_svm(X, Z, a, basis=(R1[:, :1], R2[:, :1]))  # rank 1 cannot separate this problem


def test_nuclear_solution_is_low_rank():
    p, *_ = _problem(6, 8, 10, 0)
    fro = att_svm(p.X, p.Z, p.optimal_tokens(), norm="fro")
    nuc = att_svm(p.X, p.Z, p.optimal_tokens(), norm="nuc")
    assert np.linalg.matrix_rank(nuc.W, tol=1e-6) < np.linalg.matrix_rank(fro.W, tol=1e-6)


def test_infeasible_selection_raises_one_line():
    p, X, Z, a = _problem(2, 3, 3, 0)
    X = X.copy()
    other = (a[0] + 1) % 3
    X[0, other] = X[0, a[0]]  # a duplicate of the selected token can never be separated
    with pytest.raises(SVMInfeasible, match=r"alpha=\[") as e:
        att_svm(X, Z, a, norm="fro")
    assert "\n" not in str(e.value) and isinstance(e.value, ConfigError)
    with pytest.raises(SVMInfeasible):
        att_svm(X, Z, a, norm="nuc")
    assert not is_feasible(X, Z, a) and is_feasible(p.X, p.Z, a)


def test_bad_arguments():
    p, X, Z, a = _problem(2, 3, 3, 0)
    with pytest.raises(ConfigError, match="norm"):
        att_svm(X, Z, a, norm="l1")
    with pytest.raises(ShapeError, match="alpha"):
        att_svm(X, Z, np.array([0, 3]))
    with pytest.raises(ShapeError):
        att_svm(X, Z[:1], a)


def test_correlation():
    A = np.arange(9.0).reshape(3, 3)
    assert correlation(A, 2 * A) == pytest.approx(1.0)
    assert correlation(A, -A) == pytest.approx(-1.0)
    np.testing.assert_allclose(correlation(np.stack([A, np.eye(3)]), np.stack([A, -np.eye(3)])), [1.0, -1.0])
