"""Raventós et al. (arXiv 2306.15063): pretraining task diversity and the move from dMMSE to ridge.

A causal transformer (``models.GPT``) is pretrained on sequences whose weight vector is drawn from a finite
pool of M tasks, ``LinearRegression(d=8, noise_std=0.5, n_tasks=M)`` (x ~ N(0, I), w ~ N(0, I), label noise
variance sigma^2 = 0.25), with the loss averaged over all K = 16 positions (``objective="prefix"``). Its
prefix predictions are then compared with two Bayes estimators on the same sequences:

* dMMSE - the posterior mean over the pool (``algorithms.DMMSE``; optimal on the pretraining distribution),
* ridge with lam = sigma^2 (``algorithms.Ridge``; optimal for the Gaussian prior w ~ N(0, I)),

on sequences whose tasks come from the pool ("pool") and on fresh tasks w ~ N(0, I) ("fresh").
Every number is normalised by d as in the paper and averaged over all K positions (prediction at k from
examples 0..k-1, k = 0 included):

* ``err_{learner}_{pool|fresh}`` = E[(prediction - y)^2] / d  (plain MSE, not 1/2 MSE),
* ``dist_{dmmse|ridge}[_pool]`` = E[(model prediction - estimator prediction)^2] / d  (the paper's Delta PA / d).

``raventos-pool`` trains and evaluates one model at one pool size M. ``raventos-diversity`` runs it over a grid
of M (and seeds) with the sweep engine (``mesaopt.sweeps``; local worker processes or Ray), reports the
per-M means and the transition M where, on fresh tasks, the model's predictions become closer to ridge than to
dMMSE (log-linear interpolation of log(dist_ridge / dist_dmmse) at its last sign change), and draws the figure.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import yaml
from pydantic import Field, field_validator, model_validator

from mesaopt import plotting
from mesaopt.algorithms import DMMSE, Ridge
from mesaopt.errors import MesaoptError
from mesaopt.experiments.base import ExperimentConfig, RunContext, register
from mesaopt.io import atomic_write_text, to_json
from mesaopt.seeding import derive_seed, generator
from mesaopt.tasks import LinearRegression
from mesaopt.train import train
from mesaopt.train.curriculum import Ramp
from mesaopt.train.settings import train_settings

# objective is always "prefix" (loss over all K positions); the Garg-style active-dims ramp (capped at d)
# leaves the loss plateau within a CPU budget (train.curriculum: null = none, as in the paper)
RaventosTrain = train_settings(
    "RaventosTrain", dict(steps=3000, batch_size=128, lr=1e-3, schedule="warmup_cosine", warmup_steps=200,
                          min_lr_ratio=0.05, grad_clip=1.0, eval_every=500, ckpt_every=1000,
                          curriculum={"dims": {"start": 2, "end": 8, "inc": 1, "interval": 150}}),
    owned=("objective",))


class _RaventosSetup(ExperimentConfig):
    """What every pretraining run shares: data (d, K, sigma^2), GPT shape, training, evaluation size."""

    d: int = Field(8, ge=1, description="input dimension D")
    k: int = Field(16, ge=1, description="in-context examples per sequence K (loss over all K positions)")
    noise_var: float = Field(0.25, gt=0, description="label noise variance sigma^2 (ridge uses lam = sigma^2)")
    layers: int = Field(3, ge=1, description="GPT layers")
    heads: int = Field(2, ge=1, description="GPT attention heads")
    width: int = Field(64, ge=1, description="GPT residual width")
    eval_batch_size: int = Field(2048, ge=16, description="sequences per evaluation set (pool and fresh)")
    train: RaventosTrain = Field(default_factory=RaventosTrain, description="training (n_points = k, objective "
                                 "= prefix, seed and device from above; curriculum dims capped at d)")

    @model_validator(mode="after")
    def _cap_dims(self) -> _RaventosSetup:
        """Cap the curriculum's active-dims ramp at d (the default ramp targets d = 8), in the config itself."""
        cur = self.train.curriculum
        if cur is not None and cur.dims is not None and cur.dims.end > self.d:
            dims = Ramp(start=min(cur.dims.start, self.d), end=self.d, inc=cur.dims.inc, interval=cur.dims.interval)
            self.train = self.train.model_copy(update={"curriculum": cur.model_copy(update={"dims": dims})})
        return self


class RaventosPoolConfig(_RaventosSetup):
    """One pretraining run at task pool size M."""

    n_tasks: int = Field(16, ge=1, description="task pool size M")


def _pool_task(cfg: RaventosPoolConfig) -> LinearRegression:
    return LinearRegression(d=cfg.d, noise_std=math.sqrt(cfg.noise_var), x_dist="gaussian", n_tasks=cfg.n_tasks,
                            pool_seed=derive_seed(cfg.seed, "pool") % (2**31))


