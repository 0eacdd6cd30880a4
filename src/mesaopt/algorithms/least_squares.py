"""Least squares learners: min-norm OLS, ridge (sum-normalised) and the Bayes posterior mean (BayesRidge).

Fits are Cholesky solves of the (primal or dual) Gram in float64, chunked over tasks with the batch as the
innermost dimension (:mod:`mesaopt.algorithms.kernels`); OLS tasks that are rank-deficient or ill-conditioned
fall back to pinv. Prefix predictions use exact rank-one recursions over t, vectorised over the batch, in
float64: Greville's pseudo-inverse recursion for min-norm OLS (correct for t < d) and recursive least squares
(Sherman-Morrison) for ridge. Both cost O(T * B * d^2) time and O(chunk * d^2) memory. The batch-first
``greville_prefix_weights`` / ``rls_prefix_weights`` are kept as slow references for the tests.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from mesaopt.algorithms.base import LinearAlgorithm, check_fit_inputs, check_float, register
from mesaopt.algorithms.kernels import (
    dual_solve,
    gram_solve,
    greville_prefix,
    ridge_prefix_predictions,
    rls_prefix,
    task_chunk,
)
from mesaopt.errors import ConfigError
from mesaopt.learner import check_learner_inputs, check_prefix_inputs

# A new example opens a new direction of the row space when ||P x||^2 > GREVILLE_TOL * ||x||^2.
GREVILLE_TOL = 1e-10


# Normal-equation / dual Cholesky paths accept a task when every pivot U_jj^2 > CHOL_RTOL * max diag of its Gram
# (so cond(Gram) is moderate and the result matches pinv to ~1e-9 relative); other tasks fall back to pinv.
CHOL_RTOL = 1e-7


def _pinv_solve(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (torch.linalg.pinv(x) @ y.unsqueeze(-1)).squeeze(-1)


def _fit_chunk(n: int, d: int) -> int:
    return task_chunk(n * (d + 1) + (max(n, d) + 1) ** 2)


def _prefix_chunk(n: int, d: int) -> int:
    return task_chunk(3 * n * d + 4 * d * d)


def min_norm_lstsq(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Minimum-norm least squares w = pinv(X) y: x (B, N, d), y (B, N) (any float dtype) -> float64 (B, d).

    N >= d: normal equations by Cholesky plus one refinement step; N < d: the dual form X^T (X X^T)^{-1} y by
    Cholesky (both batch-last, :mod:`mesaopt.algorithms.kernels`). Tasks whose Gram is singular or ill-conditioned
    (a Cholesky pivot <= CHOL_RTOL * its largest diagonal entry) are recomputed with pinv (SVD), so the semantics
    stay pinv(X) y.
    """
    b, n, d = x.shape
    if n == 0 or b == 0:
        return torch.zeros(b, d, dtype=torch.float64, device=x.device)
    if n >= d:
        w, ok = gram_solve(x, y, 0.0, CHOL_RTOL, _fit_chunk(n, d), refine=True)
    else:
        w, ok = dual_solve(x, y, CHOL_RTOL, _fit_chunk(n, d))
    ok &= torch.isfinite(w).all(-1)
    if not bool(ok.all()):
        bad = ~ok
        w[bad] = _pinv_solve(x[bad].double(), y[bad].double())
    return w


