"""Nonlinear in-context regression (Garg et al. 2022): 2-layer ReLU networks and depth-d decision trees.

Conventions follow Garg et al. (arXiv 2208.01066, github.com/dtsip/in-context-learning):

- ``ReLUNet2``: y = sqrt(2/h) * sum_j W2_j relu(W1_j^T x) with every entry of W1 (d, h) and W2 (h,)
  drawn N(0, 1) (h = 100 hidden units). We store the *effective* second layer
  ``w2 = sqrt(2/h) * W2`` (i.e. W2 ~ N(0, 2/h)) so that ``y = relu(x @ w1) @ w2``.
- ``DecisionTree``: a complete binary tree of depth D (default 4); every internal node tests one input
  coordinate drawn uniformly from 0..d-1 against threshold 0 (x_c > 0 goes to the right child), every
  leaf holds a value drawn N(0, 1). Nodes are numbered breadth-first (root 0, children 2n+1, 2n+2).
- ``SineWave`` (von Oswald et al., arXiv 2212.07677, non-linear regression; their released data code):
  y = a * sin(x + phi) with a ~ U(amp_min, amp_max), phi ~ U(0, phase_max), x ~ U(-r/2, r/2), d = 1
  (defaults a in [0.1, 0.5], phi in [0, pi], r = 10 as in that code, which draws a and phi from one random key;
  here they are independent).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from pydantic import Field, model_validator

from mesaopt.tasks import register
from mesaopt.tasks.base import Task, TaskBatch, XDist, check_sample_args, default_generator, sample_x


def relu_net2_forward(xs: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """(B, T, d), (B, d, h), (B, h) -> y (B, T) = relu(xs @ w1) @ w2."""
    return torch.einsum("bth,bh->bt", torch.relu(torch.bmm(xs, w1)), w2)


def tree_forward(xs: torch.Tensor, coords: torch.Tensor, leaves: torch.Tensor) -> torch.Tensor:
    """(B, T, d), coords (B, 2^D - 1) int, leaves (B, 2^D) -> y (B, T) by descending the trees."""
    n_internal = coords.shape[1]
    depth = int(round(math.log2(n_internal + 1)))
    b, t, _ = xs.shape
    node = torch.zeros(b, t, dtype=torch.long, device=xs.device)
    for _ in range(depth):  # loop over tree levels, batched over tasks and points
        c = coords.gather(1, node)  # (B, T) coordinate tested at the current node
        right = (xs.gather(2, c.unsqueeze(-1)).squeeze(-1) > 0).long()
        node = 2 * node + 1 + right
    return leaves.gather(1, node - n_internal)


class _RandomFunction(Task):
    """Shared fields and sampling of the function families: draw params, then xs, then y = f(xs) + noise."""

    kind: ClassVar[str] = "_random_function"
    d: int = Field(20, ge=1, description="input dimension")
    noise_std: float = Field(0.0, ge=0.0, description="std of Gaussian label noise")
    x_dist: XDist = Field("gaussian", description="gaussian | uniform (anisotropic is not supported here)")
    input_range: float = Field(2.0, gt=0.0, description="uniform x ~ U(-r/2, r/2)^d")

    def sample_params(self, batch_size: int, g: torch.Generator, device: torch.device | str,
                      dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """One function per sequence: tensors with leading dimension B (see the subclass)."""
        raise NotImplementedError

    def sample(self, batch_size: int, n_points: int, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> TaskBatch:
        """xs (B, T, d), ys (B, T) = f(xs) (+ noise), params of ``sample_params``."""
        check_sample_args(batch_size, n_points)
        g = default_generator(generator, device)
        params = self.sample_params(batch_size, g, device, dtype)
        xs = sample_x(self.x_dist, batch_size, n_points, self.d, g, device, dtype, self.input_range)
        ys = self.evaluate(xs, params)
        if self.noise_std > 0:
            ys = ys + self.noise_std * torch.randn(ys.shape, generator=g, device=device, dtype=dtype)
        return TaskBatch(xs, ys, params)


@register
class ReLUNet2(_RandomFunction):
    """y = relu(x^T W1) w2 with W1 ~ N(0, 1)^(d x h), w2 ~ N(0, 2/h)^h (Garg's 2-layer ReLU network)."""

    kind: ClassVar[str] = "relu2"

    hidden: int = Field(100, ge=1, description="hidden units h of the target network")
    scale: float = Field(1.0, gt=0.0, description="multiplies the output (Garg's `scale`)")

    def evaluate(self, xs: torch.Tensor, params: dict) -> torch.Tensor:
        """Noise-free labels of sampled networks: xs (B, T, d), params {"w1", "w2"} -> ys (B, T)."""
        return relu_net2_forward(xs, params["w1"], params["w2"])

    def sample_params(self, batch_size: int, g: torch.Generator, device: torch.device | str,
                      dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """{"w1": (B, d, h), "w2": (B, h)} (w2 includes sqrt(2/h) * scale)."""
        w1 = torch.randn(batch_size, self.d, self.hidden, generator=g, device=device, dtype=dtype)
        w2 = torch.randn(batch_size, self.hidden, generator=g, device=device, dtype=dtype)
        return {"w1": w1, "w2": w2 * (math.sqrt(2.0 / self.hidden) * self.scale)}


@register
class DecisionTree(_RandomFunction):
    """Depth-D binary tree: node tests x_c > 0 for a uniform random coordinate c, leaves ~ N(0, 1)."""

    kind: ClassVar[str] = "tree"

    depth: int = Field(4, ge=1, le=16, description="depth D of the tree (2^D leaves)")

    def evaluate(self, xs: torch.Tensor, params: dict) -> torch.Tensor:
        """Noise-free labels of sampled trees: xs (B, T, d), params {"coords", "leaves"} -> ys (B, T)."""
        return tree_forward(xs, params["coords"], params["leaves"])

    def sample_params(self, batch_size: int, g: torch.Generator, device: torch.device | str,
                      dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """{"coords": (B, 2^D - 1) long, "leaves": (B, 2^D)}."""
        n_leaves = 2**self.depth
        coords = torch.randint(0, self.d, (batch_size, n_leaves - 1), generator=g, device=device)
        leaves = torch.randn(batch_size, n_leaves, generator=g, device=device, dtype=dtype)
        return {"coords": coords, "leaves": leaves}


@register
class SineWave(_RandomFunction):
    """y = a sin(x + phi), a ~ U(amp_min, amp_max), phi ~ U(0, phase_max), x ~ U(-r/2, r/2) (d = 1)."""

    kind: ClassVar[str] = "sine"

    d: int = Field(1, ge=1, le=1, description="input dimension (sine waves are 1-D)")
    x_dist: XDist = Field("uniform", description="uniform (von Oswald) | gaussian")
    input_range: float = Field(10.0, gt=0.0, description="uniform x ~ U(-r/2, r/2)")
    amp_min: float = Field(0.1, ge=0.0, description="smallest amplitude a")
    amp_max: float = Field(0.5, gt=0.0, description="largest amplitude a (>= amp_min)")
    phase_max: float = Field(math.pi, ge=0.0, description="phase phi ~ U(0, phase_max)")

    @model_validator(mode="after")
    def _amps(self) -> SineWave:
        if self.amp_max < self.amp_min:
            raise ValueError(f"amp_max ({self.amp_max}) must be >= amp_min ({self.amp_min})")
        return self

    def evaluate(self, xs: torch.Tensor, params: dict) -> torch.Tensor:
        """Noise-free labels: xs (B, T, 1), params {"amp": (B,), "phase": (B,)} -> ys (B, T)."""
        return params["amp"].unsqueeze(-1) * torch.sin(xs[..., 0] + params["phase"].unsqueeze(-1))

    def sample_params(self, batch_size: int, g: torch.Generator, device: torch.device | str,
                      dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """{"amp": (B,), "phase": (B,)}."""
        u = torch.rand(2, batch_size, generator=g, device=device, dtype=dtype)
        return {"amp": self.amp_min + (self.amp_max - self.amp_min) * u[0], "phase": self.phase_max * u[1]}