@torch.no_grad()
def evaluate(model: torch.nn.Module, task: LinearRegression, noise_var: float, batch_size: int, k: int,
             gen: torch.Generator, fresh: bool) -> dict[str, float]:
    """Errors and distances (each / d, averaged over B sequences and k positions) on pool or fresh tasks."""
    src = LinearRegression(d=task.d, noise_std=task.noise_std, x_dist="gaussian") if fresh else task
    b = src.sample(batch_size, k, gen)
    preds = {"model": model.prefix(b.xs, b.ys).double(),
             "dmmse": DMMSE.for_task(task).prefix(b.xs, b.ys).double(),
             "ridge": Ridge(lam=noise_var).prefix(b.xs, b.ys).double()}
    y, d = b.ys.double(), task.d
    out = {f"err_{name}": float(((p - y) ** 2).mean() / d) for name, p in preds.items()}
    for name in ("dmmse", "ridge"):
        out[f"dist_{name}"] = float(((preds["model"] - preds[name]) ** 2).mean() / d)
    return out


@register("raventos-pool", "Raventos et al.: one pretraining run at task pool size M; distances to dMMSE and ridge",
          config=RaventosPoolConfig,
          quick={"layers": 2, "width": 32, "heads": 2, "eval_batch_size": 1024, "train.steps": 800,
                 "train.batch_size": 64, "train.warmup_steps": 40, "train.lr": 3e-3, "train.eval_every": 0,
                 "train.ckpt_every": 0, "train.curriculum": None})
def run_pool(cfg: RaventosPoolConfig, ctx: RunContext) -> dict[str, float]:
    """Train a GPT on a pool of M tasks, evaluate it against dMMSE and ridge on pool and fresh tasks."""
    from mesaopt.models import GPT

    task = _pool_task(cfg)
    model = GPT(d=cfg.d, n_positions=cfg.k, layers=cfg.layers, heads=cfg.heads, width=cfg.width,
                seed=derive_seed(cfg.seed, "init") % (2**31))
    tcfg = cfg.train.to_train(seed=cfg.seed, device=cfg.device, n_points=cfg.k, objective="prefix")
    res = train(model, task, tcfg, out=ctx.out, resume=ctx.resume, progress=ctx.progress)
    model = res.model.cpu().eval()  # evaluation batches are sampled on the CPU
    metrics: dict[str, float] = {"n_tasks": float(cfg.n_tasks), "train_loss": float(res.history[-1]["loss"])
                                 if res.history and "loss" in res.history[-1] else float("nan")}
    for where, fresh in (("pool", False), ("fresh", True)):
        ev = evaluate(model, task, cfg.noise_var, cfg.eval_batch_size, cfg.k, generator(cfg.seed, "eval", where), fresh)
        for k, v in ev.items():
            metrics[f"{k}_{where}"] = v
    return metrics


class RaventosConfig(_RaventosSetup):
    """The task-diversity sweep: pool sizes M x seeds of ``raventos-pool``, run on a sweep engine."""

    m_values: list[int] = Field([2, 8, 32, 128, 512, 2048, 8192, 32768], description="task pool sizes M")
    n_seeds: int = Field(1, ge=1, description="seeds per M (seed, seed+1, ...)")
    engine: Literal["local", "ray"] = Field("local", description="sweep engine: local | ray")
    address: str | None = Field(None, description="Ray cluster address (engine ray), e.g. auto")
    max_parallel: int | None = Field(None, ge=1, description="trials at once (local default: cores)")
    cpus_per_trial: float = Field(1.0, gt=0, description="cores (torch threads) per trial")

    @field_validator("m_values")
    @classmethod
    def _m(cls, v: list[int]) -> list[int]:
        if len(v) < 2 or any(m < 1 for m in v) or sorted(set(v)) != list(v):
            raise ValueError(f"must be >= 2 increasing distinct pool sizes >= 1, got {v}")
        return v


def transition(m_values: list[int], dist_dmmse: np.ndarray, dist_ridge: np.ndarray) -> float:
    """M where log(dist_ridge/dist_dmmse) last turns negative (log2-linear interpolation); nan if never."""
    r = np.log(np.maximum(dist_ridge, 1e-30)) - np.log(np.maximum(dist_dmmse, 1e-30))
    if r[-1] >= 0:
        return float("nan")
    if (r < 0).all():
        return float(m_values[0])
    i = int(np.nonzero(r >= 0)[0].max())  # last M still closer to dMMSE
    lo, hi = math.log2(m_values[i]), math.log2(m_values[i + 1])
    frac = r[i] / (r[i] - r[i + 1])
    return float(2 ** (lo + frac * (hi - lo)))


