"""von Oswald et al. (arXiv 2212.07677) Sec. 3-4: the recurrent (weight-tied) LSA, and a trained layer rolled out.

Setup as ``vonoswald-deep`` (``vonoswald_common``). Two parts:

* Tied LSA: for every K in ``ks`` ONE LSA layer applied K times (``LSA(tied=True)``, run folder ``k{K}/``) is
  trained and compared with K steps of GD (one fitted lr, ``GD.fit_lr``) and of GD++ (one fitted (lr, gamma),
  ``GDPlusPlus.fit_hparams``) - the tied GD++ of the paper. Keys ``lsa_loss_k{K}``, ``gd_loss_k{K}``,
  ``gdpp_loss_k{K}``, the fitted ``gd_lr_k{K}``, ``gdpp_lr_k{K}``, ``gdpp_gamma_k{K}`` and the alignment
  ``sens_cos_gd_k{K}``, ``sens_cos_gdpp_k{K}``, ``pred_diff_gd_k{K}``, ``pred_diff_gdpp_k{K}``.
* Damped roll-out: the trained single layer (K = 1) applied S = 1 .. ``rollout_steps`` times with the paper's
  damping lambda = ``damping`` (``models.lsa_rollout.damped_rollout``: every application adds lambda times the
  layer's update to the y-slots). ``rollout_loss_s{S}``; beside it ``gd_rollout_loss_s{S}`` (S GD steps with
  their own fitted lr ``gd_rollout_lr_s{S}``) and ``gd_damped_loss_s{S}`` (S GD steps with lr = lambda *
  ``gd_lr_k1``: the exact roll-out of the one-step GD construction, the paper's comparison line);
  ``construction_rollout_err``: max over S of the relative difference between the rolled-out GD construction
  (``constructions.lsa_gd``) and that GD (float64; ~1e-15 when the roll-out rule is right).

All losses are 1/2 * MSE on one held-out batch shared by every learner.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import Field, field_validator

from mesaopt import constructions, plotting
from mesaopt.algorithms import GD
from mesaopt.analysis import metrics
from mesaopt.experiments.base import RunContext, register
from mesaopt.experiments.vonoswald_common import (
    VonOswaldLSAConfig,
    eval_half_mse,
    fit_gd_gdpp,
    regression_task,
    train_lsa,
    training_curves,
)
from mesaopt.models import LSA
from mesaopt.models.lsa_rollout import damped_rollout
from mesaopt.seeding import generator
from mesaopt.tasks import LinearRegression

__all__ = ["VonOswaldRecurrentConfig"]


class VonOswaldRecurrentConfig(VonOswaldLSAConfig):
    """Config of ``vonoswald-recurrent``: tied depths K, roll-out length and damping, plus the shared fields."""

    ks: list[int] = Field([1, 2, 10], description="applications K of the one tied layer (one model per K; must "
                                                   "contain 1, the layer that is rolled out)")
    damping: float = Field(0.75, gt=0, description="roll-out damping lambda (paper's code: 0.75)")
    rollout_steps: int = Field(50, ge=1, description="S_max: the trained layer is applied S = 1 .. S_max times")
    deep_lr: float = Field(5e-3, gt=0, description="train.lr for K >= deep_from (tied K = 10 stayed far above "
                                                   "10-step GD after 2500 steps at 2e-3)")

    @field_validator("ks")
    @classmethod
    def _ks(cls, v: list[int]) -> list[int]:
        if 1 not in v or any(k < 1 for k in v) or len(set(v)) != len(v):
            raise ValueError(f"ks must be distinct integers >= 1 and contain 1 (the rolled-out layer), got {v}")
        return sorted(v)


def _one_k(cfg: VonOswaldRecurrentConfig, ctx: RunContext, task: LinearRegression, k: int,
           ev: tuple[torch.Tensor, ...]) -> tuple[dict[str, float], LSA]:
    """Train the tied K-application LSA, fit K-step GD / GD++, compare on ``ev``: (metrics, trained model)."""
    gd, gdpp = fit_gd_gdpp(cfg, task, k)
    model, steps = train_lsa(cfg, ctx, task, k, f"k{k}", tied=True, clip=cfg.clip_for(k))
    cx, cy, qx, qy = ev
    with torch.no_grad():
        p_lsa, p_gd, p_gdpp = model(cx, cy, qx), gd(cx, cy, qx), gdpp(cx, cy, qx)
    out = {"lsa_loss": float(metrics.half_mse(p_lsa, qy)), "gd_loss": float(metrics.half_mse(p_gd, qy)),
           "gdpp_loss": float(metrics.half_mse(p_gdpp, qy)), "gd_lr": float(gd.lr), "gdpp_lr": float(gdpp.lr),
           "gdpp_gamma": float(gdpp.gamma), "train_steps": float(steps),
           "pred_diff_gd": metrics.pred_diff(p_lsa, p_gd), "pred_diff_gdpp": metrics.pred_diff(p_lsa, p_gdpp),
           "sens_cos_gd": metrics.sens_cos(model, gd, cx, cy, qx),
           "sens_cos_gdpp": metrics.sens_cos(model, gdpp, cx, cy, qx)}
    return out, model


def _rollout(cfg: VonOswaldRecurrentConfig, task: LinearRegression, layer: LSA, gd_lr: float,
             ev: tuple[torch.Tensor, ...]) -> dict[str, list[float]]:
    """Losses per S = 1 .. S_max of the damped roll-out, of GD at lr = lambda * gd_lr, and of GD with a fitted lr."""
    cx, cy, qx, qy = ev
    s_max, lam = cfg.rollout_steps, cfg.damping
    with torch.no_grad():
        rolled = damped_rollout(layer, cx, cy, qx, s_max, lam)  # (S, B, Q)
    damped_w = GD(steps=s_max, lr=lam * gd_lr).trajectory(cx.double(), cy.double())[:, 1:]  # (B, S, d)
    damped = torch.einsum("bqd,bsd->sbq", qx.double(), damped_w)
    con = constructions.lsa_gd(d=cfg.d, steps=1, lr=gd_lr, dtype=torch.float64)
    with torch.no_grad():
        con_rolled = damped_rollout(con, cx.double(), cy.double(), qx.double(), s_max, lam)
    err = ((con_rolled - damped).flatten(1).norm(dim=1) / damped.flatten(1).norm(dim=1).clamp_min(1e-300)).max()
    out: dict[str, list[float]] = {"rollout": [], "gd_damped": [], "gd_rollout": [], "gd_rollout_lr": []}
    for s in range(1, s_max + 1):
        gd = GD.fit_lr(task, steps=s, n_context=cfg.n_context, generator=generator(cfg.seed, "gd-rollout-lr"),
                       batch_size=cfg.fit_batch_size)
        out["rollout"].append(float(metrics.half_mse(rolled[s - 1], qy)))
        out["gd_damped"].append(float(metrics.half_mse(damped[s - 1].float(), qy)))
        out["gd_rollout"].append(eval_half_mse(gd, ev))
        out["gd_rollout_lr"].append(float(gd.lr))
    out["construction_err"] = [float(err)]
    return out


def _figures(ctx: RunContext, cfg: VonOswaldRecurrentConfig, per_k: dict[int, dict], roll: dict[str, list]) -> None:
    plotting.paper_style()
    import matplotlib.pyplot as plt

    s = np.arange(1, cfg.rollout_steps + 1)
    fig, ax = plt.subplots(figsize=(4.8, 3.2))
    ax.plot(s, roll["rollout"], "o-", ms=3, color=plotting.PALETTE["model"],
            label=f"trained layer, rolled out (λ={cfg.damping:g})")
    ax.plot(s, roll["gd_damped"], "--", color=plotting.PALETTE["gd"], label=f"GD, lr = λ·η* ({cfg.damping:g}·η*)")
    ax.plot(s, roll["gd_rollout"], ":", color=plotting.PALETTE["gdpp"], label="GD, lr fitted per S")
    ax.set_yscale("log")
    # fixed-lr GD eventually diverges on the rare tasks with lambda_max(X^T X / N) > 2 / lr: keep the useful range
    lo = min(min(v) for v in (roll["rollout"], roll["gd_damped"], roll["gd_rollout"]))
    ax.set_ylim(0.8 * lo, 2.0 * max(roll["rollout"][0], roll["gd_damped"][0]))
    ax.set_xlabel("S: applications of the layer / GD steps")
    ax.set_ylabel("loss (1/2 MSE)")
    ax.set_title(f"Damped roll-out of the trained layer (d={cfg.d}, N={cfg.n_context})")
    ax.legend()
    plotting.save_figure(fig, ctx.path("rollout"))

    ks = sorted(per_k)
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.2))
    ax = axes[0]
    for key, label, style, color in (("lsa_loss", "tied LSA (trained)", "o-", "model"),
                                     ("gd_loss", "GD (K steps)", "s--", "gd"), ("gdpp_loss", "GD++ (K steps)", "^--",
                                                                                "gdpp")):
        ax.plot(ks, [per_k[k][key] for k in ks], style, color=plotting.PALETTE[color], label=label)
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("K: applications of the tied layer / steps")
    ax.set_ylabel("loss (1/2 MSE)")
    ax.legend()
    ax = axes[1]
    training_curves(ax, ctx.out, per_k, "loss (1/2 MSE); dashed: GD++")
    ax.legend()
    fig.suptitle("Recurrent (weight-tied) LSA vs K steps of GD / GD++")
    fig.tight_layout()
    plotting.save_figure(fig, ctx.path("tied"))


@register("vonoswald-recurrent", "von Oswald Sec. 3-4: weight-tied LSA (K = 2, 10) vs GD / GD++; damped roll-out "
          "of the trained layer", config=VonOswaldRecurrentConfig,
          quick={"ks": [1, 2], "rollout_steps": 10, "train.steps": 300, "train.eval_every": 50,
                 "train.ckpt_every": 0, "train.warmup_steps": 20, "train.lr": 5e-3, "eval_batch_size": 2048,
                 "fit_batch_size": 2048})
def run(cfg: VonOswaldRecurrentConfig, ctx: RunContext) -> dict[str, float]:
    """Train the tied LSA for every K, fit GD / GD++, roll out the K = 1 layer; returns the metrics."""
    task = regression_task(cfg)
    ev = task.sample(cfg.eval_batch_size, cfg.n_context + 1, generator(cfg.seed, "final-eval")).split(cfg.n_context)
    per_k, models = {}, {}
    for k in cfg.ks:
        per_k[k], models[k] = _one_k(cfg, ctx, task, k, ev)
    roll = _rollout(cfg, task, models[1], per_k[1]["gd_lr"], ev)
    _figures(ctx, cfg, per_k, roll)
    out = {f"{key}_k{k}": float(v) for k, r in per_k.items() for key, v in r.items()}
    # a roll-out may overflow on a rare task after many applications: that is a result (NaN from there on, and
    # the first such S as rollout_diverged_s; 0 = never), not a failed run
    finite = [v if math.isfinite(v) else math.nan for v in roll["rollout"]]
    roll["rollout"] = finite
    for name, key in (("rollout", "rollout_loss"), ("gd_damped", "gd_damped_loss"), ("gd_rollout", "gd_rollout_loss"),
                      ("gd_rollout_lr", "gd_rollout_lr")):
        out.update({f"{key}_s{s}": v for s, v in enumerate(roll[name], start=1)})
    out["construction_rollout_err"] = roll["construction_err"][0]
    out["rollout_diverged_s"] = float(next((s for s, v in enumerate(finite, start=1) if math.isnan(v)), 0))
    best = int(np.nanargmin(finite))
    out["rollout_best_s"], out["rollout_best_loss"] = float(best + 1), finite[best]
    bad = [k for k, v in out.items() if not math.isfinite(v) and not k.startswith("rollout_loss_s")]
    if bad:
        raise RuntimeError(f"vonoswald-recurrent produced non-finite metrics: {bad}")
    return out
