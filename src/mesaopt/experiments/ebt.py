"""ebt-system2: energy-based transformers (arXiv 2507.02092) on in-context regression, error vs thinking steps.

For each task (linear regression and Garg's 2-layer ReLU network, both scaled so that Var(y) = 1 and the
zero predictor has MSE 1) we train an EBT (``mesaopt.models.EBT``) and its feed-forward twin (``EBTFeedForward``,
the same backbone read out directly: the "standard transformer" of equal size) on the SAME batches for the
same number of updates, then measure the query MSE

* after S = 0 .. 2×(trained steps) descent steps (System 2: more steps than trained),
* with self-verification (best of K random initial guesses by energy) vs one guess,
* in distribution (ID) and out of distribution: larger label noise (``ood_noise``) and longer contexts
  (``ood_long``) than trained,
* against the feed-forward transformer, Bayes-optimal ridge and (linear task) K steps of GD, and the
  agreement of the EBT's step-s predictor with GD/ridge (``pred_diff``, ``sens_cos``).

All errors are MSE (not ½·MSE) against the (possibly noisy) query labels. Both models train through the one
trainer (``mesaopt.train.train``, config ``train``): the twin with the built-in ``query`` objective over
``train.n_queries`` queries per context, the EBT with the paper's stabilisers (loss averaged over steps, random
extra steps, random step size, Langevin noise) through the ``EBTLoss`` hook (replay buffer) and the α
learning-rate multiplier as a parameter group (``ebt_train``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from mesaopt import plotting
from mesaopt.algorithms import GD, BayesRidge, Ridge
from mesaopt.analysis import metrics
from mesaopt.config import StrictModel
from mesaopt.errors import ConfigError
from mesaopt.experiments.base import ExperimentConfig, RunContext, register
from mesaopt.models.ebt import EBT, EBTFeedForward
from mesaopt.seeding import derive_seed, generator
from mesaopt.tasks import Task, build
from mesaopt.train import TrainConfig, train
from mesaopt.train.hooks import EBTLoss
from mesaopt.train.settings import train_settings

TaskName = Literal["linear", "relu2"]
CONDITIONS = ("id", "ood_noise", "ood_long")


class BackboneConfig(StrictModel):
    """Transformer size shared by the EBT and the feed-forward baseline."""

    dim: int = Field(32, ge=1, description="model width")
    layers: int = Field(2, ge=1, description="transformer blocks")
    heads: int = Field(4, ge=1, description="attention heads (must divide dim)")
    mlp_ratio: int = Field(4, ge=1, description="MLP hidden width / dim")


class EBTConfig(StrictModel):
    """EBT inference/training hyper-parameters (names follow the paper's code where they exist)."""

    steps: int = Field(4, ge=1, description="trained number of descent steps S (mcmc_num_steps)")
    alpha_init: float = Field(0.5, gt=0, description="initial step size alpha (mcmc_step_size)")
    alpha_learnable: bool = Field(True, description="learn alpha (mcmc_step_size_learnable)")
    alpha_max: float = Field(10.0, gt=0, description="alpha is clamped to [1e-4, alpha_max]")
    init: Literal["zeros", "noise"] = Field("noise", description="initial guess: zeros or N(0, init_std^2)")
    init_std: float = Field(1.0, ge=0, description="std of the random initial guesses")
    langevin_std: float = Field(0.01, ge=0, description="Langevin noise std added before each training step")
    rand_steps: int = Field(2, ge=0, description="training uses S + U{0..rand_steps} steps")
    rand_alpha_scale: float = Field(2.0, ge=1, description="training alpha ~ U[alpha/r, alpha*r] per sequence")
    max_step_change: float | None = Field(None, gt=0, description="clamp |alpha*grad| per step (None = off)")
    detach_steps: bool = Field(True, description="detach ŷ between steps (paper default) or full unroll")
    loss_steps: Literal["all", "final"] = Field("all", description="MSE averaged over all steps or final only")


class EBTTrainExtras(StrictModel):
    """What the EBT's training adds to the shared ``train`` config (the twin ignores these)."""

    alpha_lr_mult: float = Field(10.0, gt=0, description="lr multiplier of the EBT step size alpha")
    replay_fraction: float = Field(0.25, ge=0, lt=1, description="share of each EBT batch from the replay buffer")
    replay_size: int = Field(4096, ge=1, description="replay buffer capacity (contexts)")


EBTTrain = train_settings(
    "EBTTrain", dict(steps=1000, batch_size=64, n_queries=8, lr=1e-3, weight_decay=0.0, schedule="cosine",
                     warmup_steps=100, min_lr_ratio=0.05, grad_clip=1.0, loss="mse",
                     eval_every=0, eval_batch_size=64, ckpt_every=500, log_every=25),
    owned=("lr_multipliers", "objective"),
    doc="optimisation shared by the EBT and its twin (same batches, same number of updates); the experiment "
        "sets seed, device, n_points = n_context + n_queries, the query objective and the EBT's alpha lr group")


class EBTSystem2Config(ExperimentConfig):
    """Config of ``ebt-system2``."""

    tasks: list[TaskName] = Field(default_factory=lambda: ["linear", "relu2"], description="task families")
    d: int = Field(5, ge=1, description="input dimension")
    n_context: int = Field(15, ge=1, description="trained number of in-context examples N")
    noise_std: float = Field(0.0, ge=0, description="label noise std during training (and ID evaluation)")
    ood_noise_std: float = Field(0.5, ge=0, description="label noise std of the ood_noise condition")
    ood_n_context: int = Field(30, ge=1, description="context length of the ood_long condition")
    relu_hidden: int = Field(100, ge=1, description="hidden units of the relu2 target networks")
    model: BackboneConfig = Field(default_factory=BackboneConfig)
    ebt: EBTConfig = Field(default_factory=EBTConfig)
    train: EBTTrain = Field(default_factory=EBTTrain, description="optimisation shared by both models "
                            "(same batches, same number of updates); n_points is n_context + train.n_queries")
    ebt_train: EBTTrainExtras = Field(default_factory=EBTTrainExtras)
    eval_batch_size: int = Field(512, ge=8, description="contexts per evaluation condition")
    eval_queries: int = Field(8, ge=1, description="queries per evaluation context")
    n_samples: int = Field(8, ge=2, description="self-verification: initial guesses per query (K)")
    steps_factor: int = Field(2, ge=1, description="evaluate S = 0 .. steps_factor x trained steps")
    analysis_batch_size: int = Field(256, ge=8, description="contexts for the GD/ridge agreement analysis")
    threads: int | None = Field(1, ge=1, description="torch intra-op threads during the run (tiny models: 1 is "
                                                    "fastest; restored afterwards)")


# --------------------------------------------------------------------------------------------- tasks & models

def make_task(name: str, cfg: EBTSystem2Config, noise_std: float) -> Task:
    """The task family ``name`` scaled so that Var(y) = 1 (w ~ N(0, I/d); relu2 output scale 1/sqrt(d))."""
    if name == "linear":
        return build({"kind": "linear", "d": cfg.d, "noise_std": noise_std, "w_scale": cfg.d ** -0.5})
    return build({"kind": "relu2", "d": cfg.d, "hidden": cfg.relu_hidden, "scale": cfg.d ** -0.5,
                  "noise_std": noise_std})


def make_models(cfg: EBTSystem2Config, seed: int) -> tuple[EBT, EBTFeedForward]:
    """EBT and its feed-forward twin, initialised from the same seed (identical backbone weights)."""
    size = cfg.model.model_dump()
    torch.manual_seed(seed)
    ebt = EBT(d=cfg.d, **size, **cfg.ebt.model_dump())
    torch.manual_seed(seed)
    ff = EBTFeedForward(d=cfg.d, **size)
    return ebt, ff


def ridge_for(task: Task) -> Ridge:
    """Linear baseline: Bayes-optimal ridge for linear tasks; for relu2 ridge with the variance-matched linear
    prior w ~ N(0, I/d) (lam = d * noise_std^2, i.e. min-norm least squares without noise)."""
    if task.kind == "linear":
        return BayesRidge.for_task(task)
    return Ridge(lam=task.d * task.noise_std ** 2)


# --------------------------------------------------------------------------------------------- training

def train_config(cfg: EBTSystem2Config, seed_name: str, is_ebt: bool) -> TrainConfig:
    """The TrainConfig of one model: the run's ``train`` with n_points = n_context + n_queries, the task's own
    data seed (so the EBT and its twin see identical batches) and, for the EBT, the alpha lr multiplier."""
    return cfg.train.to_train(
        n_points=cfg.n_context + cfg.train.n_queries, device=cfg.device, objective="query",
        seed=derive_seed(cfg.seed, "train", seed_name) % (2**31),
        lr_multipliers={"alpha_raw": cfg.ebt_train.alpha_lr_mult} if is_ebt and cfg.ebt.alpha_learnable else {})


def fit(model: EBT | EBTFeedForward, task: Task, cfg: EBTSystem2Config, out: Path, seed_name: str,
        resume: bool = False, progress: bool = True) -> dict[str, float]:
    """Train ``model`` on batches (B, N+Q) from ``task`` through ``mesaopt.train.train``; returns stats.

    The data stream depends only on (seed, ``seed_name``), so an EBT and its twin see identical batches.
    EBT batches mix fresh contexts with replay-buffer contexts started from their earlier final predictions
    (``EBTLoss``). ``resume`` continues from ``out/ckpt`` bit for bit (the replay buffer is checkpointed).
    """
    is_ebt = isinstance(model, EBT)
    hook = (EBTLoss(cfg.train.n_queries, cfg.ebt_train.replay_fraction, cfg.ebt_train.replay_size)
            if is_ebt else None)
    res = train(model, task, train_config(cfg, seed_name, is_ebt), out=out, resume=resume, progress=progress,
                loss_hook=hook)
    model.eval()
    return {"train_s": res.wall_s, "step": float(res.step)}


# --------------------------------------------------------------------------------------------- evaluation

def _per_task_mse(pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """(..., B, Q), (B, Q) -> per-context MSE (..., B) as float64 NumPy."""
    return ((pred.double() - target.double()) ** 2).mean(-1).numpy()


def evaluate_condition(ebt: EBT, ff: EBTFeedForward, task: Task, n_ctx: int, cfg: EBTSystem2Config,
                       gen_name: tuple) -> dict:
    """Errors of the EBT per step (with/without self-verification), the twin and ridge on one eval batch."""
    s_max = cfg.steps_factor * ebt.steps
    b = task.sample(cfg.eval_batch_size, n_ctx + cfg.eval_queries, generator(cfg.seed, "eval", *gen_name))
    cx, cy, qx, qy = b.split(n_ctx)
    out = ebt.predict(cx, cy, qx, steps=s_max, generator=generator(cfg.seed, "eval-init", *gen_name),
                      return_trajectory=True)
    per_step = _per_task_mse(out.trajectory, qy)  # (S+1, B)
    sv_steps = sorted({1, ebt.steps, s_max})
    sv = {}
    for s in sv_steps:
        p = ebt.predict(cx, cy, qx, steps=s, n_samples=cfg.n_samples, self_verify=True,
                        generator=generator(cfg.seed, "eval-sv", s, *gen_name))
        sv[s] = _per_task_mse(p, qy)
    with torch.no_grad():
        ff_err = _per_task_mse(ff(cx, cy, qx), qy)
    ridge = ridge_for(task)
    ridge_err = _per_task_mse(ridge(cx, cy, qx).to(qy.dtype), qy)
    return {"per_step": per_step, "sv": sv, "ff": ff_err, "ridge": ridge_err,
            "energy": out.energies.double().mean(dim=(1, 2)).numpy()}


def analysis_vs_algorithms(ebt: EBT, task: Task, cfg: EBTSystem2Config) -> dict[str, float]:
    """Agreement of the EBT's step-s predictor (zero initial guess) with s-step GD (fitted lr) and ridge."""
    n = cfg.n_context
    b = task.sample(cfg.analysis_batch_size, n + cfg.eval_queries, generator(cfg.seed, "analysis"))
    cx, cy, qx, qy = b.split(n)
    ridge = BayesRidge.for_task(task)
    out: dict[str, float] = {}
    for s in range(1, cfg.steps_factor * ebt.steps + 1):
        def learner(a, b_, c, s=s):
            return ebt.predict(a, b_, c, steps=s, init="zeros", create_graph=True)

        gd = GD.fit_lr(task, steps=s, n_context=n, generator=generator(cfg.seed, "gd-lr", s), batch_size=2048)
        res = metrics.compare({"ebt": learner, "gd": gd, "ridge": ridge}, cx, cy, qx, qy)
        out[f"gd_lr_step{s}"] = float(gd.lr)
        out[f"ebt_zero_init_err_at_steps_{s}"] = res["ebt_loss"]
        out[f"gd_err_at_steps_{s}"] = res["gd_loss"]
        for other in ("gd", "ridge"):
            out[f"pred_diff_{other}_step{s}"] = res[f"pred_diff_ebt_{other}"]
            out[f"sens_cos_{other}_step{s}"] = res[f"sens_cos_ebt_{other}"]
    return out


# --------------------------------------------------------------------------------------------- figures

COND_STYLE = {"id": ("#1f77b4", "in distribution"), "ood_noise": ("#d62728", "OOD: label noise"),
              "ood_long": ("#2ca02c", "OOD: longer context")}


def _figures(ctx: RunContext, cfg: EBTSystem2Config, evals: dict, analysis: dict[str, float] | None,
             trained: int) -> None:
    import matplotlib.pyplot as plt

    plotting.paper_style()
    names = list(evals)
    s_max = cfg.steps_factor * trained
    xs = np.arange(s_max + 1)
    fig, axes = plt.subplots(1, len(names), figsize=(4.4 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        floor = 0.5 * min(min(evals[name][c]["per_step"].mean(axis=1).min(), evals[name][c]["ff"].mean(),
                              min(v.mean() for v in evals[name][c]["sv"].values())) for c in CONDITIONS)
        for cond in CONDITIONS:
            ev = evals[name][cond]
            color, label = COND_STYLE[cond]
            plotting.band(ax, xs, ev["per_step"].T, label=f"EBT, {label}", color=color)
            sv_s = sorted(ev["sv"])
            ax.plot(sv_s, [ev["sv"][s].mean() for s in sv_s], ls="none", marker="*", ms=9, color=color,
                    label=f"+ self-verify (K={cfg.n_samples})" if cond == "id" else None)
            ax.axhline(ev["ff"].mean(), color=color, ls="--", lw=1.0,
                       label="feed-forward transformer" if cond == "id" else None)
            if ev["ridge"].mean() > floor:  # noiseless ridge is ~0: left off the log axis (see the metrics)
                ax.axhline(ev["ridge"].mean(), color=color, ls=":", lw=1.0, label=f"ridge ({label})")
        ax.set_ylim(bottom=floor)
        ax.axvline(trained, color="k", lw=0.8, alpha=0.5)
        ax.text(trained, floor, " trained steps", va="bottom", fontsize=7)
        ax.set_yscale("log")
        ax.set_xlabel("inference (System 2) steps")
        ax.set_ylabel("query MSE")
        ax.set_title(f"{name}: d={cfg.d}, N={cfg.n_context}")
        ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    plotting.save_figure(fig, ctx.path("ebt_error_vs_steps"))

    fig, ax = plt.subplots(figsize=(1.6 + 1.6 * len(names), 3.0))
    width = 0.8 / len(CONDITIONS)
    for i, cond in enumerate(CONDITIONS):
        gains = []
        for name in names:
            e = evals[name][cond]["per_step"].mean(axis=1)
            gains.append(100.0 * (1.0 - e[s_max] / e[1]))
        ax.bar(np.arange(len(names)) + i * width, gains, width, color=COND_STYLE[cond][0], label=COND_STYLE[cond][1])
    ax.set_xticks(np.arange(len(names)) + width, names)
    ax.set_ylabel(f"% error reduction, 1 → {s_max} steps")
    ax.set_title("Improvement from System 2 thinking")
    ax.legend(fontsize=7)
    plotting.save_figure(fig, ctx.path("ebt_thinking_gain"))

    if analysis:
        steps = np.arange(1, s_max + 1)
        fig, axes = plt.subplots(1, 2, figsize=(8.0, 3.0), layout="constrained")
        for other, color in (("gd", plotting.PALETTE["gd"]), ("ridge", plotting.PALETTE["ridge"])):
            axes[0].plot(steps, [analysis[f"sens_cos_{other}_step{s}"] for s in steps], marker="o", color=color,
                         label=f"EBT vs {'GD (same #steps, fitted lr)' if other == 'gd' else 'Bayes ridge'}")
            axes[1].plot(steps, [analysis[f"pred_diff_{other}_step{s}"] for s in steps], marker="o", color=color)
        axes[0].set_ylabel("cosine sim. of sensitivities")
        axes[1].set_ylabel("mean |prediction difference|")
        for a in axes:
            a.set_xlabel("EBT descent steps (zero initial guess)")
            a.axvline(trained, color="k", lw=0.8, alpha=0.5)
        axes[0].legend(fontsize=7)
        fig.suptitle("EBT descent as an in-context algorithm (linear regression, ID)")
        plotting.save_figure(fig, ctx.path("ebt_vs_algorithms"))

    fig, axes = plt.subplots(1, len(names), figsize=(4.0 * len(names), 3.0), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for kind, color in (("ebt", plotting.PALETTE["model"]), ("ff", plotting.PALETTE["gd"])):
            p = ctx.out / name / kind / "metrics.jsonl"
            if p.is_file():
                plotting.loss_curve(ax, p, ["final_mse" if kind == "ebt" else "loss"], colors=[color],
                                    labels=["EBT (final step)" if kind == "ebt" else "feed-forward"],
                                    ylabel="training MSE")
        ax.set_title(name)
        ax.legend(fontsize=7)
    plotting.save_figure(fig, ctx.path("ebt_training"))


# --------------------------------------------------------------------------------------------- run

@register("ebt-system2", "Energy-based transformer: error vs inference steps, self-verification, ID vs OOD",
          config=EBTSystem2Config,
          quick={"train.steps": 40, "train.batch_size": 16, "train.n_queries": 4, "train.warmup_steps": 5,
                 "train.ckpt_every": 0, "train.log_every": 5, "model.dim": 16, "model.heads": 2, "ebt.steps": 2,
                 "ebt.rand_steps": 1, "eval_batch_size": 32, "eval_queries": 4, "n_samples": 4,
                 "analysis_batch_size": 16, "d": 3, "n_context": 8, "ood_n_context": 16, "relu_hidden": 16})
def run(cfg: EBTSystem2Config, ctx: RunContext) -> dict[str, float]:
    """Train EBT + feed-forward twin per task, evaluate error vs steps ID/OOD, self-verification, GD/ridge match."""
    if cfg.device != "cpu":
        raise ConfigError(f"device must be 'cpu' for ebt-system2 (CPU-sized models), got {cfg.device!r}")
    m: dict[str, float] = {}
    evals: dict[str, dict] = {}
    analysis = None
    trained = cfg.ebt.steps
    s_max = cfg.steps_factor * trained
    for name in cfg.tasks:
        task = make_task(name, cfg, cfg.noise_std)
        ebt, ff = make_models(cfg, seed=derive_seed(cfg.seed, "init", name) % (2**31))
        st_e = fit(ebt, task, cfg, ctx.out / name / "ebt", name, ctx.resume, ctx.progress)
        st_f = fit(ff, task, cfg, ctx.out / name / "ff", name, ctx.resume, ctx.progress)
        m[f"{name}_ebt_train_s"], m[f"{name}_ff_train_s"] = st_e["train_s"], st_f["train_s"]
        m[f"{name}_alpha"] = float(ebt.alpha.detach())
        conds = {"id": (task, cfg.n_context),
                 "ood_noise": (make_task(name, cfg, cfg.ood_noise_std), cfg.n_context),
                 "ood_long": (task, cfg.ood_n_context)}
        evals[name] = {}
        for cond, (t, n_ctx) in conds.items():
            ev = evaluate_condition(ebt, ff, t, n_ctx, cfg, (name, cond))
            evals[name][cond] = ev
            err = ev["per_step"].mean(axis=1)
            pre = f"{name}_{cond}"
            for s in range(s_max + 1):
                m[f"{pre}_err_at_steps_{s}"] = float(err[s])
                m[f"{pre}_energy_at_steps_{s}"] = float(ev["energy"][s])
            for s, v in ev["sv"].items():
                m[f"{pre}_sv_err_at_steps_{s}"] = float(v.mean())
            m[f"{pre}_transformer_err"] = float(ev["ff"].mean())
            m[f"{pre}_ridge_err"] = float(ev["ridge"].mean())
            m[f"{pre}_monotone_to_trained"] = float(all(err[s + 1] <= err[s] for s in range(1, trained)))
            m[f"{pre}_s2_gain"] = float(1.0 - err[s_max] / err[1])
            m[f"{pre}_s2_gain_trained"] = float(1.0 - err[trained] / err[1])
            m[f"{pre}_extra_gain"] = float(1.0 - err[s_max] / err[trained])
            m[f"{pre}_sv_gain"] = float(1.0 - ev["sv"][trained].mean() / err[trained])
        if name == "linear":
            analysis = analysis_vs_algorithms(ebt, task, cfg)
            m.update({f"linear_id_{k}": v for k, v in analysis.items()})
    first = cfg.tasks[0]
    for s in range(s_max + 1):
        m[f"err_at_steps_{s}"] = m[f"{first}_id_err_at_steps_{s}"]
    _figures(ctx, cfg, evals, analysis, trained)
    return m
