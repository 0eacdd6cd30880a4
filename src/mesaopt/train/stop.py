"""Stop rule: end training once a target error at a given prefix is met on the eval batch AND on fresh data.

The error is the mean squared error of the model's prediction from the first ``at`` examples
(``model.prefix`` position ``at``), divided by the task's dimension d when ``normalise`` (Garg et al.'s
normalised error: for w ~ N(0, I_d) and x ~ N(0, I_d) the zero predictor scores 1). The eval-batch check is
cheap and runs at every evaluation; only when it passes (and, by default, once the curriculum is complete) is
the model scored on ``fresh_sequences`` sequences drawn **anew at every check** from the rule's own seed
stream, so a lucky dip of one fixed batch cannot stop the run.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field

from mesaopt.config import StrictModel
from mesaopt.errors import ConfigError


class StopRule(StrictModel):
    """Stop when err@``at`` <= ``target`` on the eval batch and on a fresh sample drawn anew at each check."""

    target: float = Field(..., gt=0, description="target error at prefix position `at`")
    at: int = Field(..., ge=0, description="number of in-context examples the error is read at (prefix position)")
    fresh_sequences: int = Field(4000, ge=1, description="fresh sequences scored at each check that passes "
                                                         "on the eval batch")
    chunk: int = Field(500, ge=1, description="fresh sequences per forward pass (memory bound)")
    normalise: bool = Field(True, description="divide the MSE by the task dimension d (Garg's normalised error)")
    after_curriculum: bool = Field(True, description="only stop once the curriculum is complete")


def prefix_error(model: torch.nn.Module, xs: torch.Tensor, ys: torch.Tensor, scale: float) -> torch.Tensor:
    """Per-position squared error summed over the batch: xs (B, T, d), ys (B, T) -> (T,) divided by ``scale``."""
    return (model.prefix(xs, ys).float() - ys.float()).pow(2).sum(0) / scale


def error_curve(model: torch.nn.Module, batch: Any, rule: StopRule, d: int) -> torch.Tensor:
    """Mean (normalised) error per prefix position (T,) of ``model`` on one TaskBatch (no grad)."""
    scale = batch.xs.shape[0] * (d if rule.normalise else 1)
    with torch.no_grad():
        return prefix_error(model, batch.xs, batch.ys, scale)


def fresh_curve(model: torch.nn.Module, task: Any, rule: StopRule, n_points: int, gen: torch.Generator,
                device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Mean (normalised) error per prefix position (T,) on ``rule.fresh_sequences`` new sequences from ``gen``."""
    d = task.d if rule.normalise else 1
    total = None
    with torch.no_grad():
        for i in range(0, rule.fresh_sequences, rule.chunk):
            b = task.sample(min(rule.chunk, rule.fresh_sequences - i), n_points, gen, device, dtype)
            s = prefix_error(model, b.xs, b.ys, 1.0)
            total = s if total is None else total + s
    return total / (rule.fresh_sequences * d)


def check_stop_rule(rule: StopRule, model: torch.nn.Module, task: Any, n_points: int) -> None:
    """ConfigError (one line) unless the rule can be applied: a model with prefix(), a task with d, at < n_points."""
    if not callable(getattr(model, "prefix", None)):
        raise ConfigError(f"train.stop reads the error at a prefix position; {type(model).__name__} has no "
                          f"prefix() method (drop train.stop)")
    if rule.normalise and getattr(task, "d", None) is None:
        raise ConfigError("train.stop.normalise=true needs a task with a dimension d (set normalise: false)")
    if rule.at >= n_points:
        raise ConfigError(f"train.stop.at must be < train.n_points ({n_points}), got {rule.at}")
