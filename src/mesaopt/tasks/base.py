"""Task protocol, TaskBatch and the x-distributions shared by every task family."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict

from mesaopt.errors import ConfigError, ShapeError

XDist = Literal["gaussian", "uniform", "anisotropic"]


@dataclass
class TaskBatch:
    """A batch of in-context sequences: xs (B, T, d), ys (B, T) and per-task params (e.g. w (B, d))."""

    xs: torch.Tensor
    ys: torch.Tensor
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.xs.dim() != 3 or self.ys.dim() != 2 or self.xs.shape[:2] != self.ys.shape:
            raise ShapeError(
                f"TaskBatch needs xs (B, T, d) and ys (B, T); got xs {tuple(self.xs.shape)}, "
                f"ys {tuple(self.ys.shape)}"
            )

    @property
    def batch_size(self) -> int:
        return self.xs.shape[0]

    @property
    def n_points(self) -> int:
        return self.xs.shape[1]

    @property
    def d(self) -> int:
        return self.xs.shape[2]

    def split(self, n_context: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """First ``n_context`` points are context, the rest queries: (B,N,d) (B,N) (B,Q,d) (B,Q)."""
        if not 0 <= n_context < self.n_points:
            raise ShapeError(f"n_context must be in [0, {self.n_points - 1}] for a batch of "
                             f"{self.n_points} points, got {n_context}")
        n = n_context
        return self.xs[:, :n], self.ys[:, :n], self.xs[:, n:], self.ys[:, n:]

    def to(self, device: torch.device | str) -> TaskBatch:
        """Move every tensor of the batch to ``device``."""
        params = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.params.items()}
        return TaskBatch(self.xs.to(device), self.ys.to(device), params)


class Task(BaseModel):
    """Base class of all task samplers: a validated, serialisable spec plus ``sample``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)
    kind: ClassVar[str] = "base"

    def sample(self, batch_size: int, n_points: int, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> TaskBatch:
        """Draw ``batch_size`` sequences of ``n_points`` (x, y) pairs: xs (B, T, d), ys (B, T)."""
        raise NotImplementedError

    def spec(self) -> dict:
        """A JSON-able dict from which ``mesaopt.tasks.build`` rebuilds this task."""
        return {"kind": self.kind, **self.model_dump()}


def check_sample_args(batch_size: int, n_points: int) -> None:
    """Raise ConfigError unless batch_size >= 1 and n_points >= 1."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not isinstance(n_points, int) or n_points < 1:
        raise ConfigError(f"n_points must be an integer >= 1, got {n_points!r}")


def default_generator(generator: torch.Generator | None, device: torch.device | str) -> torch.Generator:
    """Return ``generator`` or a fresh one seeded with 0 on ``device`` (explicit seeds everywhere)."""
    if generator is not None:
        return generator
    return torch.Generator(device=device).manual_seed(0)


def spectrum(d: int, eigenvalues: list[float] | None, condition_number: float | None) -> torch.Tensor:
    """Covariance eigenvalues (d,): given, or geometric from 1 to 1/kappa, normalised to mean 1."""
    if eigenvalues is not None:
        ev = torch.tensor(eigenvalues, dtype=torch.float64)
        if ev.numel() != d:
            raise ConfigError(f"eigenvalues must have d={d} entries, got {ev.numel()}")
        if (ev <= 0).any():
            raise ConfigError("eigenvalues must all be > 0")
        return ev
    kappa = 1.0 if condition_number is None else float(condition_number)
    ev = torch.logspace(0.0, -math.log10(kappa), d, dtype=torch.float64) if d > 1 else torch.ones(1)
    return ev * (d / ev.sum())


def random_rotation(d: int, seed: int) -> torch.Tensor:
    """A Haar-random orthogonal matrix (d, d) drawn from ``seed`` (float64)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


def sample_x(dist: str, batch_size: int, n_points: int, d: int, generator: torch.Generator,
             device: torch.device | str, dtype: torch.dtype, input_range: float = 2.0,
             cov_sqrt: torch.Tensor | None = None) -> torch.Tensor:
    """Inputs (B, T, d): gaussian N(0, I), uniform U(-r/2, r/2)^d, or anisotropic N(0, S S^T)."""
    shape = (batch_size, n_points, d)
    if dist == "gaussian":
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    if dist == "uniform":
        u = torch.rand(shape, generator=generator, device=device, dtype=dtype)
        return (u - 0.5) * input_range
    if dist == "anisotropic":
        if cov_sqrt is None:
            raise ConfigError("x_dist='anisotropic' needs eigenvalues or condition_number")
        z = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        return z @ cov_sqrt.to(device=device, dtype=dtype).T
    raise ConfigError(f"x_dist must be one of gaussian, uniform, anisotropic; got {dist!r}")
