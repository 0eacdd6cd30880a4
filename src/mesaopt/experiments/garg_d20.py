"""garg-d20: the d = 20, 41-point GPT of Garg et al. (arXiv 2208.01066) trained with the library's fastest recipe.

The recipe (found by the time-to-curve benchmark, docs/performance.md): a narrow GPT (6 layers, 4 heads, width
64; ~0.3M parameters), AdamW lr 5e-4 with 200 warmup steps, no weight decay, gradient clipping at 1, the prefix
objective (MSE over every position), batch 64, and a **gated** curriculum: stage k has 2 + k active dimensions
and 6 + 3k points (capped at 20 / 41) and advances once the EMA (0.9) of the training error per active dimension
at the late prefixes (>= 1.5 dims examples) is below 0.15, after at least 100 steps. Once the curriculum is
complete the lr follows a cosine to 0.1x over 12,000 steps. Training stops when the normalised error
(MSE / d) at 40 in-context examples is <= 0.05 on the 500-sequence eval batch AND on 4,000 fresh sequences
drawn anew at every check (``train.stop``), or after ``train.steps`` (a maximum).

Reported (all errors normalised by d, on ``eval_sequences`` held-out sequences of their own seed stream):
``err_at_{N}`` for N = 0 .. n_points-1 (the transformer), ``ols_err_at_{N}`` (min-norm least squares, the
noiseless optimum for N >= d), ``steps_to_target`` / ``wall_s_to_target`` (NaN when the target was not met),
``curriculum_complete_step``, ``reached`` (0/1). Figures: ``curve`` (error vs N, with OLS) and ``trajectory``
(eval-batch error at N = stop.at vs wall time). The run folder keeps the checkpoint (``ckpt/``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from pydantic import Field, model_validator

from mesaopt import plotting
from mesaopt.algorithms import OLS
from mesaopt.experiments.base import ExperimentConfig, RunContext, register
from mesaopt.experiments.garg import ModelSpec
from mesaopt.io import read_jsonl
from mesaopt.learner import predict_prefix
from mesaopt.seeding import generator
from mesaopt.tasks import LinearRegression
from mesaopt.train import TrainConfig, train
from mesaopt.train.curriculum import Curriculum, Gate, Ramp
from mesaopt.train.settings import train_settings
from mesaopt.train.stop import StopRule

RECIPE: dict = dict(
    steps=40_000, batch_size=64, lr=5e-4, optimizer="adamw", weight_decay=0.0, warmup_steps=200, grad_clip=1.0,
    objective="prefix", loss="mse", schedule="cosine_after_curriculum", decay_steps=12_000, min_lr_ratio=0.1,
    curriculum=Curriculum(mode="gated", dims=Ramp(start=2, end=20, inc=1, interval=1),
                          points=Ramp(start=6, end=41, inc=3, interval=1),
                          gate=Gate(threshold=0.15, min_steps=100, ema=0.9, late=1.5)),
    stop=StopRule(target=0.05, at=40, fresh_sequences=4000),
    eval_every=200, eval_batch_size=500, ckpt_every=200, log_every=50)
"""The time-to-curve recipe (``train:`` defaults of garg-d20; the experiment sets seed, device, n_points)."""

GargD20Train = train_settings("GargD20Train", RECIPE, doc="garg-d20 training: the time-to-curve recipe "
                              "(train.stop ends it early; seed, device and n_points come from the experiment)")


def recipe(n_points: int = 41, seed: int = 0) -> TrainConfig:
    """The time-to-curve recipe as a full TrainConfig (d = 20, ``n_points`` points)."""
    return GargD20Train().to_train(seed=seed, device="cpu", n_points=n_points)


class GargD20Config(ExperimentConfig):
    """Config of ``garg-d20``: task dimension, GPT size, the training recipe and the final evaluation."""

    d: int = Field(20, ge=1, description="input dimension (Garg: 20)")
    n_points: int = Field(41, ge=2, description="(x, y) points per sequence (Garg: 2d + 1 = 41)")
    model: ModelSpec = Field(default_factory=lambda: ModelSpec(size="tiny", layers=6, heads=4, width=64))
    train: GargD20Train = Field(default_factory=GargD20Train, description="the training recipe (train.stop ends it "
                                                                          "early)")
    eval_sequences: int = Field(4000, ge=1, description="held-out sequences of the final curve (own seed stream)")
    eval_chunk: int = Field(500, ge=1, description="sequences per forward pass of the final evaluation")

    @model_validator(mode="after")
    def _consistent(self) -> GargD20Config:
        if self.train.stop is not None and self.train.stop.at >= self.n_points:
            raise ValueError(f"train.stop.at must be < n_points ({self.n_points})")
        return self


def final_curves(model: torch.nn.Module, task: LinearRegression, cfg: GargD20Config) -> dict[str, np.ndarray]:
    """Normalised error per N (T,) of the model and OLS on ``eval_sequences`` fresh sequences (own stream)."""
    gen = generator(cfg.seed, "final-eval")
    sums = {"transformer": None, "ols": None}
    model.eval()
    with torch.no_grad():
        for i in range(0, cfg.eval_sequences, cfg.eval_chunk):
            b = task.sample(min(cfg.eval_chunk, cfg.eval_sequences - i), cfg.n_points, gen)
            for name, pred in (("transformer", model.prefix(b.xs, b.ys)), ("ols", predict_prefix(OLS(), b.xs, b.ys))):
                s = (pred.double() - b.ys.double()).pow(2).sum(0)
                sums[name] = s if sums[name] is None else sums[name] + s
    return {k: (v / (cfg.eval_sequences * cfg.d)).numpy() for k, v in sums.items()}


def _figures(ctx: RunContext, cfg: GargD20Config, curves: dict[str, np.ndarray], history: list[dict]) -> None:
    import matplotlib.pyplot as plt

    plotting.paper_style()
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    ns = np.arange(cfg.n_points)
    ax.plot(ns, curves["transformer"], color=plotting.PALETTE["model"], label="transformer (GPT)")
    ax.plot(ns, curves["ols"], color=plotting.PALETTE["ols"], ls="--", label="least squares")
    if cfg.train.stop is not None:
        ax.axhline(cfg.train.stop.target, color="k", ls=":", lw=1, label=f"target {cfg.train.stop.target}")
    ax.axvline(cfg.d, color="grey", lw=0.8)
    ax.set(xlabel="in-context examples N", ylabel="normalised squared error", yscale="log",
           title=f"linear regression, d={cfg.d}")
    ax.legend(fontsize=7)
    plotting.save_figure(fig, ctx.path("curve"))
    traj = [r for r in history if "stop_err" in r]
    if traj:
        fig, ax = plt.subplots(figsize=(4.6, 3.4))
        ax.plot([r["wall"] / 60 for r in traj], [r["stop_err"] for r in traj], "o-", ms=2, label="eval batch")
        fresh = [r for r in traj if "stop_err_fresh" in r]
        ax.plot([r["wall"] / 60 for r in fresh], [r["stop_err_fresh"] for r in fresh], "s", ms=4,
                label="fresh sequences (checks)")
        full = next((r for r in traj if r.get("curriculum_complete")), None)
        if full is not None:
            ax.axvline(full["wall"] / 60, color="grey", ls="--", lw=1, label="curriculum complete")
        ax.axhline(cfg.train.stop.target, color="k", ls=":", lw=1)
        ax.set(xlabel="wall minutes", ylabel=f"normalised error at N={cfg.train.stop.at}", yscale="log",
               title="time to the curve")
        ax.legend(fontsize=7)
        plotting.save_figure(fig, ctx.path("trajectory"))


@register("garg-d20", "Garg's d=20 GPT trained with the fastest recipe (gated curriculum, fresh-data stop rule)",
          config=GargD20Config,
          quick={"d": 4, "n_points": 9, "model.layers": 1, "model.heads": 2, "model.width": 16,
                 "train.batch_size": 16, "train.warmup_steps": 2, "train.steps": 9,
                 "train.curriculum.dims": {"start": 2, "end": 4, "inc": 1, "interval": 1},
                 "train.curriculum.points": {"start": 5, "end": 9, "inc": 2, "interval": 1},
                 "train.curriculum.gate": {"threshold": 100.0, "min_steps": 2, "ema": 0.5},
                 "train.decay_steps": 3, "train.eval_every": 3, "train.eval_batch_size": 64,
                 "train.ckpt_every": 3, "train.log_every": 3,
                 "train.stop": {"target": 1e-6, "at": 8, "fresh_sequences": 64},
                 "eval_sequences": 128, "eval_chunk": 64})
def run(cfg: GargD20Config, ctx: RunContext) -> dict[str, float]:
    """Train the GPT with the recipe (resumable), then score it and OLS on fresh sequences."""
    task = LinearRegression(d=cfg.d)
    model = cfg.model.build(cfg.d, cfg.n_points, seed=cfg.seed)
    tcfg = cfg.train.to_train(seed=cfg.seed, device=cfg.device, n_points=cfg.n_points)
    res = train(model, task, tcfg, out=ctx.out, resume=ctx.resume, progress=ctx.progress)
    history = read_jsonl(ctx.out / "metrics.jsonl")
    curves = final_curves(res.model, task, cfg)
    m: dict[str, float] = {}
    for n in range(cfg.n_points):
        m[f"err_at_{n}"] = float(curves["transformer"][n])
        m[f"ols_err_at_{n}"] = float(curves["ols"][n])
    stop_rec = next((r for r in history if r["step"] == res.stopped_at and "stop_err_fresh" in r), None)
    m["reached"] = float(res.stopped_at is not None)
    m["steps_to_target"] = float(res.stopped_at) if res.stopped_at is not None else math.nan
    m["wall_s_to_target"] = float(stop_rec["wall"]) if stop_rec is not None else math.nan
    m["steps"] = float(res.step)
    m["train_wall_s"] = float(res.wall_s)
    full = res.curriculum_complete_step
    m["curriculum_complete_step"] = float(full) if full is not None else math.nan
    if stop_rec is not None:
        m["target_err_eval"], m["target_err_fresh"] = float(stop_rec["stop_err"]), float(stop_rec["stop_err_fresh"])
    _figures(ctx, cfg, curves, history)
    return m
