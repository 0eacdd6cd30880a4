"""von Oswald et al. (arXiv 2212.07677) Sec. 4: non-linear regression by GD on a learned deep data representation.

Task (``tasks.SineWave``): y = a sin(x + phi), a ~ U(0.1, 0.5), phi ~ U(0, 2 pi) (the paper's code: U(0, pi);
docs/experiments/vonoswald-sine.md says why we widen it), x ~ U(-5, 5), N = 10 context points, one query,
loss = 1/2 * MSE. Models, both trained through ``train``:
``FeatureLSA`` (a per-token MLP phi(x) shared across tokens, then LSA on [phi(x); y], end to end; folder
``mlp_lsa/``) and a plain ``LSA`` on the raw x (folder ``lsa/``). Baselines on one held-out batch:
GD on the trained MLP's features (``layers`` steps of ``OnFeatures(GD, phi)``, lr fitted by ``GD.fit_lr`` on
featurised tasks), ridge on those features (lam fitted on a grid), RBF kernel ridge on the raw x ((lam,
bandwidth) fitted on a grid), one GD step on the raw x, and predicting 0.

Metrics (losses 1/2 * MSE): ``mlp_lsa_loss``, ``lsa_loss``, ``gd_features_loss`` (+ ``gd_features_lr``),
``ridge_features_loss`` (+ ``ridge_features_lam``), ``kernel_ridge_loss`` (+ ``kernel_ridge_lam``,
``kernel_ridge_bandwidth``), ``gd_loss`` (raw x), ``zero_loss``; ``sens_cos_gd_features`` / ``pred_diff_gd_features``:
the MLP+LSA's attention part against GD, both run on the trained features, sensitivities taken with respect to
the query's feature vector phi(x_q) (a ``features``-dim vector; with respect to the 1-D raw x a cosine is only a
sign).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import Field

from mesaopt import plotting
from mesaopt.algorithms import GD, Ridge
from mesaopt.algorithms.features import FeaturizedTask, OnFeatures
from mesaopt.algorithms.kernel_ridge import fit_rbf_kernel_ridge, rbf_kernel_ridge
from mesaopt.analysis import metrics
from mesaopt.experiments.base import ExperimentConfig, RunContext, register
from mesaopt.models import LSA
from mesaopt.models.feature_lsa import FeatureLSA
from mesaopt.seeding import derive_seed, generator
from mesaopt.tasks.nonlinear import SineWave
from mesaopt.train import train
from mesaopt.train.settings import train_settings

__all__ = ["VonOswaldSineConfig", "fit_ridge_lam"]

SineTrain = train_settings(
    "SineTrain", dict(steps=4000, batch_size=512, lr=3e-3, optimizer="adam", schedule="cosine", min_lr_ratio=0.05,
                      grad_clip=10.0, eval_every=200, eval_batch_size=2048, ckpt_every=1000, loss="half_mse",
                      objective="query"))


class VonOswaldSineConfig(ExperimentConfig):
    """Config of ``vonoswald-sine``: the sine task, the MLP + LSA shape, training, evaluation and baseline grids."""

    n_context: int = Field(10, ge=1, description="number of in-context examples N")
    input_range: float = Field(10.0, gt=0, description="x ~ U(-r/2, r/2)")
    amp_min: float = Field(0.1, ge=0, description="smallest amplitude")
    amp_max: float = Field(0.5, gt=0, description="largest amplitude")
    phase_max: float = Field(2 * math.pi, ge=0, description="phase phi ~ U(0, phase_max); the paper's code: pi")
    features: int = Field(40, ge=1, description="output width of the MLP (the LSA's input dimension)")
    hidden: int = Field(160, ge=1, description="hidden width of the MLP")
    layers: int = Field(1, ge=1, description="LSA layers of both models (= GD steps of the feature baseline)")
    init_std: float = Field(0.002, gt=0, description="std of the LSA weights at init")
    eval_batch_size: int = Field(8192, ge=16, description="tasks in the final evaluation batch")
    fit_batch_size: int = Field(4096, ge=16, description="tasks used to fit every baseline's hyper-parameters")
    ridge_lams: list[float] = Field([1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0], min_length=1,
                                    description="grid of ridge lam on the learned features")
    kernel_lams: list[float] = Field([1e-4, 1e-3, 1e-2, 1e-1, 1.0], min_length=1, description="kernel ridge lam grid")
    kernel_bandwidths: list[float] = Field([0.25, 0.5, 1.0, 1.5, 2.0, 3.0], min_length=1,
                                           description="RBF bandwidth grid h (k = exp(-|a-b|^2 / 2h^2))")
    train: SineTrain = Field(default_factory=SineTrain,
                             description="training of both models; n_points = n_context + 1, seeds derived from seed")
    threads: int | None = Field(1, ge=1, description="torch CPU threads")


def fit_ridge_lam(fx: torch.Tensor, fy: torch.Tensor, qx: torch.Tensor, qy: torch.Tensor,
                  lams: list[float]) -> tuple[float, float]:
    """(lam, mean squared query error) of the best ``Ridge(lam)`` on one batch (B,N,m), (B,N), (B,Q,m), (B,Q)."""
    errs = [float((Ridge(lam)(fx, fy, qx).double() - qy.double()).pow(2).mean()) for lam in lams]
    i = int(np.argmin(errs))
    return float(lams[i]), errs[i]


def _train(model: torch.nn.Module, task: SineWave, cfg: VonOswaldSineConfig, ctx: RunContext, name: str,
           eval_fn=None) -> torch.nn.Module:
    tcfg = cfg.train.to_train(seed=derive_seed(cfg.seed, "train", name) % (2**31), device=cfg.device,
                              n_points=cfg.n_context + 1)
    res = train(model, task, tcfg, out=ctx.path(name), resume=ctx.resume, eval_fn=eval_fn, progress=ctx.progress)
    return res.model.cpu().eval()


def _feature_gd(model: FeatureLSA, task: SineWave, cfg: VonOswaldSineConfig, stream: str) -> GD:
    """GD with ``layers`` steps and lr fitted on the model's current features."""
    return GD.fit_lr(FeaturizedTask(task, model.features_of), steps=cfg.layers, n_context=cfg.n_context,
                     generator=generator(cfg.seed, stream), batch_size=cfg.fit_batch_size)


