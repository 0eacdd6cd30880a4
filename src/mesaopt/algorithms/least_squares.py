"""Least squares learners: min-norm OLS, ridge (sum-normalised) and the Bayes posterior mean (BayesRidge).

Prefix predictions use exact rank-one recursions over t, vectorised over the batch, in float64:
Greville's pseudo-inverse recursion for min-norm OLS (correct for t < d) and recursive least squares
(Sherman-Morrison) for ridge. Both cost O(T * B * d^2) time and O(B * d^2) memory.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from mesaopt.algorithms.base import LinearAlgorithm, check_float, register
from mesaopt.errors import ConfigError

# A new example opens a new direction of the row space when ||P x||^2 > GREVILLE_TOL * ||x||^2.
GREVILLE_TOL = 1e-10


def min_norm_lstsq(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Minimum-norm least squares w = pinv(X) y: x (B, N, d), y (B, N) -> (B, d)."""
    b, n, d = x.shape
    if n == 0:
        return x.new_zeros(b, d)
    return (torch.linalg.pinv(x) @ y.unsqueeze(-1)).squeeze(-1)


def ridge_solve(x: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    """w = (X^T X + lam I)^{-1} X^T y (lam > 0): x (B, N, d), y (B, N) -> (B, d)."""
    d = x.shape[-1]
    a = x.transpose(1, 2) @ x + lam * torch.eye(d, dtype=x.dtype, device=x.device)
    return torch.linalg.solve(a, (x.transpose(1, 2) @ y.unsqueeze(-1))).squeeze(-1)


def _outer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a.unsqueeze(-1) * b.unsqueeze(-2)


def greville_prefix_weights(xs: torch.Tensor, ys: torch.Tensor, tol: float = GREVILLE_TOL) -> torch.Tensor:
    """Min-norm LS weights of every prefix: xs (B, T, d), ys (B, T) -> W (B, T, d), row t fitted on 0..t-1.

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
    """Ridge weights of every prefix by recursive least squares: (B,T,d), (B,T) -> W (B,T,d) (lam > 0)."""
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
class OLS(LinearAlgorithm):
    """Minimum-norm least squares w = pinv(X) y (the interpolant of least norm when N < d)."""

    kind: ClassVar[str] = "ols"

    def _fit(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return min_norm_lstsq(x, y)

    def _fit_masked(self, x: torch.Tensor, y: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        return min_norm_lstsq(x, y)  # zero rows do not change the min-norm solution

    def _prefix_weights(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        return greville_prefix_weights(xs, ys)


@register
class Ridge(LinearAlgorithm):
    """w = (X^T X + lam I)^{-1} X^T y (sum-normalised, = sklearn Ridge(alpha=lam, fit_intercept=False)).

    ``lam = 0`` is the limit lam -> 0+, i.e. min-norm OLS.
    """

    kind: ClassVar[str] = "ridge"

    def __init__(self, lam: float = 1.0) -> None:
        self.lam = check_float("lam", lam, 0.0)

    def hparams(self) -> dict:
        return {"lam": self.lam}

    def _fit(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ridge_solve(x, y, self.lam) if self.lam > 0 else min_norm_lstsq(x, y)

    def _fit_masked(self, x: torch.Tensor, y: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        return self._fit(x, y)

    def _prefix_weights(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        return rls_prefix_weights(xs, ys, self.lam) if self.lam > 0 else greville_prefix_weights(xs, ys)


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
