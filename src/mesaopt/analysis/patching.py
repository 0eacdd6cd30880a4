"""Activation patching and ablation over a grid of (layer, head, position), through a model's hook points.

A model with hook points (``mesaopt.models.hooks``) is run on **target** inputs while one slice of one named
activation is replaced by a **source** value:

==============  ===================  ====================================================================
mode            target inputs        source of the replaced slice
==============  ===================  ====================================================================
``patch``       corrupted            the clean run's activation (denoising: how much does it restore?)
``zero``        clean                zeros
``mean``        clean                the clean activation averaged over the batch
``resample``    clean                the corrupted run's activation (or, without one, another sequence's)
==============  ===================  ====================================================================

Activations are (B, S, ...) (residual stream, attention / MLP outputs) or (B, H, S, ...) (``attn.hook_q/k/v``,
``hook_pattern``, ``hook_z``); the head axis is 1 and the position axis the one after the batch and head axes.
This module returns data (``PatchingResult``); it never draws or loads checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from mesaopt.errors import ConfigError, ShapeError

__all__ = ["PatchingResult", "patching_grid", "patch_activation", "restoration", "corrupt_labels", "MODES"]

MODES = ("patch", "zero", "mean", "resample")
Mode = Literal["patch", "zero", "mean", "resample"]
Metric = Callable[[torch.Tensor], "float | torch.Tensor"]


@dataclass
class PatchingResult:
    """``values`` ``(layers[, heads][, positions])`` of ``metric`` per patched cell; ``dims`` names the axes."""

    values: torch.Tensor
    dims: tuple[str, ...]
    hook_names: list[str]
    mode: str
    clean: float  # metric of the unpatched clean run
    corrupted: float | None  # metric of the unpatched corrupted run (None without one)
    meta: dict = field(default_factory=dict)

    def to_rows(self) -> list[dict]:
        """One dict per cell: ``{"layer", ["head",] ["position",] "hook", "value"}`` (JSON-able)."""
        rows = []
        for idx in torch.cartesian_prod(*[torch.arange(n) for n in self.values.shape]).reshape(-1, self.values.dim()):
            cell = dict(zip(self.dims, (int(i) for i in idx), strict=True))
            rows.append({**cell, "hook": self.hook_names[cell["layer"]],
                         "value": float(self.values[tuple(int(i) for i in idx)])})
        return rows

    def to_frame(self):
        """pandas DataFrame of ``to_rows()``."""
        from mesaopt.analysis.frames import rows_frame

        return rows_frame(self.to_rows())


def restoration(clean_pred: torch.Tensor, corrupted_pred: torch.Tensor) -> Metric:
    """Metric: 1 - mse(pred, clean) / mse(corrupted, clean) over (B, Q) predictions (1 = clean restored, 0 = none)."""
    denom = (corrupted_pred - clean_pred).pow(2).mean()
    if not denom > 0:
        raise ConfigError("clean and corrupted predictions are identical: restoration is undefined")
    return lambda pred: float(1.0 - (pred - clean_pred).pow(2).mean() / denom)


def corrupt_labels(ctx_y: torch.Tensor, shift: int = 1) -> torch.Tensor:
    """Labels of another task: (B, N) -> (B, N), sequence b gets the labels of sequence (b - shift) mod B."""
    if ctx_y.shape[0] < 2:
        raise ShapeError("corrupt_labels needs a batch of at least 2 sequences")
    return ctx_y.roll(shift, dims=0)


def _has_heads(act: torch.Tensor, name: str) -> bool:
    return ".attn.hook_" in name and act.dim() >= 4


def patch_activation(model: torch.nn.Module, inputs: Sequence[torch.Tensor], hook_name: str, source: torch.Tensor,
                     index: tuple = (), method: str = "forward") -> torch.Tensor:
    """``method`` on ``inputs`` with ``activation[:, *index] = source[:, *index]`` at ``hook_name``; model output.

    ``source`` has the activation's shape (e.g. (B, S, W) or (B, H, S, dh)); ``index`` indexes the axes after the
    batch axis (``()`` replaces the whole activation). For ``forward`` the output is (B, Q).
    """
    sel = (slice(None), *index)

    def replace(act: torch.Tensor, name: str) -> torch.Tensor:
        if source.shape != act.shape:
            raise ShapeError(f"patch source for {name!r} has shape {tuple(source.shape)}, activation "
                             f"{tuple(act.shape)}; clean and corrupted inputs must have the same shapes")
        out = act.clone()
        out[sel] = source[sel].to(act.dtype)
        return out

    return model.run_with_hooks(*inputs, fwd_hooks=[(hook_name, replace)], method=method)


def _names(model: torch.nn.Module, hook_template: str) -> list[str]:
    names = model.hook_names()
    if "{layer}" not in hook_template:
        found = [hook_template]
    else:
        found = []
        while hook_template.format(layer=len(found)) in names:
            found.append(hook_template.format(layer=len(found)))
    if not found or found[0] not in names:
        raise ConfigError(f"hook template {hook_template!r} matches no hook of {type(model).__name__}; "
                          f"its hooks are e.g. {names[:6]} (model.hook_names())")
    return found


def _sources(mode: str, clean_cache: dict, corrupted_cache: dict | None) -> dict[str, torch.Tensor]:
    if mode == "patch":
        return clean_cache
    if mode == "zero":
        return {k: torch.zeros_like(v) for k, v in clean_cache.items()}
    if mode == "mean":
        return {k: v.mean(dim=0, keepdim=True).expand_as(v) for k, v in clean_cache.items()}
    if corrupted_cache is not None:
        return corrupted_cache
    return {k: v.roll(1, dims=0) for k, v in clean_cache.items()}  # another sequence's activation


def patching_grid(model: torch.nn.Module, clean: Sequence[torch.Tensor], corrupted: Sequence[torch.Tensor] | None,
                  hook_template: str, metric: Metric | None = None, mode: Mode = "patch", per_head: bool = True,
                  per_position: bool = True, method: str = "forward") -> PatchingResult:
    """Patch or ablate ``hook_template.format(layer=l)`` cell by cell over ``(layer[, head][, position])``.

    ``clean`` / ``corrupted``: learner inputs of equal shapes, e.g. (ctx_x (B,N,d), ctx_y (B,N), qry_x (B,Q,d)).
    ``metric(pred (B,Q)) -> float``; default: ``restoration`` to the clean prediction for ``patch`` and
    ``resample`` with a corrupted run, else the MSE to the clean prediction. ``per_head`` splits the head axis of
    attention activations, ``per_position`` the position axis (else the whole axis is replaced at once).
    Returns ``values`` of shape ``(L[, H][, S])`` with L the layers the template matches.
    """
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {list(MODES)}, got {mode!r}")
    if mode == "patch" and corrupted is None:
        raise ConfigError("mode='patch' needs corrupted inputs (the run the clean activations are patched into)")
    names = _names(model, hook_template)
    with torch.no_grad():
        clean_pred, clean_cache = model.run_with_cache(*clean, names_filter=names, method=method)
        corrupted_pred, corrupted_cache = (None, None) if corrupted is None else \
            model.run_with_cache(*corrupted, names_filter=names, method=method)
        metric_name = "custom"
        if metric is None:
            metric_name = "restoration" if corrupted_pred is not None and mode in ("patch", "resample") \
                else "mse_to_clean"
            metric = restoration(clean_pred, corrupted_pred) if metric_name == "restoration" else \
                (lambda pred: float((pred - clean_pred).pow(2).mean()))
        sources = _sources(mode, clean_cache, corrupted_cache)
        target = corrupted if mode == "patch" else clean
        act = clean_cache[names[0]]
        heads = _has_heads(act, names[0]) and per_head
        pos_axis = 2 if _has_heads(act, names[0]) else 1
        dims = ("layer",) + (("head",) if heads else ()) + (("position",) if per_position else ())
        n_h = act.shape[1] if heads else 1
        n_p = act.shape[pos_axis] if per_position else 1
        values = torch.empty(len(names), n_h, n_p, dtype=torch.float64)
        for li, name in enumerate(names):
            for h in range(n_h):
                for p in range(n_p):
                    index = [slice(None)] * (pos_axis - 1)  # the head axis, if any
                    if heads:
                        index[0] = h
                    index = tuple(index) + ((p,) if per_position else ())
                    pred = patch_activation(model, target, name, sources[name], index, method)
                    values[li, h, p] = float(metric(pred))
        shape = (len(names),) + ((n_h,) if heads else ()) + ((n_p,) if per_position else ())
        return PatchingResult(values.reshape(shape), dims, names, mode, float(metric(clean_pred)),
                              None if corrupted_pred is None else float(metric(corrupted_pred)),
                              {"method": method, "per_head": heads, "per_position": per_position,
                               "hook_template": hook_template, "metric": metric_name})
