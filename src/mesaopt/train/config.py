"""Training configuration: ``TrainConfig`` (optimizer, schedule, objective, eval/ckpt cadence) and ``TrainJob``."""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from pydantic import Field, field_validator, model_validator

from mesaopt.config import StrictModel
from mesaopt.train.curriculum import Curriculum
from mesaopt.train.stop import StopRule

Optimizer = Literal["adamw", "adam", "sgd"]
Schedule = Literal["constant", "cosine", "linear", "warmup_cosine", "warmup_linear", "inverse_sqrt",
                   "cosine_after_curriculum"]
Objective = Literal["query", "prefix"]
Loss = Literal["mse", "half_mse"]
DType = Literal["float32", "float64", "bfloat16"]

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}

# Fields that may differ between a checkpoint and the config used to resume it: they change logging,
# evaluation or cadence but not the weights' trajectory (``steps`` extends/shortens the run; with a
# decaying schedule the lr curve is then recomputed for the new total, see docs/training.md).
RESUME_MUTABLE = ("steps", "eval_every", "eval_batch_size", "ckpt_every", "log_every", "tensorboard",
                  "nan_check_every", "stop")


class TrainConfig(StrictModel):
    """How to fit a model on a task: optimizer, lr schedule, objective, loss, eval/ckpt cadence, seed, device."""

    steps: int = Field(1000, ge=1, description="number of optimizer updates")
    batch_size: int = Field(64, ge=1, description="sequences per training batch")
    n_points: int = Field(11, ge=1, description="(x, y) points per sequence, including the query")
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(0.0, ge=0, description="decoupled (adamw) or L2 (adam, sgd) weight decay")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam(W) betas, each in [0, 1)")
    eps: float = Field(1e-8, gt=0, description="Adam(W) epsilon")
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum")
    optimizer: Optimizer = Field("adamw", description="adamw | adam | sgd")
    schedule: Schedule = Field("constant", description="lr schedule after the linear warmup")
    warmup_steps: int = Field(0, ge=0, description="linear warmup steps (lr ramps (t+1)/warmup)")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="final lr / peak lr of decaying schedules")
    grad_clip: float | None = Field(None, gt=0, description="clip the global grad norm to this (None = off)")
    eval_every: int = Field(100, ge=0, description="evaluate every k steps (0 = only at the end)")
    eval_batch_size: int = Field(1024, ge=1, description="size of the fixed evaluation batch")
    ckpt_every: int = Field(500, ge=0, description="checkpoint every k steps (0 = only at the end)")
    log_every: int = Field(10, ge=1, description="write a metrics record every k steps")
    seed: int = Field(0, ge=0, description="master seed (train/eval data streams derived from it)")
    device: str = Field("cpu", description="torch device: cpu, cuda, cuda:1, mps, ...")
    tensorboard: bool = Field(False, description="also write TensorBoard scalars to out/tb")
    objective: Objective = Field("query", description="query: predict the last point from the others; "
                                                      "prefix: model.prefix, loss over all positions")
    loss: Loss = Field("mse", description="mse = mean (pred - y)^2; half_mse = 0.5 * mse")
    dtype: DType = Field("float32", description="parameter and data dtype")
    nan_check_every: int = Field(10, ge=1, description="read the NaN/inf flag on the host every k steps")
    amp: Literal["bf16", "auto"] | None = Field(None, description="bf16: run the forward pass under bfloat16 "
                                                "autocast (fp32 master weights and optimizer); auto: bf16 on a CPU "
                                                "with native bf16 (AVX512-BF16/AMX), else off; null = off")
    compile: bool = Field(False, description="torch.compile the training loss (opt-in; same numbers up to "
                                             "float rounding, first steps pay the compile time)")

    curriculum: Curriculum | None = Field(None, description="Garg-style growing active dims / points per "
                                                            "training sequence (see mesaopt.train.curriculum)")
    decay_steps: int | None = Field(None, ge=1, description="schedule cosine_after_curriculum: steps of the cosine "
                                                            "to min_lr_ratio once the curriculum is complete")
    n_queries: int = Field(1, ge=1, description="objective query: the last n_queries points of each sequence "
                                               "are queries, predicted independently from the others")
    lr_multipliers: dict[str, float] = Field(default_factory=dict, description="parameter-name pattern "
                                             "(fnmatch) -> multiplier of the lr, e.g. {alpha_raw: 10}")
    stop: StopRule | None = Field(None, description="stop once err@at <= target on the eval batch and on fresh "
                                                    "sequences drawn anew at each check (steps is then a maximum)")

    @field_validator("lr", "eps", "weight_decay")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be finite")
        return v

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError(f"each beta must be in [0, 1), got {list(v)}")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        try:
            torch.device(v)
        except (RuntimeError, ValueError):
            raise ValueError(f"not a torch device (e.g. cpu, cuda, cuda:0, mps), got {v!r}") from None
        return v

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.objective == "query" and self.n_points <= self.n_queries:
            raise ValueError(f"n_points must be > n_queries ({self.n_queries}) for objective 'query' "
                             f"(context + queries), got {self.n_points}")
        if (self.schedule == "cosine_after_curriculum") != (self.decay_steps is not None):
            raise ValueError("schedule 'cosine_after_curriculum' and decay_steps go together (set both or neither)")
        if self.schedule == "cosine_after_curriculum" and self.curriculum is None:
            raise ValueError("schedule 'cosine_after_curriculum' needs a curriculum")
        if self.stop is not None and self.stop.at >= self.n_points:
            raise ValueError(f"stop.at must be < n_points ({self.n_points}), got {self.stop.at}")
        for pat, m in self.lr_multipliers.items():
            if not (math.isfinite(m) and m > 0):
                raise ValueError(f"lr_multipliers[{pat!r}] must be a finite number > 0, got {m}")
        if self.schedule.startswith("warmup_") and self.warmup_steps < 1:
            raise ValueError(f"schedule {self.schedule!r} needs warmup_steps >= 1")
        if self.schedule == "inverse_sqrt" and self.warmup_steps < 1:
            raise ValueError("schedule 'inverse_sqrt' needs warmup_steps >= 1")
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be <= steps ({self.steps})")
        if self.optimizer != "sgd" and self.momentum != 0.0:
            raise ValueError("momentum applies to optimizer 'sgd' only")
        if self.amp is not None and self.dtype != "float32":
            raise ValueError(f"amp={self.amp!r} needs dtype 'float32' (fp32 master weights), got {self.dtype!r}")
        return self

    @property
    def torch_dtype(self) -> torch.dtype:
        """The torch dtype named by ``dtype``."""
        return DTYPES[self.dtype]


class TrainJob(StrictModel):
    """A ``mesaopt train`` job: ``model: {kind, ...}``, ``task: {kind, ...}`` and ``train: {...}``."""

    model: dict[str, Any] = Field(..., description="model spec: {kind: lsa, ...} (see mesaopt.models)")
    task: dict[str, Any] = Field(default_factory=lambda: {"kind": "linear"}, description="task spec")
    train: TrainConfig = Field(default_factory=TrainConfig)

    @field_validator("model", "task")
    @classmethod
    def _has_kind(cls, v: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(v.get("kind"), str):
            raise ValueError("needs a string 'kind' entry, e.g. {kind: lsa, ...}")
        return v
