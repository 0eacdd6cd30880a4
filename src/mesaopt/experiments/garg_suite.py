"""garg-suite: evaluation of a trained d = 20 GPT (Garg et al., arXiv 2208.01066) without training.

By default the model shipped with the package (``mesaopt.load("garg-d20")``); ``model_dir`` takes any model folder
or run folder of a GPT with the same d. Nothing is trained.

* **Part A, dense curve** (Garg Fig. 2 left, noiseless d = 20): normalised error (squared error / d) of the
  transformer, min-norm least squares, ridge (``ridge_lam``), averaging and k-NN vs N = 0..n_points-1 on
  ``eval_sequences`` fresh sequences: keys ``dense_{learner}_err_at_{N}``.
* **Part B, distribution shifts** (Garg Sec. 4; samplers and definitions in ``garg_shifts``): the transformer,
  least squares and averaging on each shifted prompt distribution: keys ``shift_{name}_err_at_{N}``
  (transformer), ``shift_{name}_ols_err_at_{N}``, ``shift_{name}_averaging_err_at_{N}`` for the scored N of
  the shift (``orthogonal``: N < d; ``same_point``: N >= 1; others every N).

The error at N of a row is (y_hat_N - y_N)^2 / d with y_hat_N predicted from examples 0..N-1 of that row (the
model's ``prefix``), averaged over the rows that score N. ``model.json`` records what was evaluated (folder, spec,
weights sha256 and the folder's metadata). Figures: ``dense`` (Part A, with the paper's published
values for its model marked) and ``shifts`` (one panel per shift, transformer vs least squares, log y).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from pydantic import Field, field_validator

from mesaopt.algorithms import KNN, OLS, Averaging, Ridge
from mesaopt.errors import ConfigError
from mesaopt.experiments import garg_shifts as gs
from mesaopt.experiments.base import ExperimentConfig, RunContext, register
from mesaopt.experiments.garg import squared_errors
from mesaopt.io import atomic_write_json
from mesaopt.seeding import generator

SHIFTS = ("skewed", "half_subspace", "noisy", "orthant", "opposite_orthant", "orthogonal", "same_point",
          "scale_x", "scale_y")
"""Shift families; ``scale_x`` / ``scale_y`` expand to one shift per factor in ``scale_factors``."""

PUBLISHED = {20: 0.02, 40: 0.0006}
"""Garg et al.'s transformer (12 layers, 8 heads, width 256): the normalised errors at N = d and N = 2d that the
paper quotes for its Fig. 2 (left) curve; marked on the ``dense`` figure."""


class GargSuiteConfig(ExperimentConfig):
    """Config of ``garg-suite``: which model, how many sequences, which shifts and their parameters."""

    model_dir: str | None = Field(None, description="model folder or run folder of a GPT (None = the shipped "
                                                    "garg-d20 model)")
    n_points: int = Field(41, ge=2, description="points per sequence (<= the model's n_positions; Garg: 41)")
    eval_sequences: int = Field(1000, ge=1, description="fresh sequences per curve (Part A and each shift)")
    eval_chunk: int = Field(100, ge=1, description="sequences drawn at once (query shifts make n_points rows each)")
    row_chunk: int = Field(1000, ge=1, description="rows per forward pass of a learner")
    shifts: list[str] = Field(list(SHIFTS), description=f"shift families to run, from {list(SHIFTS)}")
    scale_factors: list[float] = Field([0.333, 0.5, 2.0, 3.0], min_length=1,
                                       description="factors of scale_x and scale_y (Garg: 0.333, 0.5, 2, 3)")
    noise_std: float = Field(1.0, gt=0.0, description="label-noise std of the noisy shift (Garg: 1)")
    ridge_lam: float = Field(0.1, gt=0.0, description="ridge penalty of the Part A ridge baseline")
    knn_k: int = Field(3, ge=1, description="k of the nearest-neighbour baseline (Garg: 3)")
    threads: int | None = Field(1, ge=1, description="torch intra-op threads (None = torch default)")

    @field_validator("shifts")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        bad = [s for s in v if s not in SHIFTS]
        if bad:
            raise ValueError(f"unknown shifts {bad}; choose from {list(SHIFTS)}")
        return v

    @field_validator("scale_factors")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if any(f <= 0 for f in v):
            raise ValueError("scale_factors must be > 0")
        return v


def factor_tag(factor: float) -> str:
    """Key-safe name of a scale factor: 0.333 -> '0p333', 2.0 -> '2'."""
    return f"{factor:g}".replace(".", "p")


def load_suite_model(model_dir: str | None, n_points: int) -> torch.nn.Module:
    """The GPT to evaluate: shipped garg-d20 (None), a model folder or a run folder; ConfigError naming model_dir."""
    import mesaopt
    from mesaopt.models.pretrained import CONFIG_FILE
    from mesaopt.train.checkpoint import load_model

    if model_dir is None:
        model = mesaopt.load("garg-d20")
    elif (Path(model_dir) / CONFIG_FILE).is_file():
        model = mesaopt.load(model_dir)
    elif Path(model_dir).is_dir():
        model = load_model(model_dir)[0]
    else:
        raise ConfigError(f"model_dir: '{model_dir}' is neither a model folder nor a run folder")
    spec = model.spec()
    if not callable(getattr(model, "prefix", None)) or "n_positions" not in spec:
        raise ConfigError(f"model_dir: the model is a {spec.get('kind')!r}; garg-suite needs a GPT (prefix model)")
    if spec["n_positions"] < n_points:
        raise ConfigError(f"n_points ({n_points}) exceeds the model's n_positions ({spec['n_positions']})")
    return model.eval()


def model_record(model_dir: str | None, model: torch.nn.Module) -> dict:
    """What was evaluated (written to ``model.json``): the folder, its spec and the weights' sha256 if a folder."""
    from mesaopt.models.pretrained import CONFIG_FILE, read_config, shipped

    folder = shipped("garg-d20") if model_dir is None else Path(model_dir)
    rec = {"model_dir": model_dir, "shipped": "garg-d20" if model_dir is None else None, "spec": model.spec()}
    if (folder / CONFIG_FILE).is_file():
        cfg = read_config(folder)
        rec.update(sha256=cfg["weights"]["sha256"], metadata=cfg.get("metadata", {}))
    return rec


