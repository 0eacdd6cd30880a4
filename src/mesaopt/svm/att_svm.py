"""Att-SVM (Tarzanagh et al. 2023): the max-margin token-separating attention matrix, solved with cvxpy.

For a token selection alpha (one index per sequence) the problem is

    min ||W||   s.t.   (x_{i,alpha_i} - x_{it})ᵀ W z_i >= 1   for every i and every t != alpha_i,

with the Frobenius norm (the implicit bias of gradient descent on W) or the nuclear norm (the bias of the
(K, Q) parametrization W = K Qᵀ). Constraints are written as rows of a matrix M (m, d*d) acting on vec(W)
(row-major): M[k] = vec((x_alpha - x_t) z_iᵀ).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import cvxpy as cp
import numpy as np
import torch

from mesaopt.errors import ConfigError, MesaoptError, ShapeError

Norm = Literal["fro", "nuc"]


class SVMInfeasible(ConfigError):
    """No W separates the selected tokens from the others with a positive margin."""


@dataclass
class SVMSolution:
    """W (d, d) float64; margins (n, T) = (x_alpha - x_t)ᵀ W z_i (NaN at t = alpha_i); active (n, T) bool."""

    W: np.ndarray
    norm: str
    objective: float
    alpha: np.ndarray
    margins: np.ndarray
    active: np.ndarray
    status: str
    solver: str
    polished: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def min_margin(self) -> float:
        """Smallest margin over all constraints (>= 1 for a feasible solution)."""
        return float(np.nanmin(self.margins))

    @property
    def n_active(self) -> int:
        """Number of active (tight) constraints, i.e. support tokens."""
        return int(self.active.sum())


def _np(a: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def _alpha(a: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def _check_alpha(X: np.ndarray, Z: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    if X.ndim != 3 or Z.shape != (X.shape[0], X.shape[2]):
        raise ShapeError(f"att_svm needs X (n, T, d) and Z (n, d); got X {X.shape}, Z {Z.shape}")
    n, T, _ = X.shape
    alpha = np.asarray(alpha)
    if alpha.shape != (n,) or not np.issubdtype(alpha.dtype, np.integer) or alpha.min() < 0 or alpha.max() >= T:
        raise ShapeError(f"alpha must be {n} integer token indices in [0, {T - 1}], got {alpha.tolist()}")
    return alpha.astype(np.int64)


def constraint_matrix(X: np.ndarray | torch.Tensor, Z: np.ndarray | torch.Tensor,
                      alpha: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Rows vec((x_alpha - x_t) z_iᵀ) for t != alpha_i: M (n(T-1), d*d) and their (i, t) index pairs (n(T-1), 2)."""
    X, Z = _np(X), _np(Z)
    alpha = _check_alpha(X, Z, _alpha(alpha))
    n, T, d = X.shape
    diff = X[np.arange(n), alpha][:, None, :] - X  # (n, T, d)
    mask = np.ones((n, T), dtype=bool)
    mask[np.arange(n), alpha] = False
    rows = np.einsum("ntd,ne->ntde", diff, Z).reshape(n, T, d * d)[mask]
    idx = np.argwhere(mask)
    return rows, idx


def margins(W: np.ndarray | torch.Tensor, X: np.ndarray | torch.Tensor, Z: np.ndarray | torch.Tensor,
            alpha: np.ndarray | torch.Tensor) -> np.ndarray:
    """(x_alpha - x_t)ᵀ W z_i for every token: (n, T), NaN at the selected token."""
    W, X, Z = _np(W), _np(X), _np(Z)
    alpha = _alpha(alpha).astype(np.int64)
    n = X.shape[0]
    s = np.einsum("ntd,de,ne->nt", X, W, Z)
    m = s[np.arange(n), alpha][:, None] - s
    m[np.arange(n), alpha] = np.nan
    return m


def _polish_fro(M: np.ndarray, w: np.ndarray, tol: float) -> np.ndarray | None:
    """Exact KKT solution on the active set of an approximate solution (None if the KKT check fails)."""
    act = M @ w <= 1 + 1e-4
    if not act.any():
        return None
    Ma = M[act]
    lam, *_ = np.linalg.lstsq(Ma @ Ma.T, np.ones(act.sum()), rcond=None)
    w2 = Ma.T @ lam
    if lam.min() < -1e-9 or (M @ w2).min() < 1 - tol or not np.allclose(Ma @ w2, 1.0, atol=1e-9):
        return None
    return w2


def _check_basis(basis: tuple, d: int) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(basis, (tuple, list)) or len(basis) != 2:
        raise ConfigError("basis must be a pair (U (d, r1), V (d, r2)) of matrices with orthonormal columns")
    U, V = _np(basis[0]), _np(basis[1])
    for name, B in (("U", U), ("V", V)):
        if B.ndim != 2 or B.shape[0] != d or not 1 <= B.shape[1] <= d:
            raise ShapeError(f"basis {name} must be (d={d}, r) with 1 <= r <= {d}, got {B.shape}")
        if not np.allclose(B.T @ B, np.eye(B.shape[1]), atol=1e-8):
            raise ConfigError(f"basis {name} must have orthonormal columns ({name}ᵀ{name} = I)")
    return U, V


