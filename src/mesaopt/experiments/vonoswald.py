"""von Oswald et al. (arXiv 2212.07677) Fig. 2: a trained one-layer LSA runs one step of gradient descent.

Setup of the paper's released code: d = 10, N = 10 context points, w ~ N(0, I), noiseless labels,
x ~ U(-r/2, r/2)^d with r = ``input_range`` = 1 (the paper's text says U(-1, 1); its figures use r = 1),
loss = 1/2 * MSE on the query, one LSA layer without softmax or LayerNorm, prediction = minus the
query's y-slot. All ``*_loss`` metrics are 1/2 * MSE on a held-out evaluation batch.
"""

from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from mesaopt import constructions, plotting
from mesaopt.algorithms import GD
from mesaopt.analysis import metrics
from mesaopt.experiments.base import ExperimentConfig, RunContext, register
from mesaopt.models import LSA
from mesaopt.seeding import derive_seed, generator
from mesaopt.tasks import LinearRegression
from mesaopt.train import train
from mesaopt.train.settings import train_settings

VonOswaldTrain = train_settings(
    "VonOswaldTrain", dict(steps=2000, batch_size=2048, lr=5e-3, weight_decay=0.0, optimizer="adam",
                           schedule="cosine", min_lr_ratio=0.02, grad_clip=10.0, eval_every=100,
                           eval_batch_size=4096, ckpt_every=500, loss="half_mse", objective="query"))


class VonOswaldGDConfig(ExperimentConfig):
    """Config of ``vonoswald-gd``: task, LSA shape, training and evaluation sizes."""

    d: int = Field(10, ge=1, description="input dimension")
    n_context: int = Field(10, ge=1, description="number of in-context examples N")
    input_range: float = Field(1.0, gt=0, description="x ~ U(-r/2, r/2)^d")
    noise_std: float = Field(0.0, ge=0, description="label noise std")
    heads: int = Field(1, ge=1, description="attention heads of the LSA layer")
    init_std: float = Field(0.002, gt=0, description="std of the LSA's initial weights")
    eval_batch_size: int = Field(10000, ge=16, description="tasks in the final evaluation batch")
    lr_fit_batch_size: int = Field(10000, ge=16, description="tasks used to fit GD's optimal lr")
    train: VonOswaldTrain = Field(default_factory=VonOswaldTrain,
                                  description="training; seed, device and n_points = n_context + 1 come from above")
    threads: int | None = Field(1, ge=1, description="torch CPU threads; the LSA's (B, 11, 11) ops are fastest on one")


