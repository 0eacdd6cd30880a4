"""What one training step computes: the loss (built-in objectives or a model family's loss hook), the optimizer
with its parameter groups, and the gradient norm.

A **loss hook** is how a model family with its own training objective (e.g. the EBT's loss over all descent
iterates with a replay buffer) trains through the one loop: ``hook(model, batch, gen) -> LossOutput``, with
``gen`` a generator of its own seed stream (checkpointed), and optionally ``state_tensors()`` /
``load_state_tensors(d)`` for state that a bit-for-bit resume needs (e.g. the replay buffer).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from mesaopt.errors import ConfigError
from mesaopt.runtime import resolve_amp
from mesaopt.train.config import TrainConfig


@dataclass
class LossOutput:
    """One step's scalar ``loss``; ``sq_err`` detached squared errors (B, T) (prefix) or (B, Q) (query) that a
    gated curriculum reads (None if the objective has none); ``logs`` scalars written with the metrics."""

    loss: torch.Tensor
    sq_err: torch.Tensor | None = None
    logs: dict[str, torch.Tensor] = field(default_factory=dict)


@runtime_checkable
class LossHook(Protocol):
    """A model family's training objective: ``(model, batch, gen) -> LossOutput``."""

    def __call__(self, model: torch.nn.Module, batch: Any, gen: torch.Generator) -> LossOutput: ...


def split_query(batch: Any, cfg: TrainConfig) -> tuple[torch.Tensor, ...]:
    """(ctx_x (B,T-Q,d), ctx_y (B,T-Q), qry_x (B,Q,d), qry_y (B,Q)) with Q = ``cfg.n_queries``."""
    if batch.n_points <= cfg.n_queries:
        raise ConfigError(f"training sequences have {batch.n_points} points but train.n_queries is "
                          f"{cfg.n_queries}; need at least one context point")
    return batch.split(batch.n_points - cfg.n_queries)


def objective_sq_err(model: torch.nn.Module, batch: Any, cfg: TrainConfig) -> torch.Tensor:
    """Squared errors: "query" -> (B, Q) at the last ``n_queries`` points; "prefix" -> (B, T) at every position."""
    if cfg.objective == "query":
        ctx_x, ctx_y, qry_x, target = split_query(batch, cfg)
        pred = model(ctx_x, ctx_y, qry_x)
    else:
        pred, target = model.prefix(batch.xs, batch.ys), batch.ys
    if pred.shape != target.shape:
        raise ConfigError(f"model predictions have shape {tuple(pred.shape)}, expected {tuple(target.shape)} "
                          f"for objective {cfg.objective!r}")
    return (pred - target).pow(2)


def _reduce(sq_err: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    err = sq_err.mean()
    return 0.5 * err if cfg.loss == "half_mse" else err


def objective_loss(model: torch.nn.Module, batch: Any, cfg: TrainConfig) -> torch.Tensor:
    """Scalar loss (MSE or ½·MSE per ``cfg.loss``) of the built-in objective on one TaskBatch."""
    return _reduce(objective_sq_err(model, batch, cfg), cfg)


def make_loss_fn(model: torch.nn.Module, cfg: TrainConfig, hook: LossHook | None = None,
                 gen: torch.Generator | None = None) -> Callable[[Any], LossOutput]:
    """``batch -> LossOutput`` for training: the hook if given, else the built-in objective under bf16 autocast
    if ``cfg.amp`` and compiled with ``torch.compile`` if ``cfg.compile`` (xs (B,T,d), ys (B,T) in)."""
    device_type = next(iter(model.parameters())).device.type
    amp = resolve_amp(cfg.amp, device_type) == "bf16"
    if hook is not None:
        if cfg.compile:
            raise ConfigError("train.compile=true is not supported with a model family's own loss hook")

        def hooked(batch: Any) -> LossOutput:
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp):
                return hook(model, batch, gen)

        return hooked

    def loss_of(batch: Any) -> LossOutput:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp):
            sq = objective_sq_err(model, batch, cfg)
        return LossOutput(_reduce(sq, cfg), sq.detach())

    if not cfg.compile:
        return loss_of

    def tensor_sq_err(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp):
            if cfg.objective == "query":
                q = cfg.n_queries
                pred, target = model(xs[:, :-q], ys[:, :-q], xs[:, -q:]), ys[:, -q:]
            else:
                pred, target = model.prefix(xs, ys), ys
        return (pred.float() - target.float()).pow(2)

    compiled = torch.compile(tensor_sq_err, dynamic=None)

    def compiled_loss(batch: Any) -> LossOutput:
        sq = compiled(batch.xs, batch.ys)
        return LossOutput(_reduce(sq, cfg), sq.detach())

    return compiled_loss


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict]:
    """Trainable parameters grouped by lr multiplier: ``cfg.lr_multipliers`` maps a name pattern (fnmatch, e.g.
    ``alpha_raw`` or ``blocks.*.attn.*``) to a multiplier of the peak lr; the first matching pattern wins.
    Each group is ``{"params": [...], "lr_mult": m, "names": [...]}``; patterns matching nothing raise."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ConfigError("the model has no parameters to train")
    pats = list(cfg.lr_multipliers.items())
    unused = [p for p, _ in pats if not any(fnmatch.fnmatchcase(n, p) for n, _ in named)]
    if unused:
        names = ", ".join(n for n, _ in named[:8]) + (", ..." if len(named) > 8 else "")
        raise ConfigError(f"train.lr_multipliers pattern {unused[0]!r} matches no parameter; parameters: {names}")
    groups: dict[float, dict] = {}
    for n, p in named:
        mult = next((m for pat, m in pats if fnmatch.fnmatchcase(n, pat)), 1.0)
        g = groups.setdefault(mult, {"params": [], "lr_mult": mult, "names": []})
        g["params"].append(p)
        g["names"].append(n)
    return sorted(groups.values(), key=lambda g: g["lr_mult"] != 1.0)


def make_optimizer(groups: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The torch optimizer named by ``cfg.optimizer`` (adamw | adam | sgd) at the peak lr (times each group's
    ``lr_mult``); ``groups`` is ``param_groups(...)`` output or a plain iterable of parameters."""
    groups = list(groups)
    if not groups:
        raise ConfigError("the model has no parameters to train")
    if not isinstance(groups[0], dict):
        groups = [{"params": groups, "lr_mult": 1.0}]
    groups = [{"params": g["params"], "lr_mult": g.get("lr_mult", 1.0), "lr": cfg.lr * g.get("lr_mult", 1.0)}
              for g in groups]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def grad_norm(params: list[torch.Tensor], clip: float | None) -> torch.Tensor:
    """Global grad norm (0-dim tensor) of ``params``, clipping it to ``clip`` first when given."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device=params[0].device)
    if clip is not None:
        return torch.nn.utils.clip_grad_norm_(params, clip)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads]))
