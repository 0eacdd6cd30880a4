"""Lasso with scikit-learn's objective (1/(2N)) ||y - X w||^2 + alpha ||w||_1 (no intercept).

Solver: a batched LARS-Lasso homotopy (``lasso_homotopy``), exact up to rounding, following the solution
path from lam = max|X^T y / N| down to alpha with one masked (B, d, d) solve per path event (all tasks in
lock-step; about min(N, d) + #drops events). Tasks whose result fails the KKT check fall back to cyclic
coordinate descent vectorised over the batch (``lasso_cd``: loops over sweeps and coordinates only, with
exact active-set polishing every 10 sweeps; stops at tol * max(1, max|w|) or ``max_iter`` sweeps).
Prefix predictions solve all B*T zero-padded prefix problems at once (chunked over the batch):
O(B * T * (d + T) * d^3) time in the worst case, memory O(chunk * d^2).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from mesaopt.algorithms.base import LinearAlgorithm, check_float, check_int, register


def _cd_sweeps(x: torch.Tensor, r: torch.Tensor, w: torch.Tensor, col: torch.Tensor, inv_n: torch.Tensor,
               alpha: float, sweeps: int) -> torch.Tensor:
    """Run ``sweeps`` cyclic coordinate-descent sweeps in place on (w, r); returns the last sweep's max |dw| (B,)."""
    safe_col = torch.where(col > 0, col, torch.ones_like(col))
    max_delta = x.new_zeros(x.shape[0])
    for _ in range(sweeps):
        max_delta = x.new_zeros(x.shape[0])
        for j in range(x.shape[2]):
            xj = x[:, :, j]
            old = w[:, j]
            rho = (xj * r).sum(1) * inv_n + col[:, j] * old
            new = torch.sign(rho) * (rho.abs() - alpha).clamp_min(0.0) / safe_col[:, j]
            new = torch.where(col[:, j] > 0, new, torch.zeros_like(new))
            delta = new - old
            r -= xj * delta.unsqueeze(-1)
            w[:, j] = new
            max_delta = torch.maximum(max_delta, delta.abs())
    return max_delta