def _monitor(model: FeatureLSA, task: SineWave, cfg: VonOswaldSineConfig):
    mon = task.sample(1024, cfg.n_context + 1, generator(cfg.seed, "monitor"))
    mcx, mcy, mqx, mqy = mon.split(cfg.n_context)

    def eval_fn(m: FeatureLSA, step: int) -> dict[str, float]:
        gd = _feature_gd(m, task, cfg, "gd-lr-monitor")
        with torch.no_grad():
            fcx, fqx = m.features_of(mcx), m.features_of(mqx)
            p_gd = gd(fcx, mcy, fqx)
        return {"gd_features_loss": float(metrics.half_mse(p_gd, mqy)),
                "sens_cos_gd_features": metrics.sens_cos(m.lsa, gd, fcx, mcy, fqx)}

    return eval_fn


def _compare(cfg: VonOswaldSineConfig, task: SineWave, mlp_lsa: FeatureLSA, lsa: LSA, ev) -> tuple[dict, dict]:
    """All metrics on the evaluation batch, and the fitted learners (for the example figure)."""
    cx, cy, qx, qy = ev
    n = cfg.n_context
    gd_f = _feature_gd(mlp_lsa, task, cfg, "gd-lr")
    gd_raw = GD.fit_lr(task, steps=cfg.layers, n_context=n, generator=generator(cfg.seed, "gd-raw"),
                       batch_size=cfg.fit_batch_size)
    fit = task.sample(cfg.fit_batch_size, n + 1, generator(cfg.seed, "baseline-fit")).split(n)
    with torch.no_grad():
        feats = [mlp_lsa.features_of(t) for t in (fit[0], fit[2])]
        lam, _ = fit_ridge_lam(feats[0], fit[1], feats[1], fit[3], cfg.ridge_lams)
        k_lam, k_bw, _ = fit_rbf_kernel_ridge(*fit, cfg.kernel_lams, cfg.kernel_bandwidths)
        fcx, fqx = mlp_lsa.features_of(cx), mlp_lsa.features_of(qx)
        preds = {"mlp_lsa": mlp_lsa(cx, cy, qx), "lsa": lsa(cx, cy, qx), "gd_features": gd_f(fcx, cy, fqx),
                 "ridge_features": Ridge(lam)(fcx, cy, fqx), "kernel_ridge": rbf_kernel_ridge(cx, cy, qx, k_lam, k_bw),
                 "gd": gd_raw(cx, cy, qx), "zero": torch.zeros_like(qy)}
    out = {f"{k}_loss": float(metrics.half_mse(p, qy)) for k, p in preds.items()}
    out.update({"gd_features_lr": float(gd_f.lr), "gd_lr": float(gd_raw.lr), "ridge_features_lam": lam,
                "kernel_ridge_lam": k_lam, "kernel_ridge_bandwidth": k_bw,
                "sens_cos_gd_features": metrics.sens_cos(mlp_lsa.lsa, gd_f, fcx, cy, fqx),
                "pred_diff_gd_features": metrics.pred_diff(preds["mlp_lsa"], preds["gd_features"]),
                "loss_ratio_mlp_lsa_lsa": out["mlp_lsa_loss"] / out["lsa_loss"]})
    learners = {"MLP + LSA": mlp_lsa, "LSA (raw x)": lsa,
                "GD on learned features": OnFeatures(gd_f, mlp_lsa.features_of),
                "kernel ridge (RBF)": lambda a, b, c: rbf_kernel_ridge(a, b, c, k_lam, k_bw)}
    return out, learners