def _gd_lr_scan(cx, cy, qx, qy, best_lr: float, n: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Loss (1/2 MSE) of one GD step over a log grid of lrs around ``best_lr``: (n,), (n,)."""
    lrs = np.geomspace(best_lr / 10, best_lr * 4, n)
    # one GD step is linear in lr: prediction = lr * (prediction at lr = 1)
    base = GD(steps=1, lr=1.0)(cx, cy, qx).double()
    preds = torch.as_tensor(lrs).view(-1, 1, 1) * base.unsqueeze(0)
    losses = 0.5 * ((preds - qy.double().unsqueeze(0)) ** 2).mean(dim=(1, 2))
    return lrs, losses.numpy()


def _figures(ctx: RunContext, cfg: VonOswaldGDConfig, model: LSA, constr: LSA, gd_loss: float, lsa_loss: float,
             scan: tuple[np.ndarray, np.ndarray], gd_lr: float) -> None:
    plotting.paper_style()
    import matplotlib.pyplot as plt

    jsonl = ctx.out / "metrics.jsonl"
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    plotting.loss_curve(ax, jsonl, labels=["trained LSA (1 layer)"], ylabel="loss (1/2 MSE)")
    ax.axhline(gd_loss, color=plotting.PALETTE["gd"], ls="--", label=f"1 step of GD (lr={gd_lr:.3f})")
    ax.set_title(f"LSA vs GD, d={cfg.d}, N={cfg.n_context}")
    ax.legend()
    plotting.save_figure(fig, ctx.path("loss"))

    fig, axes = plt.subplots(1, 2, figsize=(8.0, 3.0))
    plotting.loss_curve(axes[0], jsonl, ["sens_cos"], ylabel="cosine sim. of sensitivities", log=False)
    axes[0].set_ylim(min(0.0, float(np.min(axes[0].get_lines()[0].get_ydata()))), 1.02)
    plotting.loss_curve(axes[1], jsonl, ["pred_diff", "model_diff"], labels=["preds diff", "model diff"],
                        colors=[plotting.PALETTE["model"], plotting.PALETTE["gd"]], ylabel="LSA vs GD difference")
    axes[1].legend()
    fig.suptitle("Alignment of the trained LSA with one GD step")
    plotting.save_figure(fig, ctx.path("alignment"))

    fig, axes = plt.subplots(2, 2, figsize=(6.4, 6.0))
    plotting.heatmap(axes[0, 0], model.w_kq(0, 0).detach().numpy(), "trained $W_{KQ}$")
    plotting.heatmap(axes[0, 1], model.w_pv(0, 0).detach().numpy(), "trained $W_{PV}$")
    plotting.heatmap(axes[1, 0], constr.w_kq(0, 0).detach().numpy(), "construction $W_{KQ}$")
    plotting.heatmap(axes[1, 1], constr.w_pv(0, 0).detach().numpy(), "construction $W_{PV}$")
    fig.suptitle("LSA weights: trained vs the GD construction")
    plotting.save_figure(fig, ctx.path("weights"))

    lrs, losses = scan
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    ax.plot(lrs, losses, color=plotting.PALETTE["gd"], label="1 step of GD")
    ax.axvline(gd_lr, color="k", ls=":", lw=1, label=f"optimal lr {gd_lr:.3f}")
    ax.axhline(lsa_loss, color=plotting.PALETTE["model"], ls="--", label="trained LSA")
    ax.set_xscale("log")
    ax.set_xlabel("GD learning rate")
    ax.set_ylabel("loss (1/2 MSE)")
    ax.legend()
    plotting.save_figure(fig, ctx.path("gd_lr_scan"))


@register("vonoswald-gd", "von Oswald Fig. 2: a trained 1-layer LSA vs one step of GD (d=10, N=10)",
          config=VonOswaldGDConfig,
          quick={"train.steps": 500, "train.batch_size": 1024, "train.eval_every": 50, "train.ckpt_every": 250,
                 "train.lr": 1e-2, "eval_batch_size": 4096, "lr_fit_batch_size": 4096})
def run(cfg: VonOswaldGDConfig, ctx: RunContext) -> dict[str, float]:
    """Train the LSA, fit GD's lr, compare them and the exact construction; returns the metrics."""
    task = LinearRegression(d=cfg.d, noise_std=cfg.noise_std, x_dist="uniform", input_range=cfg.input_range)
    n = cfg.n_context

    gd = GD.fit_lr(task, steps=1, n_context=n, generator=generator(cfg.seed, "gd-lr"),
                   batch_size=cfg.lr_fit_batch_size)
    gd_lr = float(gd.lr)

    mon = task.sample(2048, n + 1, generator(cfg.seed, "monitor"))
    mcx, mcy, mqx, _ = mon.split(n)
    gd_mon = gd(mcx, mcy, mqx).detach()

    def eval_fn(model: LSA, step: int) -> dict[str, float]:
        pred = model(mcx, mcy, mqx).detach()
        return {"pred_diff": float(metrics.pred_diff(pred, gd_mon)),
                "sens_cos": float(metrics.sens_cos(model, gd, mcx, mcy, mqx)),
                "model_diff": float(metrics.model_diff(model, gd, mcx, mcy, mqx))}

    model = LSA(d=cfg.d, layers=1, heads=cfg.heads, param="merged", init_std=cfg.init_std,
                seed=derive_seed(cfg.seed, "init") % (2**31))
    tcfg = cfg.train.to_train(seed=cfg.seed, device=cfg.device, n_points=n + 1)
    result = train(model, task, tcfg, out=ctx.out, resume=ctx.resume, eval_fn=eval_fn, progress=ctx.progress)
    model = result.model.cpu().eval()

    ev = task.sample(cfg.eval_batch_size, n + 1, generator(cfg.seed, "final-eval"))
    cx, cy, qx, qy = ev.split(n)
    with torch.no_grad():
        pred_lsa = model(cx, cy, qx)
        pred_gd = gd(cx, cy, qx)
        pred_gd1 = GD(steps=1, lr=1.0)(cx, cy, qx)
    lsa_loss = float(metrics.half_mse(pred_lsa, qy))
    gd_loss = float(metrics.half_mse(pred_gd, qy))

    constr = constructions.lsa_gd(d=cfg.d, steps=1, lr=gd_lr, dtype=torch.float64)
    with torch.no_grad():
        c64 = constr(cx.double(), cy.double(), qx.double())
    g64 = GD(steps=1, lr=gd_lr)(cx.double(), cy.double(), qx.double())
    construction_err = float((c64 - g64).norm() / g64.norm())

    lsa_lr_eff = float((pred_lsa * pred_gd1).sum() / (pred_gd1 * pred_gd1).sum())
    out = {
        "lsa_loss": lsa_loss,
        "gd_loss": gd_loss,
        "gd_lr": gd_lr,
        "loss_ratio": lsa_loss / gd_loss,
        "pred_diff": float(metrics.pred_diff(pred_lsa, pred_gd)),
        "sens_cos": float(metrics.sens_cos(model, gd, cx, cy, qx)),
        "model_diff": float(metrics.model_diff(model, gd, cx, cy, qx)),
        "construction_err": construction_err,
        "construction_loss": float(metrics.half_mse(c64.float(), qy)),
        "lsa_lr_effective": lsa_lr_eff,
        "train_steps": float(result.step),
    }
    scan = _gd_lr_scan(cx, cy, qx, qy, gd_lr)
    _figures(ctx, cfg, model, constr.float(), gd_loss, lsa_loss, scan, gd_lr)
    return out
