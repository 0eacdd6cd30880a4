"""Garg et al. (arXiv 2208.01066) Fig. 2-style curves: error vs number of in-context examples.

A GPT-style causal transformer (``mesaopt.models.GPT``) is trained on interleaved (x, y) sequences of
noisy linear regression (x ~ N(0, I_d), w ~ N(0, I_d), y = w^T x + N(0, noise_std^2)) with the "prefix"
objective (MSE averaged over every position) and Garg's curriculum (growing active dims and sequence
length). It is then compared, on one held-out batch, with min-norm least squares (OLS), ridge at the
Bayes-optimal lam = noise_std^2, averaging (w = (1/N) sum y_i x_i) and 3-nearest neighbours. A
second panel does the same for k-sparse w with a second transformer against LASSO (alpha fitted on a
validation batch) and OLS.

Error metric (Garg's): squared error at the query divided by d, i.e. ``(y_hat - y)^2 / d`` (so the
zero predictor has error (d + noise_std^2) / d ~ 1), averaged over the evaluation batch; the
prediction at N uses examples 0..N-1 of the sequence (``prefix``). Label noise (default 0.5) makes the
min-norm least-squares curve show its double-descent bump at N = d.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import Field, model_validator

from mesaopt import plotting
from mesaopt.algorithms import KNN, OLS, Averaging, BayesRidge, Lasso
from mesaopt.config import StrictModel
from mesaopt.experiments.base import ExperimentConfig, RunContext, register
from mesaopt.io import atomic_write_json
from mesaopt.learner import predict_prefix
from mesaopt.models.gpt import GPT, SIZES
from mesaopt.seeding import generator
from mesaopt.tasks import LinearRegression
from mesaopt.train import train
from mesaopt.train.settings import train_settings

GargTrain = train_settings(
    "GargTrain", dict(steps=3500, batch_size=64, lr=5e-4, optimizer="adamw", weight_decay=0.0,
                      schedule="warmup_cosine", warmup_steps=200, min_lr_ratio=0.3, grad_clip=1.0,
                      objective="prefix", loss="mse", eval_every=250, eval_batch_size=512, ckpt_every=1000,
                      curriculum={"dims": {"start": 2, "end": 5, "inc": 1, "interval": 400},
                                  "points": {"start": 6, "end": 16, "inc": 2, "interval": 300}}))


class ModelSpec(StrictModel):
    """The GPT learner: a named size, optionally with layers/heads/width overridden."""

    size: str = Field("tiny", description="tiny (3 layers, 2 heads, width 64) | small (6, 4, 128) | standard")
    layers: int | None = Field(None, ge=1, description="override the size's number of blocks")
    heads: int | None = Field(None, ge=1, description="override the size's number of heads")
    width: int | None = Field(None, ge=1, description="override the size's residual width")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout (Garg: 0)")

    @model_validator(mode="after")
    def _size(self) -> ModelSpec:
        if self.size not in SIZES:
            raise ValueError(f"size must be one of {sorted(SIZES)}, got {self.size!r}")
        return self

    def build(self, d: int, n_positions: int, seed: int) -> GPT:
        """The GPT for inputs of dimension ``d`` and ``n_positions`` examples."""
        over = {k: v for k, v in (("layers", self.layers), ("heads", self.heads), ("width", self.width)) if v}
        return GPT.from_size(self.size, d=d, n_positions=n_positions, dropout=self.dropout, seed=seed, **over)


class SparsePanel(StrictModel):
    """The sparse-regression panel: a second transformer vs LASSO."""

    enabled: bool = Field(True, description="train and evaluate the sparse panel")
    sparsity: int = Field(2, ge=1, description="number k of non-zero weights")
    train_steps: int | None = Field(3500, ge=1, description="training steps (None = same as train.steps)")
    lasso_alphas: list[float] = Field([0.003, 0.01, 0.03, 0.1, 0.3], min_length=1,
                                      description="LASSO alpha grid; the best on a validation batch is used")


class GargConfig(ExperimentConfig):
    """Config of ``garg-curves``: task, transformer, training, baselines and evaluation sizes."""

    d: int = Field(5, ge=1, description="input dimension")
    n_points: int = Field(16, ge=2, description="points per sequence; curves go to N = n_points - 1")
    noise_std: float = Field(0.5, ge=0.0, description="label noise std")
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: GargTrain = Field(default_factory=GargTrain, description="training of both transformers; seed, device "
                             "and n_points come from above, sparse.train_steps replaces steps for the sparse one")
    sparse: SparsePanel = Field(default_factory=SparsePanel)
    knn_k: int = Field(3, ge=1, description="k of the nearest-neighbour baseline (Garg: 3)")
    eval_batch: int = Field(2000, ge=16, description="sequences in the held-out evaluation batch")
    val_batch: int = Field(256, ge=16, description="sequences used to fit LASSO's alpha")
    report_at: list[int] | None = Field(None, description="N values reported as metrics (None = d/2, d, 2d, "
                                                           "n_points - 1)")
    threads: int | None = Field(1, ge=1, description="torch intra-op threads for the run (None = torch default); "
                                                     "1 avoids OpenMP spin-waiting on small models")

    @model_validator(mode="after")
    def _check(self) -> GargConfig:
        if self.sparse.enabled and self.sparse.sparsity > self.d:
            raise ValueError(f"sparse.sparsity must be <= d={self.d}, got {self.sparse.sparsity}")
        if self.report_at is not None and any(not 0 <= n < self.n_points for n in self.report_at):
            raise ValueError(f"report_at values must be in [0, n_points - 1 = {self.n_points - 1}]")
        if self.sparse.enabled and (self.sparse.train_steps or self.train.steps) < self.train.warmup_steps:
            raise ValueError(f"sparse.train_steps ({self.sparse.train_steps}) must be >= train.warmup_steps "
                             f"({self.train.warmup_steps})")
        return self

    def report_points(self) -> list[int]:
        """The N values reported as ``{learner}_err_at_{N}``."""
        if self.report_at is not None:
            return sorted(set(self.report_at))
        cands = {max(1, math.ceil(self.d / 2)), self.d, 2 * self.d, self.n_points - 1}
        return sorted(n for n in cands if n < self.n_points)


def squared_errors(learner, xs: torch.Tensor, ys: torch.Tensor, d: int, chunk: int = 500) -> np.ndarray:
    """Per-sequence prefix errors (B, T): (y_hat_t - y_t)^2 / d, prediction at t from examples 0..t-1."""
    out = []
    with torch.no_grad():
        for i in range(0, xs.shape[0], chunk):
            x, y = xs[i : i + chunk], ys[i : i + chunk]
            pred = predict_prefix(learner, x, y).to(torch.float64)
            out.append(((pred - y.to(torch.float64)) ** 2 / d).cpu().numpy())
    return np.concatenate(out, axis=0)


def _train_gpt(cfg: GargConfig, task: LinearRegression, ctx: RunContext, name: str, steps: int) -> tuple[GPT, dict]:
    model = cfg.model.build(cfg.d, cfg.n_points, seed=cfg.seed)
    tcfg = cfg.train.to_train(seed=cfg.seed, device=cfg.device, n_points=cfg.n_points, derived={"steps": steps})
    ctx.console.print(f"[bold]garg-curves[/]: training {name} GPT ({sum(p.numel() for p in model.parameters())} "
                      f"params) for {steps} steps")
    res = train(model, task, tcfg, out=ctx.out / name, resume=ctx.resume, progress=ctx.progress)
    model.eval()
    return model, {"wall_s": res.wall_s, "final_eval_loss": res.final.get("eval_loss", float("nan"))}


def _fit_lasso(cfg: GargConfig, task: LinearRegression) -> tuple[float, dict[float, float]]:
    """Alpha on the grid with the lowest mean prefix error (N >= 1) on a validation batch."""
    g = generator(cfg.seed, "garg-val")
    vb = task.sample(cfg.val_batch, cfg.n_points, g, dtype=torch.float64)
    scores = {a: float(squared_errors(Lasso(alpha=a), vb.xs, vb.ys, cfg.d)[:, 1:].mean())
              for a in cfg.sparse.lasso_alphas}
    return min(scores, key=scores.get), scores


def _plot(ctx: RunContext, cfg: GargConfig, panels: list[tuple[str, dict[str, np.ndarray]]]) -> None:
    plotting.paper_style()
    import matplotlib.pyplot as plt

    colors = {"transformer": plotting.PALETTE["model"], "ols": plotting.PALETTE["ols"],
              "ridge": plotting.PALETTE["ridge"], "averaging": plotting.PALETTE["averaging"],
              "knn": plotting.PALETTE["knn"], "lasso": plotting.PALETTE["lasso"]}
    labels = {"transformer": "Transformer", "ols": "Least squares (min-norm)", "ridge": "Ridge (Bayes lam)",
              "averaging": "Averaging", "knn": f"{cfg.knn_k}-nearest neighbours", "lasso": "LASSO"}
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.4), squeeze=False)
    n = np.arange(cfg.n_points)
    for ax, (title, errs) in zip(axes[0], panels, strict=True):
        for i, (name, e) in enumerate(errs.items()):
            plotting.band(ax, n, e, label=labels[name], color=colors[name], seed=cfg.seed + i)
        ax.axvline(cfg.d, color="k", ls=":", lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("in-context examples N")
        ax.set_ylabel("squared error / d")
        ax.set_title(title)
        ax.legend()
    plotting.save_figure(fig, ctx.path("curves"))


@register("garg-curves", "Garg et al. Fig. 2: GPT error vs in-context examples against OLS/ridge/averaging/kNN/LASSO",
          config=GargConfig,
          quick={"train.steps": 150, "train.eval_every": 50, "train.eval_batch_size": 64, "train.warmup_steps": 20,
                 "train.ckpt_every": 0, "train.curriculum.dims.interval": 30, "train.curriculum.points.interval": 25,
                 "sparse.train_steps": 60, "sparse.lasso_alphas": [0.01, 0.1], "eval_batch": 200, "val_batch": 32})
def run_garg(cfg: GargConfig, ctx: RunContext) -> dict[str, float]:
    """Train the transformer(s), evaluate every learner's prefix errors, write curves + figure; metrics."""
    d, T = cfg.d, cfg.n_points
    dense = LinearRegression(d=d, noise_std=cfg.noise_std)
    model, info = _train_gpt(cfg, dense, ctx, "dense", cfg.train.steps)
    eb = dense.sample(cfg.eval_batch, T, generator(cfg.seed, "garg-test"), cfg.device)
    ridge = BayesRidge.for_task(dense)
    errs = {"transformer": squared_errors(model, eb.xs, eb.ys, d),
            "ols": squared_errors(OLS(), eb.xs, eb.ys, d), "ridge": squared_errors(ridge, eb.xs, eb.ys, d),
            "averaging": squared_errors(Averaging(), eb.xs, eb.ys, d),
            "knn": squared_errors(KNN(k=cfg.knn_k), eb.xs, eb.ys, d)}
    metrics: dict[str, float] = {"train_wall_s": info["wall_s"], "final_eval_loss": info["final_eval_loss"],
                                 "ridge_lam": ridge.lam}
    panels = [(f"linear regression, d={d}, noise={cfg.noise_std:g}", errs)]
    curves = {"N": list(range(T)), "dense": {k: v.mean(0).tolist() for k, v in errs.items()}}
    for N in cfg.report_points():
        for name, e in errs.items():
            metrics[f"{name}_err_at_{N}"] = float(e[:, N].mean())
    if 2 * d < T:
        n2 = 2 * d
        metrics[f"transformer_over_ols_at_{n2}"] = float(errs["transformer"][:, n2].mean() / errs["ols"][:, n2].mean())
    lo = max(1, math.ceil(d / 2))
    tr, av = errs["transformer"].mean(0), errs["averaging"].mean(0)
    metrics["transformer_below_averaging"] = float(bool(np.all(tr[lo:] < av[lo:])))
    metrics["max_transformer_over_averaging"] = float(np.max(tr[lo:] / av[lo:]))

    if cfg.sparse.enabled:
        k = cfg.sparse.sparsity
        sparse = LinearRegression(d=d, noise_std=cfg.noise_std, sparsity=k)
        smodel, sinfo = _train_gpt(cfg, sparse, ctx, "sparse", cfg.sparse.train_steps or cfg.train.steps)
        alpha, scores = _fit_lasso(cfg, sparse)
        sb = sparse.sample(cfg.eval_batch, T, generator(cfg.seed, "garg-test-sparse"), cfg.device)
        serrs = {"transformer": squared_errors(smodel, sb.xs, sb.ys, d),
                 "lasso": squared_errors(Lasso(alpha=alpha), sb.xs, sb.ys, d),
                 "ols": squared_errors(OLS(), sb.xs, sb.ys, d)}
        panels.append((f"sparse linear regression, d={d}, k={k}", serrs))
        curves["sparse"] = {key: v.mean(0).tolist() for key, v in serrs.items()}
        curves["lasso_alpha_scores"] = {str(a): s for a, s in scores.items()}
        metrics["lasso_alpha"] = alpha
        metrics["sparse_train_wall_s"] = sinfo["wall_s"]
        for N in cfg.report_points():
            for name, e in serrs.items():
                key = "lasso" if name == "lasso" else f"sparse_{name}"
                metrics[f"{key}_err_at_{N}"] = float(e[:, N].mean())
    atomic_write_json(ctx.path("curves.json"), curves)
    _plot(ctx, cfg, panels)
    return metrics
