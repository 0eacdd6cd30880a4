"""Fu et al. (arXiv 2310.17086) Fig. 2/3: transformer layers track Iterative Newton iterations, not GD steps.

Task: noiseless linear regression with ill-conditioned inputs, x ~ N(0, Sigma), Sigma = R diag(lambda) R^T with a
geometric spectrum of condition number kappa (``LinearRegression(x_dist="anisotropic")``). Model: the GPT-style
causal transformer (``models.GPT``) on interleaved (x, y) tokens, trained on all prefix positions.

Per-layer read-out: the paper's approach, a linear probe (ridge with bias, ``analysis.probes``) from the hidden
state at the query's x-token to the label y, fitted on a separate probe batch (``readout="probe"``), or the
model's own read-out applied to every layer (``readout="model"``, logit-lens style).

For every layer l and every Newton iteration k (``IterativeNewton``, k = 0..max_newton_iters) and number of GD
steps s (log grid up to ``max_gd_steps``, lr maximised over a log grid per s), the similarity is the cosine of
the error vectors (pred - y) over the evaluation batch (the paper's "similarity of errors"). Per layer the best
Newton iteration / GD step count maximises it. Metrics: ``best_newton_iter_l{l}``, ``best_gd_steps_l{l}``,
``newton_sim_l{l}``, ``gd_sim_l{l}`` (the maxima), the line fit best_newton_iter ~ a * layer + b
(``newton_slope``, ``newton_r2`` over the layers whose best iteration is not at the scan's end) and
log2(best_gd_steps) ~ layer (``gd_log2_slope``); losses (MSE) of the model, OLS and the best matches.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import Field, model_validator

from mesaopt import plotting
from mesaopt.algorithms import OLS
from mesaopt.analysis import probes
from mesaopt.analysis.families import gd_predictions, newton_predictions
from mesaopt.experiments.base import ExperimentConfig, RunContext, register
from mesaopt.models.gpt import GPT
from mesaopt.seeding import derive_seed, generator
from mesaopt.tasks import LinearRegression
from mesaopt.train import train
from mesaopt.train.settings import train_settings

__all__ = ["FuNewtonConfig", "err_cos_matrix", "match_layers"]

# Garg-style curriculum (dims 2 -> 5, points 6 -> 21, full size from step 1251) and lr 2e-3: measured on one core,
# see docs/experiments/fu-newton.md (lr 1e-3 without or with the curriculum stays at query error/d ~0.35 for 1000s
# of steps)
_CURRICULUM = {"dims": {"start": 2, "end": 5, "inc": 1, "interval": 250},
               "points": {"start": 6, "end": 21, "inc": 3, "interval": 250}}
FuNewtonTrain = train_settings(
    "FuNewtonTrain", dict(steps=4000, batch_size=64, lr=2e-3, optimizer="adamw", weight_decay=0.0,
                          schedule="warmup_cosine", warmup_steps=200, min_lr_ratio=0.05, grad_clip=1.0,
                          eval_every=250, eval_batch_size=512, ckpt_every=500, loss="mse", objective="prefix",
                          curriculum=_CURRICULUM))


class FuNewtonConfig(ExperimentConfig):
    """Config of ``fu-newton``: ill-conditioned task, GPT shape, training, read-out and scan ranges."""

    threads: int | None = Field(1, ge=1, description="torch intra-op threads for the run (None = torch default); "
                                                     "1 is fastest for this small GPT on a shared CPU")
    d: int = Field(5, ge=1, description="input dimension")
    n_context: int = Field(20, ge=1, description="in-context examples N before the query (sequences have N+1)")
    condition_number: float = Field(100.0, ge=1.0, description="kappa of the input covariance")
    layers: int = Field(6, ge=1, description="transformer layers")
    heads: int = Field(4, ge=1, description="attention heads")
    width: int = Field(64, ge=1, description="residual stream width")
    readout: str = Field("probe", description="probe (linear probe per layer) | model (the model's read-out)")
    max_newton_iters: int = Field(12, ge=1, description="Newton iterations scanned")
    max_gd_steps: int = Field(512, ge=1, description="largest number of GD steps scanned")
    n_lr: int = Field(25, ge=2, description="GD learning rates scanned per step count")
    probe_batch_size: int = Field(4096, ge=16, description="sequences used to fit the per-layer probes")
    eval_batch_size: int = Field(2048, ge=16, description="sequences in the evaluation batch")
    train: FuNewtonTrain = Field(default_factory=FuNewtonTrain,
                                 description="training; seed, device and n_points = n_context + 1 come from above")

    @model_validator(mode="after")
    def _check(self) -> FuNewtonConfig:
        if self.readout not in ("probe", "model"):
            raise ValueError(f"readout must be one of ['probe', 'model'], got {self.readout!r}")
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be divisible by heads ({self.heads})")
        return self


def err_cos_matrix(preds: torch.Tensor, layers: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of error vectors: candidates (S, B, Q), layers (L, B, Q), y (B, Q) -> (S, L)."""
    ea = (preds.to(torch.float64) - y.to(torch.float64)).flatten(1)
    eb = (layers.to(torch.float64) - y.to(torch.float64)).flatten(1)
    num = ea @ eb.T
    den = ea.norm(dim=1)[:, None] * eb.norm(dim=1)[None, :]
    out = num / den.clamp_min(1e-300)
    return torch.nan_to_num(out, nan=-1.0, posinf=-1.0, neginf=-1.0)


