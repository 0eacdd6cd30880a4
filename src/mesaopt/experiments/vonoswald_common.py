"""Shared pieces of the von Oswald et al. (arXiv 2212.07677) LSA experiments: task, training, GD / GD++ fits.

Setup of the paper's released code: d = 10, N = 10, x ~ U(-r/2, r/2)^d with r = 1, w ~ N(0, I), noiseless labels,
loss = 1/2 * MSE of the query, LSA without softmax/LayerNorm/MLP. ``vonoswald-deep``, ``vonoswald-recurrent``
and ``vonoswald-ood`` train every K-layer model with ``train_lsa`` and fit the K-step baselines with
``fit_gd_gdpp`` (same seed streams, so a K trained in two experiments with the same settings is the same model).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pydantic import Field

from mesaopt.algorithms import GD, GDPlusPlus
from mesaopt.analysis import metrics
from mesaopt.experiments.base import ExperimentConfig, RunContext
from mesaopt.models import LSA
from mesaopt.seeding import derive_seed, generator
from mesaopt.tasks import LinearRegression
from mesaopt.train import train
from mesaopt.train.settings import train_settings

__all__ = ["VonOswaldLSATrain", "VonOswaldLSAConfig", "eval_half_mse", "fit_gd_gdpp", "regression_task",
           "train_lsa", "training_curves"]

VonOswaldLSATrain = train_settings(
    "VonOswaldLSATrain", dict(steps=2500, batch_size=512, lr=1e-2, optimizer="adam", schedule="warmup_cosine",
                               min_lr_ratio=0.02, warmup_steps=100, grad_clip=1.0, eval_every=100,
                               eval_batch_size=2048, ckpt_every=1000, loss="half_mse", objective="query"))


class VonOswaldLSAConfig(ExperimentConfig):
    """Fields shared by ``vonoswald-recurrent`` and ``vonoswald-ood``: task, LSA init, training, batch sizes."""

    d: int = Field(10, ge=1, description="input dimension")
    n_context: int = Field(10, ge=1, description="number of in-context examples N")
    input_range: float = Field(1.0, gt=0, description="training inputs x ~ U(-r/2, r/2)^d")
    noise_std: float = Field(0.0, ge=0, description="label noise std")
    init_std: float = Field(0.02, gt=0, description="std of the LSA's initial weights")
    eval_batch_size: int = Field(4096, ge=16, description="tasks in every final evaluation batch")
    fit_batch_size: int = Field(4096, ge=16, description="tasks used to fit the GD / GD++ hyper-parameters")
    deep_from: int = Field(5, ge=1, description="models with K >= deep_from layers train with deep_lr")
    deep_lr: float = Field(2e-3, gt=0, description="train.lr for K >= deep_from (as vonoswald-deep)")
    clip: float = Field(10.0, gt=0, description="models with K >= clip_from layers clamp every token to "
                                                "[-clip, clip] after every layer (the paper's code: 10)")
    clip_from: int = Field(4, ge=1, description="smallest K that is clipped (the paper's code: more than 3 layers)")
    train: VonOswaldLSATrain = Field(default_factory=VonOswaldLSATrain,
                                      description="training of every model; n_points = n_context + 1, seed derived "
                                                  "from seed and K, lr capped at deep_lr for K >= deep_from")
    threads: int | None = Field(1, ge=1, description="torch CPU threads; the LSA's (B, 11, 11) ops are fastest on one")

    def clip_for(self, k: int) -> float | None:
        """The token clamp of a K-layer model: ``clip`` for K >= ``clip_from``, else None."""
        return self.clip if k >= self.clip_from else None


def regression_task(cfg: Any, input_range: float | None = None, w_scale: float = 1.0) -> LinearRegression:
    """The task of ``cfg`` (x ~ U(-r/2, r/2)^d, w ~ N(0, w_scale^2 I)); ``input_range`` overrides cfg's r."""
    r = cfg.input_range if input_range is None else input_range
    return LinearRegression(d=cfg.d, noise_std=cfg.noise_std, x_dist="uniform", input_range=r, w_scale=w_scale)


