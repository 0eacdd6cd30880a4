"""von Oswald et al. (arXiv 2212.07677; ICML 2023 Sec. 4, Fig. 3, App. A.2): deep LSA vs K steps of GD / GD++.

Setup as ``vonoswald-gd`` (the paper's released code): d = 10, N = 10, x ~ U(-r/2, r/2)^d with r = 1, w ~ N(0, I),
noiseless labels, loss = 1/2 * MSE of the query, LSA without softmax/LayerNorm/MLP. The deep models follow the
released code's recipe: initial weights with variance ``init_scale / (K * fan_in)`` (its VarianceScaling(0.002 / K)),
every token clipped to [-10, 10] after each layer (``token_clip``), Adam with betas (0.9, 0.98) and eps 1e-9 at a
constant lr (1e-3; 5e-4 for K >= 4), batch 2048, global grad-norm clip 10. For every K in ``ks`` a K-layer LSA is
trained (its own run folder ``k{K}/`` with checkpoint and training curve), and compared with K steps of GD (one
lr, fitted: ``GD.fit_lr``), of GD++ with one (lr, gamma) shared by the layers (``GDPlusPlus.fit_hparams``) and
of GD++ with one (lr, gamma) per layer fitted on the loss as in the paper (``GDPlusPlus.fit_layerwise``, on the
same fit batch, so never above the shared fit there).

Metrics per K (all losses 1/2 * MSE on one held-out batch shared by all learners):
``lsa_loss_k{K}``, ``gd_loss_k{K}``, ``gdpp_loss_k{K}`` (shared), ``gdpp_layerwise_loss_k{K}`` (per layer) and
``lsa_over_gdpp_layerwise_k{K}``; the per-layer values ``gdpp_layerwise_lr_k{K}_l{l}``,
``gdpp_layerwise_gamma_k{K}_l{l}`` (l = 1..K; the last gamma reaches no prediction and is 0);
``sens_cos_gdpp_layerwise_k{K}``, ``pred_diff_gdpp_layerwise_k{K}``; ``sens_cos_k{K}`` / ``pred_diff_k{K}`` with the
best-matching of the two algorithms (named by ``best_is_gdpp_k{K}`` = 1 for GD++, 0 for GD; both are also
reported as ``sens_cos_gd_k{K}``, ``sens_cos_gdpp_k{K}``, ...); ``construction_loss_k{K}``: loss of the GD++
construction (``constructions.gd_plus_plus``) with per-layer (lr, gamma) fitted to the trained model's predictions
(``analysis.families.fit_gdpp``); ``projected_loss_k{K}``: loss of the construction nearest to the trained weights
(``projected_hparams``: per layer c = mean diag W_KQ[x,x], lr = -c W_PV[y,y], gamma = -c mean diag W_PV[x,x],
kept at the trained scale: W_KQ = c I); ``interp_loss_k{K}``: loss of the model whose weights are the average of
the trained ones and of that projected construction.
Figures: ``losses`` (final loss vs K, training curves), ``alignment`` (sens_cos / pred_diff vs K) and
``interpolation`` (loss along (1 - a) theta_trained + a theta_construction, a in [0, 1], for every K).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import Field, field_validator

from mesaopt import constructions, plotting
from mesaopt.algorithms import GDPlusPlus
from mesaopt.analysis import metrics
from mesaopt.analysis.families import fit_gdpp, gd_predictions, sq_diff
from mesaopt.experiments.base import ExperimentConfig, RunContext, register
from mesaopt.experiments.vonoswald_common import fit_gd_gdpp, regression_task, train_lsa, training_curves
from mesaopt.models import LSA
from mesaopt.seeding import generator
from mesaopt.tasks import LinearRegression
from mesaopt.train.settings import train_settings

__all__ = ["VonOswaldDeepConfig", "VonOswaldDeepTrain", "aligned_construction", "projected_hparams"]


VonOswaldDeepTrain = train_settings(
    "VonOswaldDeepTrain", dict(steps=10_000, batch_size=2048, lr=1e-3, optimizer="adam", betas=(0.9, 0.98),
                               eps=1e-9, schedule="constant", grad_clip=10.0, eval_every=250, eval_batch_size=2048,
                               ckpt_every=2500, loss="half_mse", objective="query"))


class VonOswaldDeepConfig(ExperimentConfig):
    """Config of ``vonoswald-deep``: task, the depths K, LSA init, training and evaluation sizes."""

    d: int = Field(10, ge=1, description="input dimension")
    n_context: int = Field(10, ge=1, description="number of in-context examples N")
    input_range: float = Field(1.0, gt=0, description="x ~ U(-r/2, r/2)^d")
    noise_std: float = Field(0.0, ge=0, description="label noise std")
    ks: list[int] = Field([1, 2, 3, 4, 5], description="numbers of LSA layers K (one model trained per K)")
    init_scale: float = Field(0.002, gt=0, description="initial weights ~ N(0, init_scale / (K (d + 1))) for K "
                                                       "layers (the released code's VarianceScaling(0.002 / K))")
    token_clip: float = Field(10.0, ge=0, description="clip every token to [-c, c] after each layer (0 = off)")
    eval_batch_size: int = Field(4096, ge=16, description="tasks in the final evaluation batch")
    fit_batch_size: int = Field(4096, ge=16, description="tasks used to fit the GD / GD++ hyper-parameters")
    interp_points: int = Field(11, ge=2, description="points a in [0, 1] of the interpolation figure")
    deep_from: int = Field(4, ge=1, description="models with K >= deep_from layers train with deep_lr")
    deep_lr: float = Field(5e-4, gt=0, description="train.lr for K >= deep_from (the released code: 5e-4 for K > 3)")
    train: VonOswaldDeepTrain = Field(default_factory=VonOswaldDeepTrain,
                                      description="training of every K; n_points = n_context + 1, seed derived "
                                                  "from seed and K, lr capped at deep_lr for K >= deep_from")

    @field_validator("ks")
    @classmethod
    def _ks(cls, v: list[int]) -> list[int]:
        if not v or any(k < 1 for k in v) or len(set(v)) != len(v):
            raise ValueError(f"ks must be distinct integers >= 1, got {v}")
        return sorted(v)


def aligned_construction(model: LSA, lrs: list[float], gammas: list[float]) -> LSA:
    """GD++ construction (``constructions.gd_plus_plus``) rescaled per layer to the trained model's W_KQ scale.

    Layer l's (W_KQ, W_PV) -> (c_l W_KQ, W_PV / c_l) with c_l = mean diag of the trained W_KQ^l[x, x] (summed over
    heads); the function is unchanged (the layer uses the product W_PV S W_KQ). Returns a merged float32 LSA with
    the trained model's token clip (GD++ itself is unclipped: the two agree while no token leaves [-clip, clip]).
    """
    d, k = model.d, model.layers
    con = constructions.gd_plus_plus(d=d, steps=k, lr=lrs, gamma=gammas, heads=model.heads, dtype=torch.float64)
    kq_t, _ = model.matrices()
    kq, pv = con.matrices()
    kq, pv = kq.detach().clone(), pv.detach().clone()
    for layer in range(k):
        c = float(torch.diagonal(kq_t[layer].detach().double().sum(0)[:d, :d]).mean()) / model.heads
        if abs(c) < 1e-8:
            c = 1.0
        kq[layer] *= c
        pv[layer] /= c
    out = LSA(d=d, layers=k, heads=model.heads, param="merged", init_std=0.0, clip=model.clip).double()
    return out.load_matrices(kq, pv).float()


def projected_hparams(model: LSA) -> tuple[list[float], list[float]]:
    """Per-layer (lr, gamma) of the GD++ construction nearest to the trained weights (heads summed).

    With c = mean diag W_KQ[x, x], lr = -c * W_PV[y, y] and gamma = -c * mean diag W_PV[x, x]: the construction
    keeps only these entries (and the last layer's gamma, which reaches no prediction, is set to 0).
    """
    kq, pv = model.matrices()
    d = model.d
    lrs, gammas = [], []
    for layer in range(model.layers):
        k, v = kq[layer].detach().double().sum(0), pv[layer].detach().double().sum(0)
        c = float(torch.diagonal(k[:d, :d]).mean())
        lrs.append(-c * float(v[d, d]))
        gammas.append(-c * float(torch.diagonal(v[:d, :d]).mean()) if layer + 1 < model.layers else 0.0)
    return lrs, gammas


def _fit_construction(model: LSA, task: LinearRegression, cfg: VonOswaldDeepConfig, k: int,
                      gd_lr: float) -> tuple[list[float], list[float]]:
    b = task.sample(min(cfg.fit_batch_size, 4096), cfg.n_context + 1, generator(cfg.seed, "construction-fit", k),
                    dtype=torch.float64)
    cx, cy, qx, _ = b.split(cfg.n_context)
    with torch.no_grad():
        target = model.double()(cx, cy, qx).unsqueeze(0)
    model.float()
    # start from the best constant lr of K-step GD against the model (gd_lr is only the grid centre)
    lrs = gd_lr * np.geomspace(0.3, 3.0, 25)
    d = [float(sq_diff(gd_predictions(cx, cy, qx, k, float(lr))[-1:], target)[0, 0]) for lr in lrs]
    fit = fit_gdpp(cx, cy, qx, target, [k], [float(lrs[int(np.argmin(d))])])
    return fit.hparams[0]["lr"], fit.hparams[0]["gamma"]


def _layerwise_metrics(model: LSA, layerwise: GDPlusPlus, ev, lsa_loss: float) -> dict:
    """Loss, LSA ratio, alignment and per-layer (lr, gamma) of the per-layer GD++ on the evaluation batch ``ev``
    (contexts (B, N, d), (B, N), queries (B, Q, d), (B, Q)); per-layer keys carry the layer l = 1..K as ``_l{l}``."""
    cx, cy, qx, qy = ev
    with torch.no_grad():
        p_lsa, p = model(cx, cy, qx), layerwise(cx, cy, qx)
    loss = float(metrics.half_mse(p, qy))
    out = {"gdpp_layerwise_loss": loss, "lsa_over_gdpp_layerwise": lsa_loss / loss,
           "pred_diff_gdpp_layerwise": metrics.pred_diff(p_lsa, p),
           "sens_cos_gdpp_layerwise": metrics.sens_cos(model, layerwise, cx, cy, qx)}
    for layer, (lr, gamma) in enumerate(zip(layerwise.lr, layerwise.gamma, strict=True), start=1):
        out[f"gdpp_layerwise_lr@l{layer}"] = lr
        out[f"gdpp_layerwise_gamma@l{layer}"] = gamma
    return out


def _one_k(cfg: VonOswaldDeepConfig, ctx: RunContext, task: LinearRegression, k: int, ev) -> dict:
    n = cfg.n_context
    gd, gdpp = fit_gd_gdpp(cfg, task, k)
    layerwise = GDPlusPlus.fit_layerwise(task, steps=k, n_context=n, generator=generator(cfg.seed, "gdpp", k),
                                         batch_size=cfg.fit_batch_size)  # the same fit batch as the shared fit
    mon = task.sample(1024, n + 1, generator(cfg.seed, "monitor", k))
    mcx, mcy, mqx, _ = mon.split(n)
    gd_mon, gdpp_mon = gd(mcx, mcy, mqx), gdpp(mcx, mcy, mqx)

    def eval_fn(model: LSA, step: int) -> dict[str, float]:
        with torch.no_grad():
            p = model(mcx, mcy, mqx)
        return {"pred_diff_gd": metrics.pred_diff(p, gd_mon), "pred_diff_gdpp": metrics.pred_diff(p, gdpp_mon),
                "sens_cos_gd": metrics.sens_cos(model, gd, mcx, mcy, mqx),
                "sens_cos_gdpp": metrics.sens_cos(model, gdpp, mcx, mcy, mqx)}

    model, _ = train_lsa(cfg, ctx, task, k, f"k{k}", eval_fn=eval_fn, clip=cfg.token_clip or None,
                         init_std=math.sqrt(cfg.init_scale / (k * (cfg.d + 1))))

    cx, cy, qx, qy = ev
    with torch.no_grad():
        p_lsa, p_gd, p_gdpp = model(cx, cy, qx), gd(cx, cy, qx), gdpp(cx, cy, qx)
    out = {"lsa_loss": float(metrics.half_mse(p_lsa, qy)), "gd_loss": float(metrics.half_mse(p_gd, qy)),
           "gdpp_loss": float(metrics.half_mse(p_gdpp, qy)), "gd_lr": float(gd.lr), "gdpp_lr": float(gdpp.lr),
           "gdpp_gamma": float(gdpp.gamma),
           "pred_diff_gd": metrics.pred_diff(p_lsa, p_gd), "pred_diff_gdpp": metrics.pred_diff(p_lsa, p_gdpp),
           "sens_cos_gd": metrics.sens_cos(model, gd, cx, cy, qx),
           "sens_cos_gdpp": metrics.sens_cos(model, gdpp, cx, cy, qx)}
    out.update(_layerwise_metrics(model, layerwise, ev, out["lsa_loss"]))
    best = "gdpp" if out["pred_diff_gdpp"] < out["pred_diff_gd"] else "gd"
    out["best_is_gdpp"] = float(best == "gdpp")
    out["sens_cos"] = out[f"sens_cos_{best}"]
    out["pred_diff"] = out[f"pred_diff_{best}"]

    lrs, gammas = _fit_construction(model, task, cfg, k, float(gd.lr))
    with torch.no_grad():
        fitted = aligned_construction(model, lrs, gammas)
        out["construction_loss"] = float(metrics.half_mse(fitted(cx, cy, qx), qy))
    con = aligned_construction(model, *projected_hparams(model))
    alphas = np.linspace(0.0, 1.0, cfg.interp_points)
    curve = []
    for a in alphas:
        mixed = metrics.interpolate(model, con, float(a))
        with torch.no_grad():
            curve.append(float(metrics.half_mse(mixed(cx, cy, qx), qy)))
    out["projected_loss"] = curve[-1]
    out["interp_loss"] = float(np.interp(0.5, alphas, curve))
    out["_curve"] = curve
    out["_alphas"] = alphas.tolist()
    return out


def _figures(ctx: RunContext, cfg: VonOswaldDeepConfig, per_k: dict[int, dict]) -> None:
    plotting.paper_style()
    import matplotlib.pyplot as plt

    ks = sorted(per_k)
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.2))
    ax = axes[0]
    ax.plot(ks, [per_k[k]["lsa_loss"] for k in ks], "o-", color=plotting.PALETTE["model"], label="trained LSA")
    ax.plot(ks, [per_k[k]["gd_loss"] for k in ks], "s--", color=plotting.PALETTE["gd"], label="GD (K steps)")
    ax.plot(ks, [per_k[k]["gdpp_loss"] for k in ks], "^--", color=plotting.PALETTE["gdpp"],
            label="GD++, shared (lr, γ)")
    ax.plot(ks, [per_k[k]["gdpp_layerwise_loss"] for k in ks], "v-.", color=plotting.PALETTE["gdpp"], mfc="none",
            label="GD++, per-layer (lr, γ)")
    ax.plot(ks, [per_k[k]["interp_loss"] for k in ks], "d:", color=plotting.PALETTE["construction"],
            label="interpolated (a=0.5)")
    ax.set_yscale("log")
    ax.set_xticks(ks)
    ax.set_xlabel("number of layers / steps K")
    ax.set_ylabel("loss (1/2 MSE)")
    ax.legend()
    ax = axes[1]
    training_curves(ax, ctx.out, per_k, "loss; --: GD++ shared, -.: per layer",
                    lines=(("gdpp_loss", "--"), ("gdpp_layerwise_loss", "-.")))
    ax.legend(ncol=2)
    fig.suptitle(f"Deep LSA vs K steps of GD / GD++ (d={cfg.d}, N={cfg.n_context})")
    fig.tight_layout()
    plotting.save_figure(fig, ctx.path("losses"))

    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.0))
    for name, key, style in (("gd", "GD", "o-"), ("gdpp", "GD++ shared", "o-"),
                             ("gdpp_layerwise", "GD++ per layer", "v-.")):
        color = plotting.PALETTE["gdpp" if name.startswith("gdpp") else name]
        axes[0].plot(ks, [per_k[k][f"sens_cos_{name}"] for k in ks], style, color=color, label=key)
        axes[1].plot(ks, [per_k[k][f"pred_diff_{name}"] for k in ks], style, color=color, label=key)
    axes[0].set_ylabel("cosine sim. of sensitivities")
    axes[0].set_ylim(min(0.8, min(per_k[k]["sens_cos_gd"] for k in ks) - 0.02), 1.005)
    axes[1].set_ylabel("pred diff (mean |Δ|)")
    axes[1].set_yscale("log")
    for a in axes:
        a.set_xticks(ks)
        a.set_xlabel("K")
        a.legend()
    fig.suptitle("Trained K-layer LSA vs K steps of GD / GD++")
    fig.tight_layout()
    plotting.save_figure(fig, ctx.path("alignment"))

    fig, ax = plt.subplots(figsize=(4.6, 3.2))
    for i, k in enumerate(ks):
        ax.plot(per_k[k]["_alphas"], per_k[k]["_curve"], "o-", ms=3, color=cmap(i / max(len(ks) - 1, 1)),
                label=f"K={k}")
    ax.set_yscale("log")
    ax.set_xlabel("a: (1-a) trained + a construction")
    ax.set_ylabel("loss (1/2 MSE)")
    ax.set_title("Trained LSA → its projection on the GD++ construction")
    ax.legend()
    plotting.save_figure(fig, ctx.path("interpolation"))


@register("vonoswald-deep", "von Oswald Fig. 3: K-layer LSA trained vs K steps of GD and GD++ (d=10, N=10)",
          config=VonOswaldDeepConfig,
          quick={"ks": [1, 2], "train.steps": 300, "train.batch_size": 512, "train.eval_every": 50,
                 "train.ckpt_every": 0, "train.warmup_steps": 20, "train.lr": 5e-3, "eval_batch_size": 2048,
                 "fit_batch_size": 2048, "interp_points": 5})
def run(cfg: VonOswaldDeepConfig, ctx: RunContext) -> dict[str, float]:
    """Train a K-layer LSA for every K, fit GD / GD++ (shared and per layer), compare and interpolate."""
    task = regression_task(cfg)
    ev = task.sample(cfg.eval_batch_size, cfg.n_context + 1, generator(cfg.seed, "final-eval")).split(cfg.n_context)
    per_k = {k: _one_k(cfg, ctx, task, k, ev) for k in cfg.ks}
    _figures(ctx, cfg, per_k)
    out: dict[str, float] = {}
    for k, r in per_k.items():
        for key, v in r.items():
            if not key.startswith("_"):
                base, _, layer = key.partition("@")  # per-layer values: {key}_k{K}_l{l}
                out[f"{base}_k{k}" + (f"_{layer}" if layer else "")] = float(v)
    bad = [k for k, v in out.items() if not math.isfinite(v)]
    if bad:
        raise RuntimeError(f"vonoswald-deep produced non-finite metrics: {bad}")
    return out
