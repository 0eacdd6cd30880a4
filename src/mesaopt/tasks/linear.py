"""In-context linear regression: y = w^T x + noise, with dense, k-sparse or finite-pool weights."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field, PrivateAttr, model_validator

from mesaopt.tasks.base import (
    Task,
    TaskBatch,
    XDist,
    check_sample_args,
    default_generator,
    random_rotation,
    sample_x,
    spectrum,
)


class LinearRegression(Task):
    """y = w^T x + noise_std * eps, w ~ N(0, w_scale^2 I) (optionally k-sparse or from a pool of M)."""

    kind: ClassVar[str] = "linear"

    d: int = Field(10, ge=1, description="input dimension")
    noise_std: float = Field(0.0, ge=0.0, description="std of Gaussian label noise")
    x_dist: XDist = Field("gaussian", description="gaussian | uniform | anisotropic")
    input_range: float = Field(2.0, gt=0.0, description="uniform x ~ U(-r/2, r/2)^d")
    eigenvalues: list[float] | None = Field(None, description="anisotropic covariance spectrum (d values)")
    condition_number: float | None = Field(None, ge=1.0, description="anisotropic: kappa of the covariance")
    rotation_seed: int = Field(0, description="seed of the random rotation of the anisotropic covariance")
    w_scale: float = Field(1.0, gt=0.0, description="prior std of each weight")
    sparsity: int | None = Field(None, ge=1, description="k: number of non-zero weights (None = dense)")
    n_tasks: int | None = Field(None, ge=1, description="finite task pool size M (None = fresh w per sequence)")
    pool_seed: int = Field(1234, description="seed from which the pool of M weight vectors is drawn once")

    _cov_sqrt: torch.Tensor | None = PrivateAttr(None)
    _pool: torch.Tensor | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _check(self) -> LinearRegression:
        if self.sparsity is not None and self.sparsity > self.d:
            raise ValueError(f"sparsity must be <= d={self.d}, got {self.sparsity}")
        if self.x_dist == "anisotropic" and self.eigenvalues is None and self.condition_number is None:
            raise ValueError("x_dist='anisotropic' needs eigenvalues or condition_number")
        if self.eigenvalues is not None and len(self.eigenvalues) != self.d:
            raise ValueError(f"eigenvalues must have d={self.d} entries, got {len(self.eigenvalues)}")
        return self

    def model_post_init(self, __context: object) -> None:
        if self.x_dist == "anisotropic":
            ev = spectrum(self.d, self.eigenvalues, self.condition_number)
            rot = random_rotation(self.d, self.rotation_seed)
            object.__setattr__(self, "_cov_sqrt", (rot * ev.sqrt().unsqueeze(0)))
        if self.n_tasks is not None:
            g = torch.Generator().manual_seed(self.pool_seed)
            object.__setattr__(self, "_pool", self._draw_w(self.n_tasks, g, "cpu", torch.float64))

    @property
    def covariance(self) -> torch.Tensor:
        """Covariance of x (d, d), float64."""
        if self.x_dist == "gaussian":
            return torch.eye(self.d, dtype=torch.float64)
        if self.x_dist == "uniform":
            return torch.eye(self.d, dtype=torch.float64) * self.input_range**2 / 12.0
        assert self._cov_sqrt is not None
        return self._cov_sqrt @ self._cov_sqrt.T

    @property
    def pool(self) -> torch.Tensor | None:
        """The finite task pool (M, d) in float64, or None for the continuous prior."""
        return self._pool

    def _draw_w(self, n: int, g: torch.Generator, device, dtype) -> torch.Tensor:
        w = torch.randn(n, self.d, generator=g, device=device, dtype=dtype) * self.w_scale
        if self.sparsity is not None and self.sparsity < self.d:
            scores = torch.rand(n, self.d, generator=g, device=device)
            keep = scores.argsort(dim=1)[:, : self.sparsity]
            mask = torch.zeros(n, self.d, device=device, dtype=dtype).scatter_(1, keep, 1.0)
            w = w * mask
        return w

    def sample_w(self, batch_size: int, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Weights (B, d): fresh draws from the prior, or uniform draws from the pool."""
        g = default_generator(generator, device)
        if self._pool is None:
            return self._draw_w(batch_size, g, device, dtype)
        idx = torch.randint(0, self._pool.shape[0], (batch_size,), generator=g, device=device)
        return self._pool.to(device=device, dtype=dtype)[idx]

    def sample(self, batch_size: int, n_points: int, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> TaskBatch:
        """Draw sequences: xs (B, T, d), ys (B, T), params {"w": (B, d)}."""
        check_sample_args(batch_size, n_points)
        g = default_generator(generator, device)
        w = self.sample_w(batch_size, g, device, dtype)
        xs = sample_x(self.x_dist, batch_size, n_points, self.d, g, device, dtype,
                      self.input_range, self._cov_sqrt)
        ys = torch.einsum("btd,bd->bt", xs, w)
        if self.noise_std > 0:
            ys = ys + self.noise_std * torch.randn(ys.shape, generator=g, device=device, dtype=dtype)
        return TaskBatch(xs, ys, {"w": w})


