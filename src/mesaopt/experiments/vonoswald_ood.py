"""von Oswald et al. (arXiv 2212.07677) out-of-distribution test: trained LSAs vs GD when the data scale changes.

Setup as ``vonoswald-deep`` (``vonoswald_common``). Trained on the standard distribution (x ~ U(-r/2, r/2)^d,
r = 1, w ~ N(0, I)): a 1-layer LSA (run folder ``k1/``) and a ``deep_k``-layer LSA (``k{K}/``); fitted there and
NOT re-fitted: 1-step GD, K-step GD (``GD.fit_lr``) and K-step GD++ (``GDPlusPlus.fit_hparams``). All five are
then evaluated on fresh tasks while

* the input scale alpha changes: x ~ U(-alpha r/2, alpha r/2)^d (w ~ N(0, I)), for alpha in ``alphas``;
* the teacher scale beta changes: w ~ N(0, beta^2 I) (x as in training), for beta in ``betas``.

Keys ``{learner}_loss_alpha{a}`` and ``{learner}_loss_beta{b}`` with learner in ``lsa1``, ``gd1``, ``lsa{K}``,
``gd{K}``, ``gdpp{K}`` (K = ``deep_k``, e.g. ``lsa3``) and the grid value written by ``scale_key`` (Python's
``{:g}``: 0.25, 0.5, 1, 2, 2.5 - shortest form, no trailing zeros; grids whose values share a key are rejected),
e.g. ``lsa1_loss_alpha0.5``, ``gdpp3_loss_beta2``. Also the fitted ``gd1_lr``, ``gd{K}_lr``, ``gdpp{K}_lr``,
``gdpp{K}_gamma``. Losses are 1/2 * MSE; every grid point uses the same seed stream, so the batches at
different alpha are the same draws rescaled (common random numbers).
"""

from __future__ import annotations

import math

from pydantic import Field, field_validator

from mesaopt import plotting
from mesaopt.experiments.base import RunContext, register
from mesaopt.experiments.vonoswald_common import (
    VonOswaldLSAConfig,
    eval_half_mse,
    fit_gd_gdpp,
    regression_task,
    train_lsa,
)
from mesaopt.seeding import generator

__all__ = ["VonOswaldOODConfig", "scale_key"]

ALPHAS = [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0]  # the paper's code: 0.5 .. 2 (step 0.03)
BETAS = [0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0]  # the paper's code: 0.5 .. 5 (step 0.1)


def scale_key(value: float) -> str:
    """The grid value as written in metric keys: ``{:g}`` (0.5 -> '0.5', 2.0 -> '2', 0.25 -> '0.25')."""
    return f"{value:g}"


class VonOswaldOODConfig(VonOswaldLSAConfig):
    """Config of ``vonoswald-ood``: the deep model's K and the alpha / beta grids, plus the shared fields."""

    deep_k: int = Field(3, ge=2, description="layers K of the deep LSA (compared with K-step GD and GD++)")
    alphas: list[float] = Field(ALPHAS, description="input scales alpha: x ~ U(-alpha r/2, alpha r/2)^d")
    betas: list[float] = Field(BETAS, description="teacher scales beta: w ~ N(0, beta^2 I)")

    @field_validator("alphas", "betas")
    @classmethod
    def _grid(cls, v: list[float]) -> list[float]:
        if not v or any(not math.isfinite(a) or a <= 0 for a in v) or len({scale_key(a) for a in v}) != len(v):
            raise ValueError(f"must be a non-empty list of distinct positive numbers (distinct as {{:g}}), got {v}")
        return sorted(v)


def _curves(cfg: VonOswaldOODConfig, learners: dict, axis: str) -> dict[str, list[float]]:
    """Loss of every learner at every grid value of ``axis`` ("alpha" or "beta"): {learner: [loss per value]}."""
    grid = cfg.alphas if axis == "alpha" else cfg.betas
    out: dict[str, list[float]] = {name: [] for name in learners}
    for v in grid:
        task = (regression_task(cfg, input_range=cfg.input_range * v) if axis == "alpha"
                else regression_task(cfg, w_scale=v))
        ev = task.sample(cfg.eval_batch_size, cfg.n_context + 1, generator(cfg.seed, "ood-eval")).split(cfg.n_context)
        for name, learner in learners.items():
            out[name].append(eval_half_mse(learner, ev))
    return out


def _log_axes(ax, grid: list[float]) -> None:
    """Log-log axes with the grid values as x tick labels."""
    from matplotlib.ticker import NullLocator

    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(grid, [scale_key(v) for v in grid])
    ax.xaxis.set_minor_locator(NullLocator())