def fit_gd_gdpp(cfg: Any, task: LinearRegression, k: int) -> tuple[GD, GDPlusPlus]:
    """K-step GD (one fitted lr) and K-step GD++ (one fitted lr, gamma) on ``cfg.fit_batch_size`` tasks."""
    gd = GD.fit_lr(task, steps=k, n_context=cfg.n_context, generator=generator(cfg.seed, "gd-lr", k),
                   batch_size=cfg.fit_batch_size)
    gdpp = GDPlusPlus.fit_hparams(task, steps=k, n_context=cfg.n_context, generator=generator(cfg.seed, "gdpp", k),
                                  batch_size=cfg.fit_batch_size)
    return gd, gdpp


def train_lsa(cfg: Any, ctx: RunContext, task: LinearRegression, k: int, folder: str, tied: bool = False,
              eval_fn: Callable[[LSA, int], dict[str, float]] | None = None,
              clip: float | None = None, init_std: float | None = None) -> tuple[LSA, int]:
    """Train a K-layer (``tied``: one layer applied K times) merged 1-head LSA in ``ctx.out / folder``.

    ``clip``: the model's token clamp (``LSA(clip=...)``; None: none); ``init_std``: the weights' initial std
    (None: ``cfg.init_std``).
    Seeds: init ``derive_seed(seed, "init", k)``, training ``derive_seed(seed, "train", k)``; lr capped at
    ``cfg.deep_lr`` for K >= ``cfg.deep_from``. Returns (the trained model on the CPU in eval mode, steps done).
    """
    model = LSA(d=cfg.d, layers=k, heads=1, param="merged", init_std=cfg.init_std if init_std is None else init_std,
                seed=derive_seed(cfg.seed, "init", k) % (2**31), tied=tied, clip=clip)
    lr = min(cfg.train.lr, cfg.deep_lr) if k >= cfg.deep_from else cfg.train.lr
    tcfg = cfg.train.to_train(seed=derive_seed(cfg.seed, "train", k) % (2**31), device=cfg.device,
                              n_points=cfg.n_context + 1, derived={"lr": lr})
    res = train(model, task, tcfg, out=ctx.path(folder), resume=ctx.resume, eval_fn=eval_fn, progress=ctx.progress)
    return res.model.cpu().eval(), int(res.step)


def eval_half_mse(learner: Callable[..., torch.Tensor], batch: tuple[torch.Tensor, ...]) -> float:
    """1/2 MSE of ``learner(ctx_x, ctx_y, qry_x)`` on a split batch (ctx_x, ctx_y, qry_x, qry_y)."""
    cx, cy, qx, qy = batch
    with torch.no_grad():
        return float(metrics.half_mse(learner(cx, cy, qx), qy))


def training_curves(ax: Any, out: Any, per_k: dict[int, dict], ylabel: str,
                    lines: tuple[tuple[str, str], ...] = (("gdpp_loss", "--"),)) -> None:
    """Draw every K's training curve (``out / k{K} / metrics.jsonl``) on ``ax``, one viridis colour per K, with a
    horizontal line per (metric key of ``per_k[K]``, line style) in ``lines`` in the same colour (e.g. GD++'s loss)."""
    import matplotlib.pyplot as plt

    from mesaopt import plotting

    cmap, ks = plt.get_cmap("viridis"), sorted(per_k)
    for i, k in enumerate(ks):
        c = cmap(i / max(len(ks) - 1, 1))
        plotting.loss_curve(ax, out / f"k{k}" / "metrics.jsonl", labels=[f"K={k}"], colors=[c], ylabel=ylabel)
        for key, style in lines:
            ax.axhline(per_k[k][key], color=c, ls=style, lw=1)