def shift_samplers(cfg: GargSuiteConfig, d: int) -> dict[str, Callable[[int, torch.Generator], gs.ShiftBatch]]:
    """name -> sampler(b, gen) of ``b`` sequences of ``cfg.n_points`` points for every configured shift."""
    t = cfg.n_points
    out: dict[str, Callable[[int, torch.Generator], gs.ShiftBatch]] = {}
    for name in cfg.shifts:
        if name in ("skewed", "half_subspace"):
            eig = gs.skewed_eigenvalues(d) if name == "skewed" else gs.half_subspace_eigenvalues(d)
            m = gs.covariance_transform(eig, generator(cfg.seed, "garg-suite", name, "basis"))
            out[name] = lambda b, g, m=m: gs.covariance_shift(b, t, d, g, m)
        elif name == "noisy":
            out[name] = lambda b, g: gs.noisy(b, t, d, g, cfg.noise_std)
        elif name in ("orthant", "opposite_orthant"):
            out[name] = lambda b, g, o=(name == "opposite_orthant"): gs.orthant(b, t, d, g, opposite=o)
        elif name == "orthogonal":
            out[name] = lambda b, g: gs.orthogonal(b, t, d, g)
        elif name == "same_point":
            out[name] = lambda b, g: gs.same_point(b, t, d, g)
        else:
            fn = gs.scale_x if name == "scale_x" else gs.scale_y
            for f in cfg.scale_factors:
                out[f"{name}_{factor_tag(f)}"] = lambda b, g, f=f, fn=fn: fn(b, t, d, g, f)
    return out


