"""Which algorithm does each layer run? Per-layer matching of a learner against reference algorithms.

For a learner with ``forward_layers(ctx_x, ctx_y, qry_x) -> (L, B, Q)`` (the prediction read out after
every layer; plain learners count as one layer), :func:`identify` finds, per layer and per algorithm
family, the hyper-parameters that make the algorithm's predictions closest (mean squared difference) to
the layer's predictions on a *fit* batch, then reports the match on a disjoint *eval* batch. The families
(``ols``, ``gd``, ``ridge``, ``newton``, ``gdpp``: how each is fitted, built and reported) are one table,
``mesaopt.analysis.families.FAMILY_TABLE``; their fitting functions are re-exported here.

Reported per match: ``pred_diff`` and ``sens_cos`` (``mesaopt.analysis.metrics``), ``err_cos`` (cosine
similarity of the error vectors pred - y over the batch, Fu et al.'s "similarity of errors") and ``mse``
(the mean squared prediction difference that is minimised). The best family of a layer has the lowest
``mse``; a simpler family (order of ``FAMILIES``) wins when it is within ``tie_tol`` (relative, plus 1e-6 of
the mean squared layer prediction) of the best.

This module returns data only: loading a checkpoint (``mesaopt.train.checkpoint``) and drawing figures are the
caller's job (the CLI's ``identify`` / ``compare`` commands, the experiments).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from mesaopt.analysis.families import (
    FAMILIES,
    FAMILY_TABLE,
    FamilyFit,
    FitProblem,
    build_learner,
    err_cos,
    fit_gd,
    fit_gdpp,
    fit_newton,
    fit_ols,
    fit_ridge,
    gd_predictions,
    gdpp_predictions,
    newton_predictions,
    sq_diff,
)
from mesaopt.errors import ConfigError, ShapeError

__all__ = ["FAMILIES", "READOUTS", "IdentifyResult", "LayerReadout", "compare", "gd_predictions", "gdpp_predictions",
           "identify", "layer_predictions", "newton_predictions", "sq_diff", "err_cos", "fit_gd", "fit_gdpp",
           "fit_newton", "fit_ridge", "fit_ols", "build_learner", "CompareResult", "FamilyFit", "format_hparams"]

READOUTS = ("model", "probe")  # per-layer prediction: the model's forward_layers, or linear probes to y


# --------------------------------------------------------------------------- layer read-outs
def layer_predictions(model: Callable, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> torch.Tensor:
    """Predictions after every layer (L, B, Q) via ``forward_layers``; a plain learner gives (1, B, Q)."""
    fl = getattr(model, "forward_layers", None)
    with torch.no_grad():
        out = fl(ctx_x, ctx_y, qry_x) if callable(fl) else model(ctx_x, ctx_y, qry_x).unsqueeze(0)
    if out.dim() != 3 or out.shape[1:] != qry_x.shape[:2]:
        raise ShapeError(f"forward_layers must return (L, B, Q) = (L, {qry_x.shape[0]}, {qry_x.shape[1]}), "
                         f"got {tuple(out.shape)}")
    return out


class LayerReadout:
    """Learner 'read out after layer ``layer``' of a model with ``forward_layers``: (B,N,d),(B,N),(B,Q,d) -> (B,Q)."""

    def __init__(self, model: Callable, layer: int) -> None:
        self.model, self.layer = model, layer
        self.name = f"layer{layer}"

    def __call__(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> torch.Tensor:
        fl = getattr(self.model, "forward_layers", None)
        if not callable(fl):
            return self.model(ctx_x, ctx_y, qry_x)
        return fl(ctx_x, ctx_y, qry_x)[self.layer]


# --------------------------------------------------------------------------- the result table
@dataclass
class IdentifyResult:
    """Rows (one per layer x family): layer, algorithm, hparams, mse, pred_diff, sens_cos, err_cos, best."""

    rows: list[dict]
    meta: dict = field(default_factory=dict)
    scans: dict = field(default_factory=dict)

    def best(self) -> list[dict]:
        """The best-matching row of every layer, in layer order."""
        return [r for r in self.rows if r["best"]]

    def to_dict(self) -> dict:
        """JSON-able dict: {"meta", "best", "rows"}."""
        return {"meta": self.meta, "best": self.best(), "rows": self.rows}

    def to_json(self) -> str:
        """The result as a JSON string."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def to_frame(self):
        """pandas DataFrame, one row per (layer, family); hyper-parameters as ``hparams.<name>`` columns."""
        from mesaopt.analysis.frames import rows_frame

        return rows_frame(self.rows)


def format_hparams(h: dict) -> str:
    """Short human string of a hyper-parameter dict (lists abbreviated to their mean)."""
    parts = []
    for k, v in h.items():
        if isinstance(v, list):
            parts.append(f"{k}=[{', '.join(f'{x:.3g}' for x in v[:4])}{', ...' if len(v) > 4 else ''}]")
        elif isinstance(v, float):
            parts.append(f"{k}={v:.4g}")
        else:
            parts.append(f"{k}={v}")
    return " ".join(parts) or "-"


