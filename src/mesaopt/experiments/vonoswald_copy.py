"""von Oswald et al. (arXiv 2212.07677) Sec. 5: a softmax layer builds the (x_i, y_i) tokens, then LSA does a GD step.

Task as ``vonoswald-gd`` (x ~ U(-r/2, r/2)^d, w ~ N(0, I), noiseless, d = 10, N = 10, loss = 1/2 * MSE of the
query), but x and y arrive as separate interleaved tokens (x_1, y_1, ..., x_N, y_N, x_q) with one-hot positions
(``models.CopyLSA``): a causal softmax layer must copy each x next to its y (the y-token attends to the token
before it), and a following LSA layer can then run one GD step. Trained through ``train``.

Metrics (losses 1/2 * MSE on a held-out batch): ``loss`` (the model), ``gd_loss`` (one GD step, lr fitted:
``GD.fit_lr``; ``gd_lr``), ``sens_cos`` / ``pred_diff`` / ``model_diff`` (model vs that GD step, sensitivities with
respect to x_q), ``copy_mass``: the attention weight a y-token puts on the x-token just before it (its own
example's x), averaged over y-tokens and tasks, for the head that copies best (max over heads of the per-head
mean); ``copy_mass_uniform``: the same mass under uniform causal attention (the no-learning reference, mean over
i of 1 / (2i + 2)); ``construction_err``: relative distance between GD and the hand-built copy-then-GD model
(``CopyLSA.load_copy`` with logit ``construction_logit``; float64).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import Field

from mesaopt import plotting
from mesaopt.algorithms import GD
from mesaopt.analysis import metrics
from mesaopt.experiments.base import ExperimentConfig, RunContext, register
from mesaopt.models.copy_lsa import CopyLSA
from mesaopt.seeding import derive_seed, generator
from mesaopt.tasks import LinearRegression
from mesaopt.train import train
from mesaopt.train.settings import train_settings

__all__ = ["VonOswaldCopyConfig", "copy_mass", "gd_copy_construction"]

CopyTrain = train_settings(
    "CopyTrain", dict(steps=2000, batch_size=512, lr=1e-2, optimizer="adam", schedule="cosine", min_lr_ratio=0.05,
                      grad_clip=10.0, eval_every=100, eval_batch_size=2048, ckpt_every=1000, loss="half_mse",
                      objective="query"))


class VonOswaldCopyConfig(ExperimentConfig):
    """Config of ``vonoswald-copy``: task, the softmax + LSA model, training and evaluation sizes."""

    d: int = Field(10, ge=1, description="input dimension")
    n_context: int = Field(10, ge=1, description="number of in-context examples N (2N context tokens)")
    input_range: float = Field(1.0, gt=0, description="x ~ U(-r/2, r/2)^d")
    heads: int = Field(2, ge=1, description="heads of the softmax copy layer (with 1 head, d = 10 got stuck)")
    init_std: float = Field(0.02, gt=0, description="std of the softmax layer's initial weights")
    lsa_init_std: float = Field(0.002, gt=0, description="std of the LSA's initial weights")
    eval_batch_size: int = Field(8192, ge=16, description="tasks in the final evaluation batch")
    lr_fit_batch_size: int = Field(8192, ge=16, description="tasks used to fit GD's lr")
    construction_logit: float = Field(40.0, gt=0, description="attention logit of the hand-built copy layer")
    train: CopyTrain = Field(default_factory=CopyTrain,
                             description="training; n_points = n_context + 1, seed derived from seed")
    threads: int | None = Field(1, ge=1, description="torch CPU threads")


def copy_mass(att: torch.Tensor, n_context: int) -> torch.Tensor:
    """Per-head mean attention of y-token 2i+1 on x-token 2i (i < N): pattern (B, H, 2N+Q, 2N+Q) -> (H,)."""
    rows = torch.arange(1, 2 * n_context, 2, device=att.device)
    return att[:, :, rows, rows - 1].mean(dim=(0, 2))


def gd_copy_construction(d: int, n_context: int, lr: float, logit: float, dtype=torch.float64) -> CopyLSA:
    """Hand-built ``CopyLSA`` whose prediction is one GD step with step size ``lr`` (as logit -> infinity).

    The copy layer moves x_i into y-token 2i+1; the LSA has W_KQ = identity on the x-block and W_PV = -2 lr on the
    y-slot (the factor 2: the LSA averages over the 2N context tokens, of which the N x-tokens carry y = 0).
    """
    m = CopyLSA(d=d, max_context=n_context, heads=1).to(dtype)
    dim = m.p + d + 1
    kq = torch.zeros(1, 1, dim, dim, dtype=dtype)
    kq[0, 0, m.p:m.p + d, m.p:m.p + d] = torch.eye(d, dtype=dtype)
    pv = torch.zeros(1, 1, dim, dim, dtype=dtype)
    pv[0, 0, -1, -1] = -2.0 * lr
    return m.load_copy(logit, kq, pv).eval()


def _figures(ctx: RunContext, cfg: VonOswaldCopyConfig, att: np.ndarray, gd_loss: float) -> None:
    plotting.paper_style()
    import matplotlib.pyplot as plt

    n = cfg.n_context
    labels = [f"{k}{i + 1}" for i in range(n) for k in ("x", "y")] + ["xq"]
    fig, axes = plt.subplots(1, att.shape[0], figsize=(4.4 * att.shape[0], 4.0), squeeze=False)
    for h, ax in enumerate(axes[0]):
        im = ax.imshow(att[h], cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(len(labels)), labels, fontsize=6, rotation=90)
        ax.set_yticks(range(len(labels)), labels, fontsize=6)
        ax.set_xlabel("attended token")
        if h == 0:
            ax.set_ylabel("attending token")
        ax.set_title(f"softmax attention, head {h} (batch mean)")
        ax.grid(False)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    plotting.save_figure(fig, ctx.path("attention"))

    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.0))
    plotting.loss_curve(axes[0], ctx.out / "metrics.jsonl", labels=["softmax copy + LSA"], ylabel="loss (1/2 MSE)")
    axes[0].axhline(gd_loss, color=plotting.PALETTE["gd"], ls="--", label="1 step of GD (fitted lr)")
    axes[0].legend()
    plotting.loss_curve(axes[1], ctx.out / "metrics.jsonl", ["copy_mass", "sens_cos"],
                        labels=["copy mass (y-token on its x)", "cos(sensitivities) with GD"],
                        colors=[plotting.PALETTE["model"], plotting.PALETTE["gd"]], ylabel="", log=False)
    axes[1].set_ylim(0, 1.02)
    axes[1].legend()
    fig.suptitle(f"Interleaved tokens: softmax copy layer + LSA vs GD, d={cfg.d}, N={n}")
    fig.tight_layout()
    plotting.save_figure(fig, ctx.path("loss"))


@register("vonoswald-copy", "von Oswald Sec. 5: a softmax layer copies x next to y, then LSA does one GD step",
          config=VonOswaldCopyConfig,
          quick={"d": 4, "n_context": 6, "heads": 1, "train.steps": 800, "train.batch_size": 256,
                 "train.eval_every": 100, "train.ckpt_every": 0, "eval_batch_size": 2048, "lr_fit_batch_size": 4096})
def run(cfg: VonOswaldCopyConfig, ctx: RunContext) -> dict[str, float]:
    """Train softmax copy + LSA on interleaved tokens, fit GD's lr, compare; returns the metrics."""
    task = LinearRegression(d=cfg.d, noise_std=0.0, x_dist="uniform", input_range=cfg.input_range)
    n = cfg.n_context
    gd = GD.fit_lr(task, steps=1, n_context=n, generator=generator(cfg.seed, "gd-lr"),
                   batch_size=cfg.lr_fit_batch_size)
    mcx, mcy, mqx, _ = task.sample(1024, n + 1, generator(cfg.seed, "monitor")).split(n)

    def eval_fn(model: CopyLSA, step: int) -> dict[str, float]:
        with torch.no_grad():
            mass = float(copy_mass(model.attention(mcx, mcy, mqx), n).max())
        return {"copy_mass": mass, "sens_cos": metrics.sens_cos(model, gd, mcx, mcy, mqx)}

    model = CopyLSA(d=cfg.d, max_context=n, heads=cfg.heads, init_std=cfg.init_std, lsa_init_std=cfg.lsa_init_std,
                    seed=derive_seed(cfg.seed, "init") % (2**31))
    tcfg = cfg.train.to_train(seed=cfg.seed, device=cfg.device, n_points=n + 1)
    res = train(model, task, tcfg, out=ctx.out, resume=ctx.resume, eval_fn=eval_fn, progress=ctx.progress)
    model = res.model.cpu().eval()

    cx, cy, qx, qy = task.sample(cfg.eval_batch_size, n + 1, generator(cfg.seed, "final-eval")).split(n)
    with torch.no_grad():
        pred, p_gd = model(cx, cy, qx), gd(cx, cy, qx)
        att = model.attention(cx, cy, qx)
        con = gd_copy_construction(cfg.d, n, float(gd.lr), cfg.construction_logit)
        p_con = con(cx.double(), cy.double(), qx.double())
    g64 = GD(steps=1, lr=float(gd.lr))(cx.double(), cy.double(), qx.double())
    out = {"loss": float(metrics.half_mse(pred, qy)), "gd_loss": float(metrics.half_mse(p_gd, qy)),
           "gd_lr": float(gd.lr), "sens_cos": metrics.sens_cos(model, gd, cx, cy, qx),
           "pred_diff": metrics.pred_diff(pred, p_gd), "model_diff": metrics.model_diff(model, gd, cx, cy, qx),
           "copy_mass": float(copy_mass(att, n).max()),
           "copy_mass_uniform": float(np.mean([1.0 / (2 * i + 2) for i in range(n)])),
           "construction_err": float((p_con - g64).norm() / g64.norm()), "train_steps": float(res.step)}
    out["loss_ratio"] = out["loss"] / out["gd_loss"]
    _figures(ctx, cfg, att.mean(0).numpy(), out["gd_loss"])
    bad = [k for k, v in out.items() if not math.isfinite(v)]
    if bad:
        raise RuntimeError(f"vonoswald-copy produced non-finite metrics: {bad}")
    return out