def _figures(ctx: RunContext, cfg: VonOswaldSineConfig, out: dict, learners: dict, task: SineWave) -> None:
    plotting.paper_style()
    import matplotlib.pyplot as plt

    names = ["mlp_lsa", "gd_features", "ridge_features", "kernel_ridge", "lsa", "gd", "zero"]
    labels = ["MLP+LSA", "GD on\nfeatures", "ridge on\nfeatures", "kernel\nridge", "LSA\n(raw x)", "GD\n(raw x)", "0"]
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.2))
    colors = [plotting.PALETTE[k] for k in ("model", "gd", "ridge", "ols", "averaging", "gdpp", "construction")]
    axes[0].bar(range(len(names)), [out[f"{k}_loss"] for k in names], color=colors)
    axes[0].set_xticks(range(len(names)), labels, fontsize=7)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("loss (1/2 MSE)")
    ax = axes[1]
    plotting.loss_curve(ax, ctx.out / "mlp_lsa" / "metrics.jsonl", ["eval_loss", "gd_features_loss"],
                        labels=["MLP+LSA", "GD on its current features"],
                        colors=[plotting.PALETTE["model"], plotting.PALETTE["gd"]], ylabel="loss (1/2 MSE)")
    plotting.loss_curve(ax, ctx.out / "lsa" / "metrics.jsonl", labels=["LSA (raw x)"],
                        colors=[plotting.PALETTE["averaging"]], ylabel="loss (1/2 MSE)")
    ax.legend()
    fig.suptitle(f"Sine-wave regression, N={cfg.n_context}: losses and training curves")
    fig.tight_layout()
    plotting.save_figure(fig, ctx.path("losses"))

    plotting.loss_curve(ctx.path("alignment"), ctx.out / "mlp_lsa" / "metrics.jsonl", ["sens_cos_gd_features"],
                        ylabel="cos(sensitivities): MLP+LSA vs GD on features", log=False)

    b = task.sample(3, cfg.n_context, generator(cfg.seed, "example"))
    grid = torch.linspace(-cfg.input_range / 2, cfg.input_range / 2, 200).view(1, -1, 1).expand(3, -1, -1)
    truth = task.evaluate(grid, b.params)
    fig, axes = plt.subplots(1, 3, figsize=(11.0, 3.0), sharey=True)
    with torch.no_grad():
        preds = {k: f(b.xs, b.ys, grid.contiguous()) for k, f in learners.items()}
    for i, ax in enumerate(axes):
        ax.plot(grid[i, :, 0], truth[i], color="k", lw=1, label="target")
        ax.scatter(b.xs[i, :, 0], b.ys[i], color="k", s=14, zorder=5, label="context")
        for (k, p), c in zip(preds.items(), ("model", "averaging", "gd", "ols"), strict=True):
            ax.plot(grid[i, :, 0], p[i], color=plotting.PALETTE[c], lw=1.2, label=k)
        ax.set_xlabel("x")
    axes[0].legend(fontsize=6)
    fig.suptitle("Example sine waves: in-context points and predictions")
    plotting.save_figure(fig, ctx.path("examples"))


@register("vonoswald-sine", "von Oswald Sec. 4: MLP + LSA on sine-wave regression vs GD on its learned features",
          config=VonOswaldSineConfig,
          quick={"train.steps": 600, "train.batch_size": 256, "train.eval_every": 100, "train.ckpt_every": 0,
                 "train.lr": 3e-3, "features": 16, "hidden": 64, "eval_batch_size": 2048, "fit_batch_size": 1024})
def run(cfg: VonOswaldSineConfig, ctx: RunContext) -> dict[str, float]:
    """Train MLP+LSA and a plain LSA on sine waves, fit the baselines, compare; returns the metrics."""
    task = SineWave(input_range=cfg.input_range, amp_min=cfg.amp_min, amp_max=cfg.amp_max, phase_max=cfg.phase_max)
    mlp_lsa = FeatureLSA(d=1, features=cfg.features, hidden=cfg.hidden, layers=cfg.layers,
                         init_std=cfg.init_std, seed=derive_seed(cfg.seed, "init-mlp") % (2**31))
    mlp_lsa = _train(mlp_lsa, task, cfg, ctx, "mlp_lsa", _monitor(mlp_lsa, task, cfg))
    lsa = LSA(d=1, layers=cfg.layers, init_std=cfg.init_std, seed=derive_seed(cfg.seed, "init-lsa") % (2**31))
    lsa = _train(lsa, task, cfg, ctx, "lsa")
    ev = task.sample(cfg.eval_batch_size, cfg.n_context + 1, generator(cfg.seed, "final-eval")).split(cfg.n_context)
    out, learners = _compare(cfg, task, mlp_lsa, lsa, ev)
    _figures(ctx, cfg, out, learners, task)
    bad = [k for k, v in out.items() if not math.isfinite(v)]
    if bad:
        raise RuntimeError(f"vonoswald-sine produced non-finite metrics: {bad}")
    return out