def att_svm(X: np.ndarray | torch.Tensor, Z: np.ndarray | torch.Tensor, alpha: np.ndarray | torch.Tensor,
            norm: Norm = "fro", solver: str | None = None, active_tol: float = 1e-5,
            basis: tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor] | None = None) -> SVMSolution:
    """Solve Att-SVM for selection alpha (n,) on X (n, T, d), Z (n, d): W (d, d) with all margins >= 1.

    ``norm`` is "fro" (W parametrization) or "nuc" (K Qᵀ parametrization). The solver status is checked:
    an infeasible selection raises SVMInfeasible; other failures raise MesaoptError. The returned W is
    polished so that every margin is >= 1 up to float rounding (Frobenius: exact KKT solve on the active
    set; otherwise a rescaling by the smallest margin). ``basis=(U (d, r1), V (d, r2))`` with orthonormal
    columns restricts the search to W = U M Vᵀ (the SVM within given column / row spaces; ||W|| = ||M||).
    """
    if norm not in ("fro", "nuc"):
        raise ConfigError(f"norm must be one of ['fro', 'nuc'], got {norm!r}")
    X, Z = _np(X), _np(Z)
    alpha = _check_alpha(X, Z, _alpha(alpha))
    n, T, d = X.shape
    M, _ = constraint_matrix(X, Z, alpha)
    r1 = r2 = d
    if basis is not None:
        U, V = _check_basis(basis, d)
        r1, r2 = U.shape[1], V.shape[1]
        M = M @ np.kron(U, V)  # row-major vec(U M Vᵀ) = (U ⊗ V) vec(M)
    w = cp.Variable(r1 * r2)
    W = cp.reshape(w, (r1, r2), order="C")
    objective = cp.sum_squares(w) if norm == "fro" else cp.normNuc(W)
    prob = cp.Problem(cp.Minimize(objective), [M @ w >= 1])
    if solver is None and "CLARABEL" in cp.installed_solvers():
        solver = "CLARABEL"  # interior point: tight constraints, handles the nuclear norm's SDP cone
    try:
        prob.solve(solver=solver)
    except cp.error.SolverError as e:
        raise MesaoptError(f"Att-SVM ({norm}) solver failed for alpha={alpha.tolist()}: {e}") from None
    status = prob.status
    where = "" if basis is None else f" within the given basis (r={r1}x{r2})"
    if status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
        raise SVMInfeasible(f"Att-SVM is infeasible for token selection alpha={alpha.tolist()}: no W{where} separates "
                            f"the selected tokens from the others (n={n}, T={T}, d={d})")
    if status not in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE) or w.value is None:
        raise MesaoptError(f"Att-SVM ({norm}) solver returned status {status!r} for alpha={alpha.tolist()}")
    wv = np.asarray(w.value, dtype=np.float64)
    polished = False
    if norm == "fro":
        w2 = _polish_fro(M, wv, tol=1e-9)
        if w2 is not None:
            wv, polished = w2, True
    mm = float((M @ wv).min())
    if mm <= 0:
        raise SVMInfeasible(f"Att-SVM is infeasible for token selection alpha={alpha.tolist()}: best margin "
                            f"{mm:.3g} <= 0{where} (n={n}, T={T}, d={d})")
    if mm < 1:
        wv = wv / mm  # scaling keeps the direction and makes every margin >= 1
    Wm = wv.reshape(r1, r2)
    if basis is not None:
        Wm = U @ Wm @ V.T
    obj = float(np.linalg.norm(Wm, "fro") if norm == "fro" else np.linalg.norm(Wm, "nuc"))
    mg = margins(Wm, X, Z, alpha)
    active = np.nan_to_num(mg, nan=np.inf) <= 1 + active_tol
    solver_name = prob.solver_stats.solver_name if prob.solver_stats is not None else str(solver)
    return SVMSolution(W=Wm, norm=norm, objective=obj, alpha=alpha, margins=mg, active=active, status=status,
                       solver=solver_name, polished=polished)


def is_feasible(X: np.ndarray | torch.Tensor, Z: np.ndarray | torch.Tensor,
                alpha: np.ndarray | torch.Tensor) -> bool:
    """Whether some W separates the selection alpha with positive margins (an LP feasibility check)."""
    X, Z = _np(X), _np(Z)
    M, _ = constraint_matrix(X, Z, alpha)
    w = cp.Variable(M.shape[1])
    prob = cp.Problem(cp.Minimize(0), [M @ w >= 1])
    prob.solve()
    if prob.status in (cp.OPTIMAL, cp.OPTIMAL_INACCURATE):
        return True
    if prob.status in (cp.INFEASIBLE, cp.INFEASIBLE_INACCURATE):
        return False
    raise MesaoptError(f"Att-SVM feasibility LP returned status {prob.status!r}")


def correlation(A: np.ndarray | torch.Tensor, B: np.ndarray | torch.Tensor) -> np.ndarray | float:
    """<A, B> / (||A||_F ||B||_F) over the last two axes: (..., d, d) x (..., d, d) -> (...)."""
    A, B = _np(A), _np(B)
    num = (A * B).sum(axis=(-2, -1))
    den = np.linalg.norm(A, axis=(-2, -1)) * np.linalg.norm(B, axis=(-2, -1))
    out = num / np.maximum(den, np.finfo(np.float64).tiny)
    return float(out) if np.ndim(out) == 0 else out