def masked_errors(learners: dict, batch: gs.ShiftBatch, d: int, row_chunk: int) -> dict[str, np.ndarray]:
    """name -> (2, T): summed error/d over the rows scoring each position, and the number of such rows.

    Rows are grouped by their last scored position L and run truncated to L + 1 points (a prefix prediction at
    N never sees later points), which halves the cost of the query shifts' one-position rows.
    """
    mask = batch.scored.numpy()
    t = mask.shape[1]
    last = t - 1 - np.argmax(mask[:, ::-1], axis=1)
    out = {name: np.zeros((2, t)) for name in learners}
    for length in np.unique(last[mask.any(1)]) + 1:
        rows = torch.from_numpy(np.nonzero((last + 1 == length) & mask.any(1))[0])
        xs, ys, sub = batch.xs[rows, :length], batch.ys[rows, :length], mask[rows.numpy(), :length]
        for name, fn in learners.items():
            out[name][0, :length] += np.where(sub, squared_errors(fn, xs, ys, d, row_chunk), 0.0).sum(0)
            out[name][1, :length] += sub.sum(0)
    return out


def curves(learners: dict, sampler: Callable[[int, torch.Generator], gs.ShiftBatch], gen: torch.Generator,
           cfg: GargSuiteConfig, d: int) -> dict[str, np.ndarray]:
    """name -> (T,) mean error/d per N over ``eval_sequences`` sequences (NaN where no row scores N)."""
    tot: dict[str, np.ndarray] = {}
    for i in range(0, cfg.eval_sequences, cfg.eval_chunk):
        part = masked_errors(learners, sampler(min(cfg.eval_chunk, cfg.eval_sequences - i), gen), d, cfg.row_chunk)
        tot = {k: part[k] + tot.get(k, 0.0) for k in part}
    with np.errstate(invalid="ignore", divide="ignore"):
        return {k: np.where(v[1] > 0, v[0] / np.maximum(v[1], 1.0), np.nan) for k, v in tot.items()}


def _keys(prefix: str, curve: np.ndarray) -> dict[str, float]:
    return {f"{prefix}_err_at_{n}": float(v) for n, v in enumerate(curve) if np.isfinite(v)}


@register("garg-suite", "Shipped d=20 GPT (Garg): dense error curve with baselines and Sec. 4 distribution shifts",
          config=GargSuiteConfig,
          quick={"eval_sequences": 16, "eval_chunk": 16, "scale_factors": [2.0]})
def run(cfg: GargSuiteConfig, ctx: RunContext) -> dict[str, float]:
    """Evaluate the model and the baselines on the dense curve and on every configured shift."""
    from mesaopt.experiments.garg_suite_plots import plot_dense, plot_shifts

    model = load_suite_model(cfg.model_dir, cfg.n_points)
    d = int(model.spec()["d"])
    atomic_write_json(ctx.path("model.json"), model_record(cfg.model_dir, model))
    m: dict[str, float] = {}
    with torch.no_grad():
        dense = curves({"transformer": model, "ols": OLS(), "ridge": Ridge(lam=cfg.ridge_lam),
                        "averaging": Averaging(), "knn": KNN(k=cfg.knn_k)},
                       lambda b, g: gs.standard(b, cfg.n_points, d, g), generator(cfg.seed, "garg-suite", "dense"),
                       cfg, d)
        for name, c in dense.items():
            m.update(_keys(f"dense_{name}", c))
        shifts: dict[str, dict[str, np.ndarray]] = {}
        for name, sampler in shift_samplers(cfg, d).items():
            ctx.console.print(f"[bold]garg-suite[/]: shift {name}")
            shifts[name] = curves({"transformer": model, "ols": OLS(), "averaging": Averaging()}, sampler,
                                  generator(cfg.seed, "garg-suite", name), cfg, d)
            m.update(_keys(f"shift_{name}", shifts[name]["transformer"]))
            m.update(_keys(f"shift_{name}_ols", shifts[name]["ols"]))
            m.update(_keys(f"shift_{name}_averaging", shifts[name]["averaging"]))
    plot_dense(ctx.path("dense"), dense, d, PUBLISHED)
    plot_shifts(ctx.path("shifts"), shifts, d)
    return m
