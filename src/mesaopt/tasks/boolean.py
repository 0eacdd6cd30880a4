"""Boolean function classes with +-1 inputs and +-1 labels (Bhattamishra et al. 2023, arXiv 2310.03016).

Inputs x are in {-1, +1}^d (+1 = true), labels y in {-1, +1} (+1 = true), as float tensors.
Conventions follow the paper's code (github.com/satwik77/incontext-bool):

- ``Conjunction``: every variable is a positive literal w.p. ``p_literal/2``, a negated literal
  w.p. ``p_literal/2``, absent otherwise (w in {-1, 0, +1}^d). y = sign(w^T x - (|w|_1 - 1)), i.e. +1
  iff every literal is satisfied (the empty conjunction is true). To balance the labels, each example
  is, w.p. ``p_force``, overwritten on the literals' coordinates so that it satisfies the conjunction.
- ``Disjunction``: same literals; y = sign(w^T x + (|w|_1 - 1)), +1 iff some literal is satisfied
  (the empty disjunction is false). W.p. ``p_force`` an example is overwritten to falsify every literal.
- ``SparseParity``: a uniformly random support S of ``k`` coordinates; y = +1 iff an odd number of
  x_i, i in S, equal +1 (in bits b = (x+1)/2: y = 2 * (sum_S b_i mod 2) - 1). x uniform.
- ``Majority``: every variable is relevant w.p. ``p_relevant`` (w in {0, 1}^d);
  y = sign(w^T x - 1/2): +1 iff strictly more relevant variables are +1 than -1 (ties and the empty
  set give -1). x uniform.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from pydantic import Field, model_validator

from mesaopt.tasks import register
from mesaopt.tasks.base import Task, TaskBatch, check_sample_args, default_generator


def sample_pm1(shape: tuple[int, ...], g: torch.Generator, device, dtype) -> torch.Tensor:
    """Uniform +-1 tensor of ``shape``."""
    return torch.randint(0, 2, shape, generator=g, device=device).to(dtype) * 2 - 1


def sample_literals(batch_size: int, d: int, p_literal: float, g: torch.Generator, device, dtype) -> torch.Tensor:
    """w (B, d) in {-1, 0, +1}: +1 / -1 each w.p. p_literal/2, 0 otherwise."""
    u = torch.rand(batch_size, d, generator=g, device=device)
    w = torch.zeros(batch_size, d, device=device, dtype=dtype)
    w = torch.where(u < p_literal / 2, torch.ones_like(w), w)
    return torch.where((u >= p_literal / 2) & (u < p_literal), -torch.ones_like(w), w)


def conjunction_labels(xs: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(B, T, d), w (B, d) in {-1,0,1} -> y (B, T) = sign(w^T x - |w|_1 + 1) in {-1, +1}."""
    k = w.abs().sum(-1, keepdim=True) - 1
    return torch.sign(torch.einsum("btd,bd->bt", xs, w) - k)