def ridge_solve(x: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    """w = (X^T X + lam I)^{-1} X^T y (lam > 0): x (B, N, d), y (B, N) (any float dtype) -> float64 (B, d)."""
    b, n, d = x.shape
    if b == 0:
        return torch.zeros(0, d, dtype=torch.float64, device=x.device)
    return gram_solve(x, y, lam, 0.0, _fit_chunk(n, d))[0]


class _ChunkedLeastSquares(LinearAlgorithm):
    """Fit / predict / prefix straight from the input dtype, chunked over tasks inside the kernels (no float64
    copy of the whole batch); subclasses define ``_solve(x, y) -> w float64`` and ``_prefix_kernel``."""

    def __call__(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> torch.Tensor:
        """ctx_x (B, N, d), ctx_y (B, N), qry_x (B, Q, d) -> predictions (B, Q)."""
        check_learner_inputs(ctx_x, ctx_y, qry_x)
        w = self._fit_any(ctx_x, ctx_y)
        return (qry_x.to(torch.float64) * w.unsqueeze(1)).sum(-1).to(qry_x.dtype)

    def fit(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor) -> torch.Tensor:
        """ctx_x (B, N, d), ctx_y (B, N) -> fitted weights w (B, d)."""
        check_fit_inputs(ctx_x, ctx_y)
        return self._fit_any(ctx_x, ctx_y).to(ctx_x.dtype)

    def prefix(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """xs (B, T, d), ys (B, T) -> (B, T): prediction at t from examples 0..t-1 (one batched pass)."""
        check_prefix_inputs(xs, ys)
        if _wants_grad(xs, ys):
            return (xs.to(torch.float64) * self._prefix_weights_autograd(xs, ys)).sum(-1).to(xs.dtype)
        return self._prefix_kernel(xs, ys, False).to(xs.dtype)

    def prefix_weights(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """xs (B, T, d), ys (B, T) -> W (B, T, d): weights fitted on examples 0..t-1 (row t)."""
        check_prefix_inputs(xs, ys)
        if _wants_grad(xs, ys):
            return self._prefix_weights_autograd(xs, ys).to(xs.dtype)
        return self._prefix_kernel(xs, ys, True).to(xs.dtype)

    def _fit(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._solve(x, y)

    def _fit_masked(self, x: torch.Tensor, y: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        return self._solve(x, y)  # zero rows change neither the min-norm nor the ridge solution

    def _prefix_weights(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        return self._prefix_kernel(xs, ys, True)

    def _prefix(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        return self._prefix_kernel(xs, ys, False)

    def _fit_any(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._solve_autograd(x, y) if _wants_grad(x, y) else self._solve(x, y)

    def _solve(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _prefix_kernel(self, xs: torch.Tensor, ys: torch.Tensor, weights: bool) -> torch.Tensor:
        raise NotImplementedError

    def _solve_autograd(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Differentiable float64 fit (used when the context requires grad; the fast kernels write in place)."""
        return _pinv_solve(x.double(), y.double())

    def _prefix_weights_autograd(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Differentiable float64 prefix weights (B, T, d) by the batch-first reference recursion."""
        return greville_prefix_weights(xs.double(), ys.double())


def _wants_grad(*ts: torch.Tensor) -> bool:
    """True when autograd must see through the fit (grad mode on and an input requires grad)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in ts)


def _outer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a.unsqueeze(-1) * b.unsqueeze(-2)


def greville_prefix_weights(xs: torch.Tensor, ys: torch.Tensor, tol: float = GREVILLE_TOL) -> torch.Tensor:
    """Min-norm LS weights of every prefix: xs (B, T, d), ys (B, T) -> W (B, T, d), row t fitted on 0..t-1.

    Reference implementation (batch-first, one allocation per op); the learners use the equivalent batch-last
    kernel :func:`mesaopt.algorithms.kernels.greville_prefix_bl`, tested against this.

    Greville's row-appending recursion for A^+ with A = X_t, keeping w = A^+ y, P = I - A^+ A (projector on
    the null space of A) and G = (A^T A)^+. A new row x with c = P x != 0 gives k = c / ||c||^2 and
    w += k e, G += -Gx k^T - k (Gx)^T + (1 + x^T G x) k k^T, P -= c c^T / ||c||^2; otherwise (x in the row
    space) the Sherman-Morrison step b = Gx / (1 + x^T G x), w += b e, G -= Gx (Gx)^T / (1 + x^T G x).
    """
    b, t, d = xs.shape
    w = xs.new_zeros(b, d)
    p = torch.eye(d, dtype=xs.dtype, device=xs.device).expand(b, d, d).clone()
    g = xs.new_zeros(b, d, d)
    out = xs.new_empty(b, t, d)
    for s in range(t):
        out[:, s] = w
        x, y = xs[:, s], ys[:, s]
        e = y - (x * w).sum(-1)
        c = (p @ x.unsqueeze(-1)).squeeze(-1)
        cc, xx = (c * c).sum(-1), (x * x).sum(-1)
        new = cc > tol * xx
        gx = (g @ x.unsqueeze(-1)).squeeze(-1)
        denom = 1.0 + (x * gx).sum(-1)
        # new direction (Greville)
        k = c / torch.where(new, cc, torch.ones_like(cc)).unsqueeze(-1)
        w_new = w + k * e.unsqueeze(-1)
        g_new = g - _outer(gx, k) - _outer(k, gx) + denom[:, None, None] * _outer(k, k)
        p_new = p - _outer(k, c)
        p_new = 0.5 * (p_new + p_new.transpose(1, 2))
        # direction already spanned (recursive least squares)
        bb = gx / denom.unsqueeze(-1)
        w_old = w + bb * e.unsqueeze(-1)
        g_old = g - _outer(bb, gx)
        m1, m2 = new.unsqueeze(-1), new[:, None, None]
        w = torch.where(m1, w_new, w_old)
        g = torch.where(m2, g_new, g_old)
        p = torch.where(m2, p_new, p)
    return out


def rls_prefix_weights(xs: torch.Tensor, ys: torch.Tensor, lam: float) -> torch.Tensor:
    """Ridge weights of every prefix by recursive least squares: (B,T,d), (B,T) -> W (B,T,d) (lam > 0).

    Reference implementation; the learners use :func:`mesaopt.algorithms.kernels.rls_prefix_bl`.
    """
    b, t, d = xs.shape
    w = xs.new_zeros(b, d)
    g = (torch.eye(d, dtype=xs.dtype, device=xs.device) / lam).expand(b, d, d).clone()
    out = xs.new_empty(b, t, d)
    for s in range(t):
        out[:, s] = w
        x, y = xs[:, s], ys[:, s]
        gx = (g @ x.unsqueeze(-1)).squeeze(-1)
        denom = 1.0 + (x * gx).sum(-1)
        e = y - (x * w).sum(-1)
        w = w + gx * (e / denom).unsqueeze(-1)
        g = g - _outer(gx, gx) / denom[:, None, None]
    return out


@register
class OLS(_ChunkedLeastSquares):
    """Minimum-norm least squares w = pinv(X) y (the interpolant of least norm when N < d)."""

    kind: ClassVar[str] = "ols"

    def _solve(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return min_norm_lstsq(x, y)

    def _prefix_kernel(self, xs: torch.Tensor, ys: torch.Tensor, weights: bool) -> torch.Tensor:
        b, t, d = xs.shape
        return greville_prefix(xs, ys, GREVILLE_TOL, weights, _prefix_chunk(t, d))


@register
class Ridge(_ChunkedLeastSquares):
    """w = (X^T X + lam I)^{-1} X^T y (sum-normalised, = sklearn Ridge(alpha=lam, fit_intercept=False)).

    ``lam = 0`` is the limit lam -> 0+, i.e. min-norm OLS.
    """

    kind: ClassVar[str] = "ridge"

    def __init__(self, lam: float = 1.0) -> None:
        self.lam = check_float("lam", lam, 0.0)

    def hparams(self) -> dict:
        return {"lam": self.lam}

    def _solve(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ridge_solve(x, y, self.lam) if self.lam > 0 else min_norm_lstsq(x, y)

    def _solve_autograd(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.lam == 0:
            return super()._solve_autograd(x, y)
        x, y = x.double(), y.double()
        a = x.transpose(1, 2) @ x + self.lam * torch.eye(x.shape[-1], dtype=x.dtype, device=x.device)
        return torch.linalg.solve(a, (x.transpose(1, 2) @ y.unsqueeze(-1))).squeeze(-1)

    def _prefix_weights_autograd(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        if self.lam == 0:
            return super()._prefix_weights_autograd(xs, ys)
        return rls_prefix_weights(xs.double(), ys.double(), self.lam)

    def _prefix_kernel(self, xs: torch.Tensor, ys: torch.Tensor, weights: bool) -> torch.Tensor:
        b, t, d = xs.shape
        if self.lam > 0 and not weights:
            return ridge_prefix_predictions(xs, ys, self.lam, task_chunk(2 * t * (t + 1) + t * d))
        if self.lam > 0:
            return rls_prefix(xs, ys, self.lam, weights, _prefix_chunk(t, d))
        return greville_prefix(xs, ys, GREVILLE_TOL, weights, _prefix_chunk(t, d))


@register
class BayesRidge(Ridge):
    """Posterior mean of w under w ~ N(0, w_scale^2 I), y = w^T x + N(0, noise_std^2): ridge with
    lam = noise_std^2 / w_scale^2 (lam = 0: min-norm interpolant, the noiseless limit)."""

    kind: ClassVar[str] = "bayes_ridge"

    @classmethod
    def for_task(cls, task) -> BayesRidge:
        """The Bayes-optimal (posterior-mean) learner of a dense Gaussian ``tasks.LinearRegression``."""
        if getattr(task, "kind", None) != "linear":
            raise ConfigError(f"BayesRidge.for_task needs a 'linear' task, got kind {getattr(task, 'kind', None)!r}")
        if task.sparsity is not None and task.sparsity < task.d:
            raise ConfigError("BayesRidge.for_task: task.sparsity must be None (ridge is not Bayes-optimal "
                              "for sparse w; use Lasso)")
        if task.n_tasks is not None:
            raise ConfigError("BayesRidge.for_task: task.n_tasks must be None (for a finite pool the "
                              "Bayes-optimal learner is DMMSE.for_task)")
        return cls(lam=float(task.noise_std) ** 2 / float(task.w_scale) ** 2)