def _figure(ctx: RunContext, m: np.ndarray, per_seed: dict[str, np.ndarray], trans: float) -> None:
    plotting.paper_style()
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, color in (("dmmse", plotting.PALETTE["dmmse"]), ("ridge", plotting.PALETTE["ridge"])):
        plotting.band(a, m, per_seed[f"dist_{name}_fresh"], f"to {'dMMSE' if name == 'dmmse' else 'ridge'} "
                      "(fresh tasks)", color=color)
        a.plot(m, per_seed[f"dist_{name}_pool"].mean(0), "--", color=color, label="  (pool tasks)")
    if math.isfinite(trans):
        for ax in (a, b):
            ax.axvline(trans, color="k", ls=":", lw=1)
        a.text(trans, a.get_ylim()[1] if a.get_ylim()[1] > 0 else 1, f" M*={trans:.0f}", va="top", fontsize=8)
    a.set(xscale="log", yscale="log", xlabel="task pool size M", ylabel=r"$\Delta$PA / D",
          title="distance of the transformer's predictions")
    a.set_xscale("log", base=2)
    a.legend()
    for name, label in (("model", "transformer"), ("dmmse", "dMMSE"), ("ridge", "ridge")):
        color = plotting.PALETTE.get(name, None)
        plotting.band(b, m, per_seed[f"err_{name}_fresh"], f"{label} (fresh)", color=color)
        b.plot(m, per_seed[f"err_{name}_pool"].mean(0), "--", color=color, label=f"{label} (pool)")
    b.set(xscale="log", yscale="log", xlabel="task pool size M", ylabel="MSE / D", title="error, averaged over K")
    b.set_xscale("log", base=2)
    b.legend(ncol=2)
    plotting.save_figure(fig, ctx.path("raventos"))


@register("raventos-diversity", "Raventos et al.: task-pool size sweep, transformer vs dMMSE and ridge (transition M)",
          config=RaventosConfig,
          quick={"m_values": [2, 8, 64, 1024], "layers": 2, "width": 32, "heads": 2, "eval_batch_size": 1024,
                 "train.steps": 800, "train.batch_size": 64, "train.warmup_steps": 40, "train.lr": 3e-3,
                 "train.eval_every": 0, "train.ckpt_every": 0, "train.curriculum": None})
def run_diversity(cfg: RaventosConfig, ctx: RunContext) -> dict[str, float]:
    """Sweep ``raventos-pool`` over M x seeds, aggregate per M, find the transition, draw the figure."""
    from mesaopt.sweeps import SweepSpec, run_sweep

    shared = set(_RaventosSetup.model_fields) - {"seed", "threads"}  # the seed is a grid axis, threads per trial
    base = cfg.model_dump(mode="json", include=shared)
    base_path = ctx.path("pool_base.yaml")
    atomic_write_text(base_path, yaml.safe_dump(base, sort_keys=False))
    seeds = [cfg.seed + i for i in range(cfg.n_seeds)]
    spec = SweepSpec(experiment="raventos-pool", config=str(base_path), grid={"n_tasks": cfg.m_values, "seed": seeds},
                     engine=cfg.engine, address=cfg.address, max_parallel=cfg.max_parallel,
                     cpus_per_trial=cfg.cpus_per_trial)
    res = run_sweep(spec, out=ctx.out / "sweep", progress=ctx.progress, console=ctx.console)
    df = res.table
    if res.failed or (df["status"] != "ok").any():
        bad = df[df["status"] != "ok"].iloc[0]
        raise MesaoptError(f"{int((df['status'] != 'ok').sum())} of {len(df)} raventos-pool trials failed "
                           f"(first: {bad['trial']}: {bad['error']}); fix and re-run with --out {ctx.out} to "
                           "finish only those")
    keys = ["err_model_pool", "err_dmmse_pool", "err_ridge_pool", "err_model_fresh", "err_dmmse_fresh",
            "err_ridge_fresh", "dist_dmmse_pool", "dist_ridge_pool", "dist_dmmse_fresh", "dist_ridge_fresh"]
    m = np.array(cfg.m_values, dtype=float)
    per_seed = {k: np.stack([df[df["seed"] == s].set_index("n_tasks").loc[cfg.m_values, k].to_numpy(float)
                             for s in seeds]) for k in keys}
    means = {k: v.mean(0) for k, v in per_seed.items()}
    metrics: dict[str, float] = {}
    for i, mv in enumerate(cfg.m_values):
        metrics[f"dist_dmmse_m{mv}"] = float(means["dist_dmmse_fresh"][i])
        metrics[f"dist_ridge_m{mv}"] = float(means["dist_ridge_fresh"][i])
        metrics[f"dist_dmmse_pool_m{mv}"] = float(means["dist_dmmse_pool"][i])
        metrics[f"dist_ridge_pool_m{mv}"] = float(means["dist_ridge_pool"][i])
        for k in ("err_model_pool", "err_model_fresh", "err_dmmse_fresh", "err_ridge_fresh", "err_dmmse_pool"):
            metrics[f"{k}_m{mv}"] = float(means[k][i])
    trans = transition(cfg.m_values, means["dist_dmmse_fresh"], means["dist_ridge_fresh"])
    metrics["transition_m"] = trans
    metrics["transition_log2m"] = math.log2(trans) if math.isfinite(trans) else float("nan")
    metrics["err_ridge_fresh"] = float(means["err_ridge_fresh"].mean())
    atomic_write_text(ctx.path("per_m.json"), to_json({"m_values": cfg.m_values, "seeds": seeds,
                                                      **{k: v.tolist() for k, v in per_seed.items()}}) + "\n")
    _figure(ctx, m, per_seed, trans)
    if ctx.progress:
        ctx.console.print(f"transition M (fresh tasks closer to ridge than to dMMSE): {trans:.4g}", highlight=False)
    return metrics


__all__ = ["RaventosConfig", "RaventosPoolConfig", "evaluate", "transition"]