def _check_families(families: Sequence[str]) -> list[str]:
    fams = list(families)
    bad = [f for f in fams if f not in FAMILY_TABLE]
    if bad or not fams:
        raise ConfigError(f"families must be a non-empty subset of {list(FAMILIES)}, got {fams}")
    return [f for f in FAMILIES if f in fams]


def _batches(task: Any, n_context: int, batch_size: int, n_queries: int, seed: int, device: str,
             dtype: torch.dtype) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    from mesaopt.seeding import generator

    if n_context < 1 or batch_size < 2 or n_queries < 1:
        raise ConfigError(f"need n_context >= 1, batch_size >= 2, n_queries >= 1; got {n_context}, {batch_size}, "
                          f"{n_queries}")
    out = []
    for name in ("identify-fit", "identify-eval"):
        b = task.sample(batch_size, n_context + n_queries, generator(seed, name), dtype=dtype)
        out.append(tuple(t.to(device) for t in b.split(n_context)))
    return out[0], out[1]


def _model_dtype(model: Any) -> torch.dtype:
    try:
        return next(model.parameters()).dtype
    except (AttributeError, StopIteration):
        return torch.float32


def _match_metrics(model: Callable, layer: int, family: str, hp: dict, ev: tuple[torch.Tensor, ...],
                   target: torch.Tensor) -> dict:
    from mesaopt.analysis import metrics

    cx, cy, qx, qy = ev
    alg = build_learner(family, hp, cx.shape[-1])
    with torch.no_grad():
        pa = alg(cx, cy, qx).to(target.dtype)
    return {"mse": float(((pa.double() - target.double()) ** 2).mean()),
            "pred_diff": float(metrics.pred_diff(target, pa)),
            "sens_cos": float(metrics.sens_cos(LayerReadout(model, layer), alg, cx, cy, qx)),
            "err_cos": err_cos(target, pa, qy)}


def identify(model: Callable, task: Any, n_context: int, families: Sequence[str] = FAMILIES,
             batch_size: int = 1024, n_queries: int = 1, seed: int = 0, max_gd_steps: int = 64,
             max_newton_iters: int = 24, tie_tol: float = 0.05, layers: Sequence[int] | None = None,
             device: str = "cpu", progress: Callable[[str], None] | None = None, readout: str = "model",
             probe_batch_size: int = 4096) -> IdentifyResult:
    """Per layer of ``model`` (``forward_layers``), the best-matching algorithm + fitted hyper-parameters on ``task``.

    Hyper-parameters are fitted on one batch of ``batch_size`` tasks (``n_context`` examples, ``n_queries``
    queries each); the reported metrics come from a second, disjoint batch. ``readout``: ``model`` = the
    model's own ``forward_layers``; ``probe`` = a ridge probe per layer from the query hidden state to y,
    fitted on a third batch of ``probe_batch_size`` sequences (``probes.fit_readout``; GPT). Returns an
    ``IdentifyResult``.
    """
    fams = _check_families(families)
    if readout not in READOUTS:
        raise ConfigError(f"readout must be one of {list(READOUTS)}, got {readout!r}")
    if readout == "probe":
        from mesaopt.analysis import probes

        (progress or (lambda s: None))("fitting per-layer probes")
        model = probes.fit_readout(model, task, n_context, batch_size=probe_batch_size, seed=seed)
    dtype = _model_dtype(model)
    fit, ev = _batches(task, n_context, batch_size, n_queries, seed, device, dtype)
    cx, cy, qx, _ = fit
    target_all = layer_predictions(model, cx, cy, qx)
    eval_all = layer_predictions(model, *ev[:3])
    n_layers = target_all.shape[0]
    sel = list(range(n_layers)) if layers is None else [int(i) % n_layers for i in layers]
    problem = FitProblem(cx, cy, qx, target_all[sel].to(torch.float64), sel, max_gd_steps, max_newton_iters)
    say = progress or (lambda s: None)
    for fam in fams:
        say(f"fitting {fam}")
        problem.fits[fam] = FAMILY_TABLE[fam].fit(problem)
    rows = []
    for j, layer in enumerate(sel):
        rows.extend(_layer_rows(model, layer, [(fam, problem.fits[fam].hparams[j], problem.fits[fam].mse[j])
                                               for fam in fams], ev, eval_all[layer], tie_tol))
    meta = {"n_layers": n_layers, "layers": sel, "families": fams, "n_context": n_context,
            "batch_size": batch_size, "n_queries": n_queries, "seed": seed, "max_gd_steps": max_gd_steps,
            "max_newton_iters": max_newton_iters, "tie_tol": tie_tol, "readout": readout,
            "model_mse_to_y": [float(((eval_all[i].double() - ev[3].double()) ** 2).mean()) for i in sel]}
    scans = {k: v.scan for k, v in problem.fits.items() if v.scan}
    return IdentifyResult(rows, meta, scans)