def _figures(ctx: RunContext, cfg: VonOswaldOODConfig, curves: dict[str, dict[str, list[float]]]) -> None:
    plotting.paper_style()
    import matplotlib.pyplot as plt

    k = cfg.deep_k
    style = {"lsa1": ("o-", "model", "trained LSA, 1 layer"), "gd1": ("s--", "gd", "GD, 1 step"),
             f"lsa{k}": ("o-", "construction", f"trained LSA, {k} layers"),
             f"gd{k}": ("s:", "gd", f"GD, {k} steps"), f"gdpp{k}": ("^--", "gdpp", f"GD++, {k} steps")}
    fig, axes = plt.subplots(2, 2, figsize=(9.0, 6.4))
    for col, (axis, grid, xlabel) in enumerate((("alpha", cfg.alphas, "input scale α: x ~ U(-α/2, α/2)^d"),
                                                ("beta", cfg.betas, "teacher scale β: w ~ N(0, β² I)"))):
        ax = axes[0, col]
        for name, (ls, color, label) in style.items():
            ax.plot(grid, curves[axis][name], ls, ms=3, color=plotting.PALETTE[color], label=label)
        _log_axes(ax, grid)
        ax.axvline(1.0, color="k", lw=0.8, ls=":")
        ax.set_ylabel("loss (1/2 MSE)")
        ax.legend(fontsize=7)
        ax = axes[1, col]
        for num, den, color in (("lsa1", "gd1", "model"), (f"lsa{k}", f"gdpp{k}", "construction")):
            ratio = [a / b for a, b in zip(curves[axis][num], curves[axis][den], strict=True)]
            ax.plot(grid, ratio, "o-", ms=3, color=plotting.PALETTE[color], label=f"{num} / {den}")
        ax.axhline(1.0, color="k", lw=0.8, ls=":")
        _log_axes(ax, grid)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("loss ratio, trained / algorithm")
        ax.legend(fontsize=7)
    fig.suptitle(f"Out of distribution: trained on α = β = 1 (d={cfg.d}, N={cfg.n_context})")
    fig.tight_layout()
    plotting.save_figure(fig, ctx.path("ood"))


@register("vonoswald-ood", "von Oswald OOD: trained 1-layer / deep LSA vs GD and GD++ as the input scale α and the "
          "teacher scale β change", config=VonOswaldOODConfig,
          quick={"deep_k": 2, "train.steps": 300, "train.eval_every": 50, "train.ckpt_every": 0,
                 "train.warmup_steps": 20, "train.lr": 5e-3, "eval_batch_size": 2048, "fit_batch_size": 2048,
                 "alphas": [0.5, 1.0, 2.0], "betas": [0.5, 1.0, 2.0]})
def run(cfg: VonOswaldOODConfig, ctx: RunContext) -> dict[str, float]:
    """Train the 1-layer and deep LSA, fit GD / GD++ on the training distribution, sweep alpha and beta."""
    task, k = regression_task(cfg), cfg.deep_k
    gd1, _ = fit_gd_gdpp(cfg, task, 1)
    gdk, gdppk = fit_gd_gdpp(cfg, task, k)
    lsa1, steps1 = train_lsa(cfg, ctx, task, 1, "k1", clip=cfg.clip_for(1))
    lsak, stepsk = train_lsa(cfg, ctx, task, k, f"k{k}", clip=cfg.clip_for(k))
    learners = {"lsa1": lsa1, "gd1": gd1, f"lsa{k}": lsak, f"gd{k}": gdk, f"gdpp{k}": gdppk}
    curves = {axis: _curves(cfg, learners, axis) for axis in ("alpha", "beta")}
    _figures(ctx, cfg, curves)
    out = {"gd1_lr": float(gd1.lr), f"gd{k}_lr": float(gdk.lr), f"gdpp{k}_lr": float(gdppk.lr),
           f"gdpp{k}_gamma": float(gdppk.gamma), "train_steps_k1": float(steps1), f"train_steps_k{k}": float(stepsk)}
    for axis, grid in (("alpha", cfg.alphas), ("beta", cfg.betas)):
        for name, losses in curves[axis].items():
            out.update({f"{name}_loss_{axis}{scale_key(v)}": loss for v, loss in zip(grid, losses, strict=True)})
    bad = [key for key, v in out.items() if not math.isfinite(v)]
    if bad:
        raise RuntimeError(f"vonoswald-ood produced non-finite metrics: {bad}")
    return out