def disjunction_labels(xs: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(B, T, d), w (B, d) in {-1,0,1} -> y (B, T) = sign(w^T x + |w|_1 - 1) in {-1, +1}."""
    k = w.abs().sum(-1, keepdim=True) - 1
    return torch.sign(torch.einsum("btd,bd->bt", xs, w) + k)


def parity_labels(xs: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """(B, T, d), support (B, d) in {0,1} -> y (B, T): +1 iff an odd number of x_i (i in S) are +1."""
    bits = (xs > 0).to(xs.dtype)
    count = torch.einsum("btd,bd->bt", bits, support.to(xs.dtype))
    return torch.remainder(count, 2) * 2 - 1


def majority_labels(xs: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """(B, T, d), w (B, d) in {0,1} -> y (B, T) = sign(w^T x - 1/2) in {-1, +1}."""
    return torch.sign(torch.einsum("btd,bd->bt", xs, w) - 0.5)


class _Boolean(Task):
    """Shared fields of the boolean families."""

    kind: ClassVar[str] = "_boolean"
    d: int = Field(28, ge=1, description="number of boolean input variables")


class _ForcedLiterals(_Boolean):
    """Literals w (B, d) in {-1, 0, 1}; a fraction p_force of examples has x = sign * w on w's support."""

    kind: ClassVar[str] = "_forced_literals"
    sign: ClassVar[float] = 1.0
    labels: ClassVar[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = staticmethod(conjunction_labels)
    p_literal: float = Field(0.3, ge=0.0, le=1.0, description="probability that a variable is a literal")
    p_force: float = Field(0.3, ge=0.0, le=1.0, description="probability that an example is forced (conjunction: "
                                                            "positive, disjunction: negative)")

    def sample(self, batch_size: int, n_points: int, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> TaskBatch:
        """xs (B, T, d) in +-1, ys (B, T) in +-1, params {"w": (B, d) in {-1,0,1}, "forced": (B, T) bool}."""
        check_sample_args(batch_size, n_points)
        g = default_generator(generator, device)
        w = sample_literals(batch_size, self.d, self.p_literal, g, device, dtype)
        xs = sample_pm1((batch_size, n_points, self.d), g, device, dtype)
        forced = torch.rand(batch_size, n_points, generator=g, device=device) < self.p_force
        lit = (w != 0).unsqueeze(1) & forced.unsqueeze(-1)  # (B, T, d): coordinates to overwrite
        xs = torch.where(lit, self.sign * w.unsqueeze(1).expand_as(xs), xs)
        return TaskBatch(xs, self.labels(xs, w), {"w": w, "forced": forced})


@register
class Conjunction(_ForcedLiterals):
    """AND of random literals; a fraction p_force of examples is forced positive (Bhattamishra et al.)."""

    kind: ClassVar[str] = "conjunction"


@register
class Disjunction(_ForcedLiterals):
    """OR of random literals; a fraction p_force of examples is forced negative (Bhattamishra et al.)."""

    kind: ClassVar[str] = "disjunction"
    sign: ClassVar[float] = -1.0
    labels: ClassVar[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = staticmethod(disjunction_labels)


@register
class SparseParity(_Boolean):
    """Parity of k uniformly chosen coordinates (+1 iff an odd number of them are +1); x uniform."""

    kind: ClassVar[str] = "parity"
    k: int = Field(2, ge=1, description="size of the parity's support")

    @model_validator(mode="after")
    def _check(self) -> SparseParity:
        if self.k > self.d:
            raise ValueError(f"k must be <= d={self.d}, got {self.k}")
        return self

    def sample(self, batch_size: int, n_points: int, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> TaskBatch:
        """xs (B, T, d) in +-1, ys (B, T) in +-1, params {"support": (B, d) in {0, 1} with k ones}."""
        check_sample_args(batch_size, n_points)
        g = default_generator(generator, device)
        scores = torch.rand(batch_size, self.d, generator=g, device=device)
        keep = scores.argsort(dim=1)[:, : self.k]
        support = torch.zeros(batch_size, self.d, device=device, dtype=dtype).scatter_(1, keep, 1.0)
        xs = sample_pm1((batch_size, n_points, self.d), g, device, dtype)
        return TaskBatch(xs, parity_labels(xs, support), {"support": support})


@register
class Majority(_Boolean):
    """Majority vote of a random subset of variables (each relevant w.p. p_relevant); ties give -1."""

    kind: ClassVar[str] = "majority"
    p_relevant: float = Field(0.3, ge=0.0, le=1.0, description="probability that a variable is relevant")

    def sample(self, batch_size: int, n_points: int, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> TaskBatch:
        """xs (B, T, d) in +-1, ys (B, T) in +-1, params {"w": (B, d) in {0, 1}}."""
        check_sample_args(batch_size, n_points)
        g = default_generator(generator, device)
        w = (torch.rand(batch_size, self.d, generator=g, device=device) < self.p_relevant).to(dtype)
        xs = sample_pm1((batch_size, n_points, self.d), g, device, dtype)
        return TaskBatch(xs, majority_labels(xs, w), {"w": w})