def _layer_rows(model: Callable, layer: int, fitted: list[tuple[str, dict, float]], ev: tuple[torch.Tensor, ...],
                target: torch.Tensor, tie_tol: float) -> list[dict]:
    """One row per (family, hparams, fit_mse) of ``fitted`` on the eval batch; the best one is marked.

    target (B, Q): the layer's eval-batch predictions. The simplest family (table order) within ``tie_tol`` of
    the lowest ``mse`` (plus float32-level agreement, 1e-6 of the mean squared prediction) is the best.
    """
    rows = []
    for fam, hp, fit_mse in fitted:
        row = {"layer": layer, "algorithm": fam, "hparams": hp, "fit_mse": fit_mse}
        row.update(_match_metrics(model, layer, fam, hp, ev, target))
        row["best"] = False
        rows.append(row)
    best = min(rows, key=lambda r: r["mse"])
    atol = 1e-6 * float((target.double() ** 2).mean())  # float32-level agreement counts as exact
    for r in rows:  # simplest family within tie_tol of the best
        if r["mse"] <= best["mse"] * (1.0 + tie_tol) + atol:
            r["best"] = True
            break
    return rows


# --------------------------------------------------------------------------- compare
@dataclass
class CompareResult:
    """Rows (one per algorithm): algorithm, hparams, loss, mse, pred_diff, sens_cos, err_cos; plus the model's loss."""

    rows: list[dict]
    meta: dict

    def to_dict(self) -> dict:
        """JSON-able dict: {"meta", "rows"}."""
        return {"meta": self.meta, "rows": self.rows}

    def to_json(self) -> str:
        """The result as a JSON string."""
        return json.dumps(self.to_dict(), indent=2)

    def to_frame(self):
        """pandas DataFrame, one row per algorithm; hyper-parameters as ``hparams.<name>`` columns."""
        from mesaopt.analysis.frames import rows_frame

        return rows_frame(self.rows)


def compare(model: Callable, task: Any, n_context: int, algorithms: Sequence[str] = ("gd", "ridge", "newton"),
            batch_size: int = 1024, n_queries: int = 1, seed: int = 0, max_gd_steps: int = 64,
            max_newton_iters: int = 24, device: str = "cpu") -> CompareResult:
    """Pairwise metrics between ``model``'s final prediction and each algorithm.

    Families of ``FAMILIES`` get their hyper-parameters fitted to the model's final layer (as in ``identify``);
    any other name is an ``mesaopt.algorithms`` kind built with its default hyper-parameters. Losses are MSE.
    """
    from mesaopt import algorithms as algs
    from mesaopt.analysis import metrics

    names = [a.strip() for a in algorithms if a.strip()]
    if not names:
        raise ConfigError("algorithms must name at least one algorithm, e.g. gd,ridge,newton")
    dtype = _model_dtype(model)
    _, ev = _batches(task, n_context, batch_size, n_queries, seed, device, dtype)
    n_layers = layer_predictions(model, *ev[:3]).shape[0]
    cx, cy, qx, qy = ev
    with torch.no_grad():
        pm = model(cx, cy, qx)
    rows = []
    for name in names:
        if name in FAMILIES:
            res = identify(model, task, n_context, families=[name], batch_size=batch_size, n_queries=n_queries,
                           seed=seed, max_gd_steps=max_gd_steps, max_newton_iters=max_newton_iters,
                           layers=[n_layers - 1], device=device)
            hp = res.rows[0]["hparams"]
            alg = build_learner(name, hp, cx.shape[-1])
        else:
            try:
                alg = algs.build({"kind": name})
            except ConfigError as e:
                raise ConfigError(f"--algorithms: {e}; fitted families are {list(FAMILIES)}") from None
            hp = alg.hparams() if hasattr(alg, "hparams") else {}
        with torch.no_grad():
            pa = alg(cx, cy, qx).to(pm.dtype)
        rows.append({"algorithm": name, "hparams": hp, "loss": float(((pa.double() - qy.double()) ** 2).mean()),
                     "mse": float(((pa.double() - pm.double()) ** 2).mean()),
                     "pred_diff": float(metrics.pred_diff(pm, pa)),
                     "sens_cos": float(metrics.sens_cos(model, alg, cx, cy, qx)),
                     "err_cos": err_cos(pm, pa, qy)})
    meta = {"model_loss": float(((pm.double() - qy.double()) ** 2).mean()), "n_context": n_context,
            "batch_size": batch_size, "seed": seed, "loss": "mse"}
    return CompareResult(rows, meta)


