"""Iterative Newton (Newton-Schulz) least squares, as in Fu et al. (arXiv 2310.17086).

S = X^T X, M_0 = alpha S, M_{k+1} = 2 M_k - M_k S M_k, w_k = M_k X^T y (k = 0..steps).
The paper writes alpha = 2 / ||S S^T||_2; with the spectral norm exactly, the top eigendirection has error
factor 1 - alpha lambda_max^2 = -1, which the iteration (error E_{k+1} = E_k^2) never shrinks, so w_k
never acquires that component. The authors' public code uses the Frobenius norm (torch.linalg.norm's
default), alpha = 2 / ||S S^T||_F <= 2 / ||S S^T||_2, which converges to the min-norm OLS solution; that
is our default (``norm="fro"``); ``norm="spectral"`` gives the formula as printed.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from mesaopt.algorithms.base import check_int, register
from mesaopt.algorithms.gradient import IterativeLinear
from mesaopt.errors import ConfigError


def newton_trajectory(x: torch.Tensor, y: torch.Tensor, steps: int, norm: str = "fro") -> torch.Tensor:
    """Iterative Newton weights w_0..w_steps: x (B, N, d), y (B, N) -> (B, steps+1, d); empty context -> 0."""
    s = x.transpose(1, 2) @ x
    xty = (x.transpose(1, 2) @ y.unsqueeze(-1)).squeeze(-1)
    ss = s @ s.transpose(1, 2)
    if norm == "fro":
        nrm = torch.linalg.matrix_norm(ss, ord="fro")
    else:
        nrm = torch.linalg.matrix_norm(ss, ord=2)
    alpha = torch.where(nrm > 0, 2.0 / torch.where(nrm > 0, nrm, torch.ones_like(nrm)), torch.zeros_like(nrm))
    m = alpha[:, None, None] * s
    traj = [(m @ xty.unsqueeze(-1)).squeeze(-1)]
    for _ in range(steps):
        m = 2.0 * m - m @ s @ m
        traj.append((m @ xty.unsqueeze(-1)).squeeze(-1))
    return torch.stack(traj, dim=1)


@register
class IterativeNewton(IterativeLinear):
    """``steps`` Newton-Schulz iterations towards (X^T X)^+ from M_0 = alpha X^T X; w = M_steps X^T y."""

    kind: ClassVar[str] = "newton"

    def __init__(self, steps: int = 3, norm: str = "fro") -> None:
        self.steps = check_int("steps", steps, 0)
        if norm not in ("fro", "spectral"):
            raise ConfigError(f"norm must be one of 'fro', 'spectral'; got {norm!r}")
        self.norm = norm

    def hparams(self) -> dict:
        return {"steps": self.steps, "norm": self.norm}

    def _trajectory_masked(self, x: torch.Tensor, y: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        return newton_trajectory(x, y, self.steps, self.norm)  # zero rows change neither S nor X^T y