def _fit_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    if len(x) < 2 or np.ptp(x) == 0:
        return 0.0, float(y.mean()) if len(y) else 0.0, 0.0
    a, b = np.polyfit(x, y, 1)
    res = y - (a * x + b)
    tot = ((y - y.mean()) ** 2).sum()
    return float(a), float(b), float(1.0 - (res**2).sum() / tot) if tot > 0 else 1.0


def _figures(ctx: RunContext, cfg: FuNewtonConfig, newton_sim: np.ndarray, gd_sim: np.ndarray, gd_steps: list[int],
             best_newton: np.ndarray, best_gd: np.ndarray, line: tuple[float, float, float]) -> None:
    plotting.paper_style()
    import matplotlib.pyplot as plt

    n_layers = newton_sim.shape[1]
    layers = np.arange(1, n_layers + 1)
    fig, axes = plt.subplots(1, 3, figsize=(13.0, 3.4))
    for ax, sim, ylabels, title in ((axes[0], newton_sim, list(range(newton_sim.shape[0])), "Iterative Newton"),
                                    (axes[1], gd_sim, gd_steps, "GD (best lr per #steps)")):
        im = ax.imshow(sim, aspect="auto", origin="lower", cmap="viridis", vmin=max(0.0, float(sim.min())), vmax=1.0)
        ax.set_xticks(range(n_layers))
        ax.set_xticklabels(layers)
        ax.set_yticks(range(len(ylabels)))
        ax.set_yticklabels(ylabels, fontsize=6)
        ax.set_xlabel("transformer layer")
        ax.set_ylabel("iterations" if "Newton" in title else "GD steps")
        ax.set_title(f"similarity of errors: {title}")
        ax.grid(False)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax = axes[2]
    ax.plot(layers, best_newton, "o", color=plotting.PALETTE["newton"], label="best Newton iteration")
    a, b, r2 = line
    ax.plot(layers, a * layers + b, "-", color=plotting.PALETTE["newton"], lw=1, label=f"fit {a:.2f}·l + {b:.2f} "
                                                                                        f"(R²={r2:.2f})")
    ax2 = ax.twinx()
    ax2.plot(layers, best_gd, "s--", color=plotting.PALETTE["gd"], label="best #GD steps")
    ax2.set_yscale("log", base=2)
    ax2.set_ylabel("GD steps (log scale)", color=plotting.PALETTE["gd"])
    ax.set_xlabel("transformer layer")
    ax.set_ylabel("Newton iterations")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper left")
    ax.set_title("layer ↔ algorithm step")
    fig.suptitle(f"Fu et al.: GPT ({cfg.layers} layers) on ill-conditioned regression (d={cfg.d}, N={cfg.n_context}, "
                 f"κ={cfg.condition_number:g}, read-out: {cfg.readout})")
    fig.tight_layout()
    plotting.save_figure(fig, ctx.path("newton_vs_gd"))

    plotting.loss_curve(ctx.path("loss"), ctx.out / "metrics.jsonl", ylabel="eval loss (MSE, all positions)")