def _active_set_polish(s: torch.Tensor, b: torch.Tensor, w: torch.Tensor,
                       alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact Lasso solution on the current support/signs and whether it satisfies the KKT conditions.

    With S = X^T X / n, b = X^T y / n, support A and signs s: w_A = S_AA^{-1} (b_A - alpha s_A), w_rest = 0;
    accepted iff the signs on A are kept and |b_j - (S w)_j| <= alpha off A.
    """
    act = w != 0
    sign = torch.sign(w)
    dm = act.to(w.dtype)
    m = dm.unsqueeze(-1) * s * dm.unsqueeze(-2) + torch.diag_embed(1.0 - dm)
    sol, info = torch.linalg.solve_ex(m, dm * (b - alpha * sign))
    sol = sol * dm
    grad = b - (s @ sol.unsqueeze(-1)).squeeze(-1)
    sign_ok = (~act | (torch.sign(sol) == sign)).all(-1)
    kkt_ok = (act | (grad.abs() <= alpha * (1.0 + 1e-9) + 1e-13)).all(-1)
    good = (info == 0) & sign_ok & kkt_ok & torch.isfinite(sol).all(-1)
    return sol, good


def _mv(a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Batched matrix-vector product (B, d, d) x (B, d) -> (B, d) (elementwise: fast for small d on CPU)."""
    return (a * v.unsqueeze(-2)).sum(-1)


def lasso_homotopy(s: torch.Tensor, b: torch.Tensor, alpha: float,
                   max_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched LARS-Lasso homotopy for min_w (1/2) w^T S w - b^T w + alpha ||w||_1 -> (w (B,d), finished (B,)).

    Follows the piecewise-linear solution path from lam = max|b| (w = 0) down to alpha: on the active set A
    with signs s_A, dw_A/d(-lam) = v_A = S_AA^{-1} s_A; each step moves to the next event (an inactive
    correlation |b_j - (S w)_j| reaching lam, an active weight crossing zero, or lam = alpha). One masked
    (B', d, d) solve per event over the B' tasks not yet finished.
    """
    bsz, d = b.shape
    w_out = b.new_zeros(bsz, d)
    lam0 = b.abs().amax(-1)
    finished = lam0 <= alpha
    idx = torch.nonzero(~finished).squeeze(-1)
    ss, bb, lam = s[idx], b[idx], lam0[idx]
    k = idx.numel()
    w = b.new_zeros(k, d)
    act = torch.zeros(k, d, dtype=torch.bool, device=b.device)
    sign = b.new_zeros(k, d)
    eye = torch.eye(d, dtype=b.dtype, device=b.device)
    for _ in range(max_steps):
        if idx.numel() == 0:
            break
        dm = act.to(b.dtype)
        m = ss * (dm.unsqueeze(-1) * dm.unsqueeze(-2)) + eye * (1.0 - dm).unsqueeze(-1)
        chol, info = torch.linalg.cholesky_ex(m)  # SPD iff S_AA is
        v = torch.cholesky_solve((dm * sign).unsqueeze(-1), chol).squeeze(-1) * dm
        a = _mv(ss, v)
        c = bb - _mv(ss, w)
        lam_ = lam.unsqueeze(-1)
        num1, num2 = (lam_ - c).clamp_min(0.0), (lam_ + c).clamp_min(0.0)
        inf = torch.full_like(c, float("inf"))
        d1 = torch.where(1.0 - a > 1e-12, num1 / (1.0 - a).clamp_min(1e-12), inf)
        d2 = torch.where(1.0 + a > 1e-12, num2 / (1.0 + a).clamp_min(1e-12), inf)
        dj = torch.where(act, inf, torch.minimum(d1, d2))
        dd = torch.where(act & (w * v < 0), -w / torch.where(v != 0, v, torch.ones_like(v)), inf)
        join_step, join_j = dj.min(-1)
        drop_step, drop_j = dd.min(-1)
        target = lam - alpha
        ok = info == 0
        step = torch.where(ok, torch.minimum(torch.minimum(join_step, drop_step), target), torch.zeros_like(lam))
        w = w + step.unsqueeze(-1) * v
        lam = lam - step
        is_target = (target <= torch.minimum(join_step, drop_step)) & ok
        is_drop = (drop_step < join_step) & ~is_target & ok
        is_join = ~is_drop & ~is_target & ok
        rows = torch.arange(idx.numel(), device=b.device)
        cj = c[rows, join_j] - step * a[rows, join_j]
        act[rows[is_join], join_j[is_join]] = True
        sign[rows[is_join], join_j[is_join]] = torch.sign(cj[is_join])
        act[rows[is_drop], drop_j[is_drop]] = False
        sign[rows[is_drop], drop_j[is_drop]] = 0.0
        w[rows[is_drop], drop_j[is_drop]] = 0.0
        stop = is_target | ~ok
        if bool(stop.any()):
            w_out[idx[stop]] = w[stop]
            finished[idx[is_target]] = True
            keep = ~stop
            idx, ss, bb, lam, w, act, sign = idx[keep], ss[keep], bb[keep], lam[keep], w[keep], act[keep], sign[keep]
    if idx.numel() > 0:
        w_out[idx] = w
    return w_out, finished


def _kkt_ok(s: torch.Tensor, b: torch.Tensor, w: torch.Tensor, alpha: float, rtol: float = 1e-9) -> torch.Tensor:
    """(B,) bool: |b - S w| <= alpha off the support and = alpha sign(w) on it (to rtol)."""
    c = b - _mv(s, w)
    tol = rtol * max(alpha, 1.0) + 1e-12
    on = w != 0
    ok_on = (~on | ((c - alpha * torch.sign(w)).abs() <= tol)).all(-1)
    ok_off = (on | (c.abs() <= alpha + tol)).all(-1)
    return ok_on & ok_off & torch.isfinite(w).all(-1)


def lasso_solve(x: torch.Tensor, y: torch.Tensor, n: torch.Tensor, alpha: float, tol: float = 1e-10,
                max_iter: int = 10_000) -> torch.Tensor:
    """Batched Lasso: x (B,N,d), y (B,N), counts n (B,) (rows >= n zero) -> w (B,d).

    LARS homotopy (exact up to rounding) for every task; tasks whose result fails the KKT check are
    finished by coordinate descent warm-started from it (``lasso_cd``).
    """
    b, _, d = x.shape
    inv_n = 1.0 / n.clamp_min(1.0)
    s = x.transpose(1, 2) @ x * inv_n[:, None, None]
    bb = torch.einsum("bnd,bn->bd", x, y) * inv_n.unsqueeze(-1)
    w, done = lasso_homotopy(s, bb, alpha, max_steps=8 * d + 2 * x.shape[1] + 20)
    bad = ~(done & _kkt_ok(s, bb, w, alpha))
    if bool(bad.any()):
        w[bad] = lasso_cd(x[bad], y[bad], n[bad], alpha, tol, max_iter, w0=w[bad])
    return w


def lasso_cd(x: torch.Tensor, y: torch.Tensor, n: torch.Tensor, alpha: float, tol: float = 1e-10,
             max_iter: int = 10_000, polish_every: int = 10, w0: torch.Tensor | None = None) -> torch.Tensor:
    """Batched Lasso by coordinate descent: x (B,N,d), y (B,N), counts n (B,) (rows >= n zero) -> w (B,d).

    Sweeps in blocks of ``polish_every``; after each block, tasks whose support/signs give an exact KKT
    solution (``_active_set_polish``) or whose last sweep moved no weight by more than tol * max(1, max|w|)
    are finished and dropped from the working batch. Stops after ``max_iter`` sweeps.
    """
    b, _, d = x.shape
    inv_n = 1.0 / n.clamp_min(1.0)
    col = (x * x).sum(1) * inv_n.unsqueeze(-1)  # (B, d): ||x_j||^2 / n
    s_all = x.transpose(1, 2) @ x * inv_n[:, None, None]
    b_all = torch.einsum("bnd,bn->bd", x, y) * inv_n.unsqueeze(-1)
    out = x.new_zeros(b, d)
    idx = torch.arange(b, device=x.device)
    w = x.new_zeros(b, d) if w0 is None else w0.clone()
    r = y - torch.einsum("bnd,bd->bn", x, w)  # residual y - X w
    done_sweeps = 0
    while idx.numel() > 0 and done_sweeps < max_iter:
        k = min(polish_every, max_iter - done_sweeps)
        max_delta = _cd_sweeps(x[idx], r, w, col[idx], inv_n[idx], alpha, k)
        done_sweeps += k
        sol, good = _active_set_polish(s_all[idx], b_all[idx], w, alpha)
        cd_conv = max_delta <= tol * w.abs().amax(-1).clamp_min(1.0)
        out[idx] = torch.where(good.unsqueeze(-1), sol, w)
        keep = ~(good | cd_conv)
        idx, w, r = idx[keep], w[keep], r[keep]
    if idx.numel() > 0:
        out[idx] = w
    return out


@register
class Lasso(LinearAlgorithm):
    """argmin_w (1/(2N)) ||y - X w||^2 + alpha ||w||_1 (= sklearn Lasso(alpha, fit_intercept=False))."""

    kind: ClassVar[str] = "lasso"

    def __init__(self, alpha: float = 0.1, tol: float = 1e-10, max_iter: int = 10_000) -> None:
        self.alpha = check_float("alpha", alpha, 0.0)
        self.tol = check_float("tol", tol, 0.0, strict=True)
        self.max_iter = check_int("max_iter", max_iter, 1)

    def hparams(self) -> dict:
        return {"alpha": self.alpha, "tol": self.tol, "max_iter": self.max_iter}

    def _fit_masked(self, x: torch.Tensor, y: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        return lasso_solve(x, y, n, self.alpha, self.tol, self.max_iter)
