"""Garg-style curriculum: the number of active input dimensions and of points per sequence grow during training.

Garg et al. (arXiv 2208.01066, Sec. 3 / their ``curriculum.py``): a value starts at ``start`` and grows by
``inc`` every ``interval`` steps until it reaches ``end`` (``mode: fixed``). With ``dims`` active, coordinates
``>= n_dims`` of every x are set to 0 *before* the labels are computed (so the task is effectively
``n_dims``-dimensional); with ``points`` active, training sequences have that many points.

``mode: gated`` (the library's fast recipe, docs/training.md): stage k has ``start + k * inc`` dims / points
(capped at ``end``); the stage advances once it has run ``gate.min_steps`` steps and an exponential moving
average (factor ``gate.ema``) of the training squared error per active dimension at the late prefixes (those
with at least ``gate.late * dims`` examples; the query positions for the ``query`` objective) is below
``gate.threshold``. ``interval`` is ignored in gated mode.

Label recomputation after zeroing: a task with ``evaluate(xs, params) -> ys`` (noise-free) is
re-evaluated and its label noise (``ys - evaluate(xs_original)``) kept; linear regression (params
``w`` (B, d)) gets ``ys - x_inactive . w_inactive``. Other tasks (e.g. boolean) raise ConfigError.
"""

from __future__ import annotations

import math
from typing import Any, Literal

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


class Gate(StrictModel):
    """When a gated curriculum advances: EMA of the late-prefix error per active dim below ``threshold``."""

    threshold: float = Field(..., gt=0, description="advance when the EMA of the training error / dims is below this")
    min_steps: int = Field(100, ge=1, description="minimum steps per stage")
    ema: float = Field(0.9, ge=0, lt=1, description="EMA factor: ema <- ema * a + (1 - a) * error")
    late: float = Field(1.5, ge=0, description="the error is read at prefixes with >= late * dims examples")


class Curriculum(StrictModel):
    """Growing active dimensions and/or points per sequence (either may be None = fixed)."""

    mode: Literal["fixed", "gated"] = Field("fixed", description="fixed: Garg's step ramps; gated: advance a "
                                                                 "stage when the model has learnt it (gate)")
    dims: Ramp | None = Field(None, description="active input dimensions (inactive coordinates are zeroed)")
    points: Ramp | None = Field(None, description="points per training sequence (overrides train.n_points)")
    gate: Gate | None = Field(None, description="advance rule of mode 'gated' (required there, rejected otherwise)")

    @model_validator(mode="after")
    def _gate(self) -> Curriculum:
        if self.mode == "gated" and self.gate is None:
            raise ValueError("mode 'gated' needs a gate: {threshold: ..., min_steps: ..., ema: ...}")
        if self.mode == "fixed" and self.gate is not None:
            raise ValueError("gate applies to mode 'gated' only")
        if self.mode == "gated" and self.dims is None and self.points is None:
            raise ValueError("mode 'gated' needs a dims or points ramp")
        return self

    def at(self, step: int, d: int, n_points: int) -> tuple[int, int]:
        """(active dims, points) of mode ``fixed`` at 1-based ``step`` for a task of dimension ``d``."""
        dims = d if self.dims is None else self.dims.value(step)
        if dims > d:
            raise ConfigError(f"train.curriculum.dims reaches {dims} but the task has d={d}")
        points = n_points if self.points is None else self.points.value(step)
        return dims, points

    def stage_values(self, k: int, d: int, n_points: int) -> tuple[int, int]:
        """(active dims, points) of gated stage ``k`` (0-based): ``start + k * inc`` capped at ``end``."""
        dims = d if self.dims is None else min(self.dims.start + self.dims.inc * k, self.dims.end)
        if dims > d:
            raise ConfigError(f"train.curriculum.dims reaches {dims} but the task has d={d}")
        points = n_points if self.points is None else min(self.points.start + self.points.inc * k, self.points.end)
        return dims, points

    def n_stages(self) -> int:
        """Stages before the last one of mode ``gated`` (the stage index at which every ramp is at its end)."""
        return max((0 if r is None or r.end == r.start else -(-(r.end - r.start) // max(r.inc, 1)))
                   for r in (self.dims, self.points))

    def full_step(self) -> int:
        """First 1-based step of mode ``fixed`` at which every ramp is at its end."""
        first = 1
        for r in (self.dims, self.points):
            if r is not None and r.end > r.start:
                first = max(first, (math.inf if r.inc == 0 else -(-(r.end - r.start) // r.inc)) * r.interval + 1)
        return int(first) if math.isfinite(first) else 2 ** 62


class CurriculumState:
    """Progress of a curriculum during training: stage, steps in it, EMA, first step on the full task.

    ``at(step)`` gives (active dims, points); ``observe(step, sq_err, dims)`` feeds a gated curriculum the
    step's detached squared errors (B, T) (``prefix``) or (B, Q) (``query``); ``complete(step)`` says whether
    ``step`` trains on the full task. ``state()``/``load()`` round-trip through a checkpoint.
    """

    def __init__(self, cur: Curriculum, d: int, n_points: int, objective: str) -> None:
        self.cur, self.d, self.n_points, self.objective = cur, d, n_points, objective
        self.k, self.since, self.ema = 0, 0, None
        self.full = cur.full_step() if cur.mode == "fixed" else (1 if cur.n_stages() == 0 else None)

    def at(self, step: int) -> tuple[int, int]:
        """(active dims, points) for 1-based ``step``."""
        if self.cur.mode == "fixed":
            return self.cur.at(step, self.d, self.n_points)
        return self.cur.stage_values(self.k, self.d, self.n_points)

    def observe(self, step: int, sq_err: torch.Tensor | None, dims: int) -> None:
        """Advance a gated curriculum from this step's squared errors (a no-op in fixed mode or once complete)."""
        if self.cur.mode == "fixed" or self.full is not None:
            return
        if sq_err is None:
            raise ConfigError("a gated curriculum needs the loss's squared errors; the loss hook returned none")
        gate = self.cur.gate
        lo = min(sq_err.shape[1] - 1, math.floor(gate.late * dims)) if self.objective == "prefix" else 0
        e = float(sq_err[:, lo:].mean().item()) / dims
        self.ema = e if self.ema is None else gate.ema * self.ema + (1 - gate.ema) * e
        self.since += 1
        if self.since >= gate.min_steps and self.ema < gate.threshold:
            self.k, self.since, self.ema = self.k + 1, 0, None
            if self.k >= self.cur.n_stages():
                self.full = step + 1

    def complete(self, step: int) -> bool:
        """Whether 1-based ``step`` trains on the full task (all dims, all points)."""
        return self.full is not None and step >= self.full

    def state(self) -> dict:
        """JSON-able progress (stage, steps in it, EMA, first full-task step)."""
        return {"k": self.k, "since": self.since, "ema": self.ema, "full_step": self.full}

    def load(self, state: dict) -> None:
        """Restore ``state()`` output (resume)."""
        self.k, self.since, self.ema, self.full = state["k"], state["since"], state["ema"], state["full_step"]


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
