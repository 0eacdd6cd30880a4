"""Garg-style curriculum: the number of active input dimensions and of points per sequence grow during training.

Garg et al. (arXiv 2208.01066, Sec. 3 / their ``curriculum.py``): a value starts at ``start`` and grows by
``inc`` every ``interval`` steps until it reaches ``end``. With ``dims`` active, coordinates
``>= n_dims`` of every x are set to 0 *before* the labels are computed (so the task is effectively
``n_dims``-dimensional); with ``points`` active, training sequences have that many points.

Label recomputation after zeroing: a task with ``evaluate(xs, params) -> ys`` (noise-free) is
re-evaluated and its label noise (``ys - evaluate(xs_original)``) kept; linear regression (params
``w`` (B, d)) gets ``ys - x_inactive . w_inactive``. Other tasks (e.g. boolean) raise ConfigError.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field, model_validator

from mesaopt.config import StrictModel
from mesaopt.errors import ConfigError
from mesaopt.tasks.base import TaskBatch


class Ramp(StrictModel):
    """A value that starts at ``start`` and grows by ``inc`` every ``interval`` steps, capped at ``end``."""

    start: int = Field(..., ge=1, description="value at step 1")
    end: int = Field(..., ge=1, description="final value (>= start)")
    inc: int = Field(1, ge=0, description="increment applied every `interval` steps")
    interval: int = Field(1000, ge=1, description="steps between increments")

    @model_validator(mode="after")
    def _order(self) -> Ramp:
        if self.end < self.start:
            raise ValueError(f"end ({self.end}) must be >= start ({self.start})")
        return self

    def value(self, step: int) -> int:
        """The value used for 1-based training ``step``: min(start + inc * ((step - 1) // interval), end)."""
        return min(self.start + self.inc * ((max(step, 1) - 1) // self.interval), self.end)


class Curriculum(StrictModel):
    """Growing active dimensions and/or points per sequence (either may be None = fixed)."""

    dims: Ramp | None = Field(None, description="active input dimensions (inactive coordinates are zeroed)")
    points: Ramp | None = Field(None, description="points per training sequence (overrides train.n_points)")

    def at(self, step: int, d: int, n_points: int) -> tuple[int, int]:
        """(active dims, points) at 1-based ``step`` for a task of dimension ``d`` and default ``n_points``."""
        dims = d if self.dims is None else self.dims.value(step)
        if dims > d:
            raise ConfigError(f"train.curriculum.dims reaches {dims} but the task has d={d}")
        points = n_points if self.points is None else self.points.value(step)
        return dims, points


def zero_inactive_dims(task: Any, batch: TaskBatch, n_dims: int) -> TaskBatch:
    """Zero coordinates >= ``n_dims`` of xs (B, T, d) and recompute ys (B, T) accordingly."""
    d = batch.d
    if n_dims >= d:
        return batch
    xs = batch.xs.clone()
    xs[..., n_dims:] = 0
    evaluate = getattr(task, "evaluate", None)
    if callable(evaluate):
        noise = batch.ys - evaluate(batch.xs, batch.params)
        ys = evaluate(xs, batch.params) + noise
    elif getattr(task, "kind", None) == "linear":
        w = batch.params["w"]
        ys = batch.ys - torch.einsum("btd,bd->bt", batch.xs[..., n_dims:], w[:, n_dims:])
    else:
        raise ConfigError(f"train.curriculum.dims needs a task with evaluate(xs, params) or kind 'linear'; "
                          f"task kind {getattr(task, 'kind', type(task).__name__)!r} has neither")
    return TaskBatch(xs, ys, dict(batch.params))


def curriculum_batch(task: Any, curriculum: Curriculum, batch_size: int, n_points: int, step: int,
                     gen: torch.Generator, device: torch.device | str, dtype: torch.dtype) -> TaskBatch:
    """Training batch at 1-based ``step``: xs (B, T_step, d), coordinates >= dims_step zeroed; ys (B, T_step)."""
    d = getattr(task, "d", None)
    if d is None:
        raise ConfigError("train.curriculum needs a task with a dimension field d")
    dims, points = curriculum.at(step, d, n_points)
    batch = task.sample(batch_size, points, gen, device, dtype)
    return zero_inactive_dims(task, batch, dims)
