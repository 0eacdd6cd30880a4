"""Kernel ridge regression with an RBF kernel, batched over tasks (a non-parametric in-context baseline).

For one task with context (X, y): k(a, b) = exp(-||a - b||^2 / (2 h^2)), alpha = (K + lam I)^{-1} y and the
prediction at x_q is sum_i k(x_q, x_i) alpha_i (scikit-learn's ``KernelRidge(alpha=lam, kernel="rbf",
gamma=1/(2 h^2))``). All B tasks are solved with one batched ``torch.linalg.solve`` in float64.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

from mesaopt.algorithms.base import check_float
from mesaopt.learner import check_learner_inputs

__all__ = ["rbf_kernel", "rbf_kernel_ridge", "fit_rbf_kernel_ridge"]


def rbf_kernel(a: torch.Tensor, b: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """exp(-||a_i - b_j||^2 / (2 h^2)): a (B, M, d), b (B, N, d) -> (B, M, N)."""
    sq = (a.unsqueeze(-2) - b.unsqueeze(-3)).pow(2).sum(-1)
    return torch.exp(-sq / (2.0 * bandwidth**2))


def rbf_kernel_ridge(ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor, lam: float,
                     bandwidth: float) -> torch.Tensor:
    """Kernel ridge predictions (float64 inside): (B,N,d), (B,N), (B,Q,d) -> (B, Q) in qry_x's dtype."""
    check_learner_inputs(ctx_x, ctx_y, qry_x)
    lam = check_float("lam", lam, 0.0)
    bandwidth = check_float("bandwidth", bandwidth, 0.0, strict=True)
    x, y, q = ctx_x.double(), ctx_y.double(), qry_x.double()
    k = rbf_kernel(x, x, bandwidth)
    eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    alpha = torch.linalg.solve(k + lam * eye, y.unsqueeze(-1))  # (B, N, 1)
    return (rbf_kernel(q, x, bandwidth) @ alpha).squeeze(-1).to(qry_x.dtype)


def fit_rbf_kernel_ridge(ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor, qry_y: torch.Tensor,
                         lams: Sequence[float], bandwidths: Sequence[float]) -> tuple[float, float, float]:
    """(lam, bandwidth, mean squared query error) of the best grid pair on one batch (B,N,d),(B,N),(B,Q,d),(B,Q)."""
    best = (float("nan"), float("nan"), float("inf"))
    for lam, h in itertools.product(lams, bandwidths):
        err = float((rbf_kernel_ridge(ctx_x, ctx_y, qry_x, lam, h).double() - qry_y.double()).pow(2).mean())
        if err < best[2]:
            best = (float(lam), float(h), err)
    return best