def match_layers(lay: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, qx: torch.Tensor, y: torch.Tensor,
                 cfg: FuNewtonConfig) -> tuple[dict[str, float], tuple]:
    """Match per-layer predictions to Newton iterations and GD steps by the cosine of their error vectors.

    ``lay`` (L, B, 1) float64 per-layer predictions at the queries; ``cx`` (B, N, d), ``cy`` (B, N), ``qx`` (B, 1, d),
    ``y`` (B, 1) float64 the labels. Returns the per-layer metrics (``best_newton_iter_l{l}``, ``newton_sim_l{l}``,
    ``best_gd_steps_l{l}``, ``best_gd_lr_l{l}``, ``gd_sim_l{l}``, ``layer_loss_l{l}``), the line fits
    ``newton_slope`` / ``newton_intercept`` / ``newton_r2`` (best iteration ~ layer, over the layers whose best
    iteration is inside the scan) and ``gd_log2_slope`` / ``gd_log2_r2`` (log2 best GD steps ~ layer), the mean
    similarities, and the arrays the figures draw.
    """
    newton = newton_predictions(cx, cy, qx, cfg.max_newton_iters)  # (K+1, B, 1)
    newton_sim = err_cos_matrix(newton, lay, y).numpy()  # (K+1, L)
    gd_steps = sorted({int(round(v)) for v in np.geomspace(1, cfg.max_gd_steps, 16)})
    scale = 1.0 / float((cx.double() ** 2).sum(-1).mean() / cfg.d)
    lam_max = float(torch.linalg.eigvalsh(cx.double().transpose(1, 2) @ cx.double() / cx.shape[1])[:, -1].median())
    lrs = np.geomspace(scale * 1e-2, 2.0 / lam_max, cfg.n_lr)
    gd_sim_all = np.stack([err_cos_matrix(gd_predictions(cx, cy, qx, cfg.max_gd_steps, float(lr))[gd_steps], lay,
                                          y).numpy() for lr in lrs])  # (n_lr, S, L)
    gd_sim = gd_sim_all.max(0)
    best_lr_idx = gd_sim_all.argmax(0)

    n_layers = lay.shape[0]
    best_newton = newton_sim.argmax(0)
    best_gd = np.array([gd_steps[i] for i in gd_sim.argmax(0)])
    inside = best_newton < cfg.max_newton_iters
    layers = np.arange(1, n_layers + 1)
    line = _fit_line(layers[inside], best_newton[inside].astype(float))
    gd_line = _fit_line(layers, np.log2(best_gd.astype(float)))

    out: dict[str, float] = {"newton_slope": line[0], "newton_intercept": line[1], "newton_r2": line[2],
                             "gd_log2_slope": gd_line[0], "gd_log2_r2": gd_line[2],
                             "newton_sim_mean": float(newton_sim.max(0).mean()),
                             "gd_sim_mean": float(gd_sim.max(0).mean())}
    for i in range(n_layers):
        out[f"best_newton_iter_l{i + 1}"] = float(best_newton[i])
        out[f"best_gd_steps_l{i + 1}"] = float(best_gd[i])
        out[f"best_gd_lr_l{i + 1}"] = float(lrs[best_lr_idx[gd_sim.argmax(0)[i], i]])
        out[f"newton_sim_l{i + 1}"] = float(newton_sim[best_newton[i], i])
        out[f"gd_sim_l{i + 1}"] = float(gd_sim.max(0)[i])
        out[f"layer_loss_l{i + 1}"] = float(((lay[i] - y) ** 2).mean())
    return out, (newton_sim, gd_sim, gd_steps, best_newton, best_gd, line)


@register("fu-newton", "Fu et al.: GPT layers vs Iterative Newton iterations / GD steps on ill-conditioned data",
          config=FuNewtonConfig,
          quick={"layers": 4, "width": 32, "heads": 2, "train.steps": 300, "train.batch_size": 32,
                 "train.eval_every": 100, "train.ckpt_every": 0, "train.warmup_steps": 20, "train.lr": 3e-3,
                 "train.curriculum": None,
                 "probe_batch_size": 1024, "eval_batch_size": 512, "max_gd_steps": 64, "n_lr": 13,
                 "max_newton_iters": 8})
def run(cfg: FuNewtonConfig, ctx: RunContext) -> dict[str, float]:
    """Train the GPT, read out every layer, match it to Newton iterations and GD steps; returns the metrics."""
    n = cfg.n_context
    task = LinearRegression(d=cfg.d, noise_std=0.0, x_dist="anisotropic", condition_number=cfg.condition_number)
    model = GPT(d=cfg.d, n_positions=n + 1, layers=cfg.layers, heads=cfg.heads, width=cfg.width,
                seed=derive_seed(cfg.seed, "init") % (2**31))
    tcfg = cfg.train.to_train(seed=cfg.seed, device=cfg.device, n_points=n + 1)
    model = train(model, task, tcfg, out=ctx.out, resume=ctx.resume, progress=ctx.progress).model.cpu().eval()

    if cfg.readout == "probe":
        learner = probes.fit_readout(model, task, n, batch_size=cfg.probe_batch_size, seed=cfg.seed, lam=1e-4)
    else:
        learner = model
    ev = task.sample(cfg.eval_batch_size, n + 1, generator(cfg.seed, "eval"))
    cx, cy, qx, qy = ev.split(n)
    with torch.no_grad():
        lay = learner.forward_layers(cx, cy, qx).double()  # (L, B, 1)
    y = qy.double()

    out, fig = match_layers(lay, cx, cy, qx, y, cfg)
    _figures(ctx, cfg, *fig)

    with torch.no_grad():
        p_model = model(cx, cy, qx).double()
        p_ols = OLS()(cx.double(), cy.double(), qx.double())
    out = {"model_loss": float(((p_model - y) ** 2).mean()), "ols_loss": float(((p_ols - y) ** 2).mean()),
           "last_layer_probe_loss": float(((lay[-1] - y) ** 2).mean()), **out}
    bad = [k for k, v in out.items() if not math.isfinite(v)]
    if bad:
        raise RuntimeError(f"fu-newton produced non-finite metrics: {bad}")
    return out
