"""Mahankali et al. (arXiv 2307.03576): a trained one-layer LSA on Gaussian data is one step of GD with the optimal lr.

Setup: x ~ N(0, I_d), w ~ N(0, s^2 I_d) (s = ``w_scale``), y = w^T x + sigma * eps, N context examples; one
LSA layer (``mesaopt.models.LSA``, merged W_KQ/W_PV, read-out = minus the query's y-slot) trained on the
query loss 1/2 * MSE.

Closed form (derived in docs/experiments/mahankali-optimal.md). One GD step from w = 0 on
(1/2N) sum (w^T x_i - y_i)^2 gives w_1 = eta * (Sigma_hat w + X^T eps sigma / N), Sigma_hat = X^T X / N. With
E[Sigma_hat] = I and E[Sigma_hat^2] = (N + d + 1)/N * I (Wishart second moment), the expected squared query
error is

    R(eta) = E (w_1^T x_q - y_q)^2 = d * (s^2 (N + d + 1) + sigma^2) / N * eta^2 - 2 d s^2 eta + d s^2 + sigma^2,

minimised at eta* = N s^2 / (s^2 (N + d + 1) + sigma^2) with R* = d s^2 (1 - eta*) + sigma^2. Reported losses
are 1/2 * MSE (``*_loss`` on the evaluation batch, ``*_risk`` = R/2 in closed form).

The learned effective lr is the least-squares projection of the LSA's predictions on those of one GD step
with lr = 1 (``lr_learned``), and, from the weights, tr(Gamma)/d with Gamma = -sum_h W_PV^h[y,y] W_KQ^h[x,x]
(``lr_learned_weights``; the term that multiplies (1/N) sum y_i x_i^T x_q).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import Field, field_validator

from mesaopt import plotting
from mesaopt.algorithms import GD
from mesaopt.experiments.base import ExperimentConfig, RunContext, register
from mesaopt.models import LSA
from mesaopt.seeding import derive_seed, generator
from mesaopt.tasks import LinearRegression
from mesaopt.train import train
from mesaopt.train.settings import train_settings

__all__ = ["MahankaliConfig", "one_step_risk", "optimal_one_step_lr", "optimal_one_step_risk", "effective_lr"]


def one_step_risk(eta: float, d: int, n: int, noise_std: float = 0.0, w_scale: float = 1.0) -> float:
    """E (w_1^T x_q - y_q)^2 of one GD step with lr ``eta`` (x ~ N(0, I), w ~ N(0, w_scale^2 I)): full MSE."""
    s2, v = w_scale**2, noise_std**2
    return d * (s2 * (n + d + 1) + v) / n * eta**2 - 2.0 * d * s2 * eta + d * s2 + v


def optimal_one_step_lr(d: int, n: int, noise_std: float = 0.0, w_scale: float = 1.0) -> float:
    """eta* = N s^2 / (s^2 (N + d + 1) + sigma^2), the minimiser of ``one_step_risk``."""
    s2 = w_scale**2
    return n * s2 / (s2 * (n + d + 1) + noise_std**2)


def optimal_one_step_risk(d: int, n: int, noise_std: float = 0.0, w_scale: float = 1.0) -> float:
    """R(eta*) = d s^2 (1 - eta*) + sigma^2 (full MSE)."""
    return d * w_scale**2 * (1.0 - optimal_one_step_lr(d, n, noise_std, w_scale)) + noise_std**2


def effective_lr(pred: torch.Tensor, pred_gd_lr1: torch.Tensor) -> float:
    """Least-squares scale a minimising ||pred - a * pred_gd_lr1||^2: (B, Q), (B, Q) -> float."""
    p, g = pred.double(), pred_gd_lr1.double()
    return float((p * g).sum() / (g * g).sum())


def weight_lr(model: LSA) -> tuple[float, float]:
    """(tr(Gamma)/d, ||Gamma - tr(Gamma)/d I|| / ||Gamma||) with Gamma = -sum_h W_PV^h[y,y] W_KQ^h[x,x] (d, d)."""
    kq, pv = model.matrices()
    d = model.d
    gamma = -(pv[0, :, d, d][:, None, None] * kq[0, :, :d, :d]).sum(0).detach().double()
    lr = float(torch.diagonal(gamma).mean())
    off = float((gamma - lr * torch.eye(d, dtype=gamma.dtype)).norm() / gamma.norm().clamp_min(1e-30))
    return lr, off


MahankaliTrain = train_settings(
    "MahankaliTrain", dict(steps=1500, batch_size=1024, lr=5e-3, optimizer="adam", schedule="cosine",
                           min_lr_ratio=0.02, grad_clip=10.0, eval_every=100, eval_batch_size=2048, ckpt_every=500,
                           loss="half_mse", objective="query"))


class MahankaliConfig(ExperimentConfig):
    """Config of ``mahankali-optimal``: Gaussian task, the N values trained, training and evaluation sizes."""

    d: int = Field(10, ge=1, description="input dimension")
    n_context: int = Field(20, ge=1, description="number of in-context examples N of the main model")
    n_context_sweep: list[int] = Field([5, 10, 40], description="further N values (one LSA trained per N)")
    noise_std: float = Field(0.5, ge=0, description="label noise std sigma")
    w_scale: float = Field(1.0, gt=0, description="prior std s of each weight")
    init_std: float = Field(0.002, gt=0, description="std of the LSA's initial weights")
    eval_batch_size: int = Field(20000, ge=16, description="tasks in the final evaluation batch")
    train: MahankaliTrain = Field(default_factory=MahankaliTrain,
                                  description="training of every LSA; n_points = N + 1, seed derived from seed and N")

    @field_validator("n_context_sweep")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(n < 1 for n in v):
            raise ValueError(f"every N must be >= 1, got {v}")
        return v


def _train_one(cfg: MahankaliConfig, ctx: RunContext, task: LinearRegression, n: int, main: bool) -> dict:
    tcfg = cfg.train.to_train(seed=derive_seed(cfg.seed, "train", n) % (2**31), device=cfg.device, n_points=n + 1)
    out = ctx.out if main else ctx.path(f"n{n}")
    model = LSA(d=cfg.d, layers=1, init_std=cfg.init_std, seed=derive_seed(cfg.seed, "init", n) % (2**31))
    res = train(model, task, tcfg, out=out, resume=ctx.resume, progress=ctx.progress)
    model = res.model.cpu().eval()
    ev = task.sample(cfg.eval_batch_size, n + 1, generator(cfg.seed, "final-eval", n))
    cx, cy, qx, qy = ev.split(n)
    eta = optimal_one_step_lr(cfg.d, n, cfg.noise_std, cfg.w_scale)
    with torch.no_grad():
        p_lsa = model(cx, cy, qx)
        p_gd1 = GD(steps=1, lr=1.0)(cx, cy, qx)
    lr_w, off = weight_lr(model)
    return {"n": n, "lsa_loss": float(0.5 * ((p_lsa - qy) ** 2).mean()),
            "optimal_gd_loss": float(0.5 * ((eta * p_gd1 - qy) ** 2).mean()),
            "optimal_gd_risk": 0.5 * optimal_one_step_risk(cfg.d, n, cfg.noise_std, cfg.w_scale),
            "lr_learned": effective_lr(p_lsa, p_gd1), "lr_learned_weights": lr_w, "gamma_anisotropy": off,
            "lr_optimal": eta, "pred_diff": float((p_lsa - eta * p_gd1).abs().mean()),
            "p_gd1": p_gd1, "qy": qy}


def _n_ticks(ax, ns: np.ndarray) -> None:
    """Log x axis labelled at the trained N values only (no overlapping minor labels)."""
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.set_xticks(ns)
    ax.set_xticklabels([str(int(n)) for n in ns])
    ax.xaxis.set_minor_formatter(NullFormatter())


def _figure(ctx: RunContext, cfg: MahankaliConfig, rows: list[dict]) -> None:
    plotting.paper_style()
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: r["n"])
    ns = np.array([r["n"] for r in rows], dtype=float)
    grid = np.geomspace(max(1.0, ns.min() / 1.5), ns.max() * 1.5, 100)
    fig, axes = plt.subplots(1, 3, figsize=(11.0, 3.0))
    ax = axes[0]
    ax.plot(grid, [optimal_one_step_lr(cfg.d, g, cfg.noise_std, cfg.w_scale) for g in grid],
            color=plotting.PALETTE["gd"], label=r"closed form $\eta^*$")
    ax.plot(ns, [r["lr_learned"] for r in rows], "o", color=plotting.PALETTE["model"], label="trained LSA")
    _n_ticks(ax, ns)
    ax.set_xlabel("context length N")
    ax.set_ylabel("one-step learning rate")
    ax.legend()
    ax = axes[1]
    ax.plot(grid, [0.5 * optimal_one_step_risk(cfg.d, g, cfg.noise_std, cfg.w_scale) for g in grid],
            color=plotting.PALETTE["gd"], label="optimal 1-step GD (closed form)")
    ax.plot(ns, [r["lsa_loss"] for r in rows], "o", color=plotting.PALETTE["model"], label="trained LSA")
    _n_ticks(ax, ns)
    ax.set_xlabel("context length N")
    ax.set_ylabel("loss (1/2 MSE)")
    ax.legend()
    main = next(r for r in rows if r["n"] == cfg.n_context)
    etas = np.linspace(0.0, 2.0 * main["lr_optimal"], 60)
    p, y = main["p_gd1"].double(), main["qy"].double()
    mc = [float(0.5 * ((e * p - y) ** 2).mean()) for e in etas]
    ax = axes[2]
    ax.plot(etas, [0.5 * one_step_risk(e, cfg.d, cfg.n_context, cfg.noise_std, cfg.w_scale) for e in etas],
            color=plotting.PALETTE["gd"], label="closed form R(η)/2")
    ax.plot(etas[::4], mc[::4], "x", color="k", ms=4, label="Monte Carlo")
    ax.axvline(main["lr_optimal"], color=plotting.PALETTE["gd"], ls=":", lw=1, label=r"$\eta^*$")
    ax.axvline(main["lr_learned"], color=plotting.PALETTE["model"], ls="--", lw=1, label="learned")
    ax.set_xlabel(f"GD learning rate (N={cfg.n_context})")
    ax.set_ylabel("loss (1/2 MSE)")
    ax.legend()
    fig.suptitle(f"One LSA layer vs the optimal one-step GD (Gaussian x, d={cfg.d}, σ={cfg.noise_std})")
    fig.tight_layout()
    plotting.save_figure(fig, ctx.path("optimal_lr"))

    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    plotting.loss_curve(ax, ctx.out / "metrics.jsonl", labels=["trained LSA"], ylabel="loss (1/2 MSE)")
    ax.axhline(main["optimal_gd_risk"], color=plotting.PALETTE["gd"], ls="--", label="optimal 1-step GD risk")
    ax.legend()
    plotting.save_figure(fig, ctx.path("loss"))


@register("mahankali-optimal", "Mahankali et al.: trained 1-layer LSA vs closed-form optimal one-step GD (Gaussian x)",
          config=MahankaliConfig,
          quick={"train.steps": 250, "train.batch_size": 512, "train.eval_every": 50, "train.ckpt_every": 0,
                 "train.lr": 1e-2, "n_context_sweep": [10], "eval_batch_size": 4096})
def run(cfg: MahankaliConfig, ctx: RunContext) -> dict[str, float]:
    """Train one LSA layer per N, compare its effective lr and loss with the closed-form optimum; returns metrics."""
    task = LinearRegression(d=cfg.d, noise_std=cfg.noise_std, x_dist="gaussian", w_scale=cfg.w_scale)
    ns = [cfg.n_context] + sorted(set(cfg.n_context_sweep) - {cfg.n_context})
    rows = [_train_one(cfg, ctx, task, n, main=(i == 0)) for i, n in enumerate(ns)]
    _figure(ctx, cfg, rows)
    main = rows[0]
    out = {k: main[k] for k in ("lsa_loss", "optimal_gd_loss", "optimal_gd_risk", "lr_learned", "lr_learned_weights",
                                "lr_optimal", "pred_diff", "gamma_anisotropy")}
    out["lr_rel_err"] = abs(main["lr_learned"] - main["lr_optimal"]) / main["lr_optimal"]
    out["loss_ratio"] = main["lsa_loss"] / main["optimal_gd_loss"]
    for r in rows:
        for k in ("lr_learned", "lr_optimal", "lsa_loss", "optimal_gd_risk"):
            out[f"{k}_n{r['n']}"] = r[k]
    if not all(math.isfinite(v) for v in out.values()):
        raise RuntimeError("mahankali-optimal produced a non-finite metric")
    return out
