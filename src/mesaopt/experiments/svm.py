"""Transformers as SVMs (Tarzanagh et al., arXiv 2308.16898 / 2306.13596): implicit bias of attention GD.

* ``svm-implicit-bias``: normalized GD on W (resp. K, Q) of f(X) = vᵀXᵀ softmax(X W z) with the logistic loss;
  correlation of W_k (resp. K_k Q_kᵀ) with the Frobenius (resp. nuclear) Att-SVM solution of GD's final
  token selection, softmax mass on the selected tokens and ||W|| vs iterations, several seeds and sizes.
  (K, Q) runs carry the papers' vanishing regularization lambda (||K||² + ||Q||²), lambda = 2.2e-16; the
  unregularized (K, Q) run is reported alongside (``*_noreg``).
* ``svm-local-global``: fraction of random problems/initializations where GD ends at the globally optimal
  selection, at a locally optimal (non-global) one, or at neither, as the dimension d grows.
* ``svm-regpath``: the constrained minimizers W_R (||W|| <= R, Frobenius and nuclear balls) for growing R,
  their correlation with the matching Att-SVM direction.

Correlation = <W1, W2> / (||W1||_F ||W2||_F). Problems are the papers': x_it, z_i, v ~ N(0, I) normalised to
the unit sphere, y_i = ±1 uniform, float64. Problem k of a run is drawn from ``generator(seed, "selection",
n, T, d, k)`` and does not depend on the number of runs.
"""

from __future__ import annotations

import io
import time

import numpy as np
import torch
from pydantic import Field, field_validator
from scipy.stats import spearmanr

from mesaopt import plotting
from mesaopt.errors import ConfigError
from mesaopt.experiments.base import ExperimentConfig, RunContext, register
from mesaopt.io import atomic_write_bytes
from mesaopt.seeding import generator
from mesaopt.svm.att_svm import SVMInfeasible, att_svm, correlation
from mesaopt.svm.attention_gd import PAPER_KQ_WEIGHT_DECAY, attention_probs, train_attention
from mesaopt.svm.optimal_tokens import check_local
from mesaopt.svm.regpath import regularization_path
from mesaopt.tasks.selection import SelectionProblem, sample_seeded

BLUE, RED, TEAL = "#1f4fd1", "#d62728", "#17a2a2"


def _save_npz(path, **arrays) -> None:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    atomic_write_bytes(path, buf.getvalue())


def _svm_or_none(problem: SelectionProblem, alpha: torch.Tensor, norm: str) -> np.ndarray | None:
    try:
        return att_svm(problem.X, problem.Z, alpha, norm=norm).W
    except SVMInfeasible:
        return None


def own_subspace_svm(problem: SelectionProblem, alpha: torch.Tensor, W: np.ndarray, r: int) -> np.ndarray | None:
    """Nuclear Att-SVM restricted to W's top-r left / right singular subspaces (None if infeasible there): (d, d).

    If GD's direction matches this but not the global W_mm_star, GD has solved the SVM within its current
    column / row spaces and only those subspaces are still off (they rotate slowly for (K, Q))."""
    U, _, Vt = np.linalg.svd(W)
    try:
        return att_svm(problem.X, problem.Z, alpha, norm="nuc", basis=(U[:, :r], Vt[:r].T)).W
    except SVMInfeasible:
        return None


class _CPUConfig(ExperimentConfig):
    """The svm-* experiments solve small float64 problems with numpy/cvxpy on the CPU: ``device`` stays cpu."""

    @field_validator("device")
    @classmethod
    def _cpu(cls, v: str) -> str:
        if v != "cpu":
            raise ValueError(f"the svm experiments run on the CPU only, got {v!r}")
        return v


# ----------------------------------------------------------------------------------------------- implicit bias
class ImplicitBiasConfig(_CPUConfig):
    """svm-implicit-bias: the papers' setting by default (n=6, T=8, d=10, eta=0.1, normalized GD, float64)."""

    n: int = Field(6, ge=1, description="sequences per problem")
    T: int = Field(8, ge=2, description="tokens per sequence")
    d: int = Field(10, ge=1, description="token dimension")
    n_seeds: int = Field(20, ge=1, description="independent problems (each with its own random init)")
    steps: int = Field(2000, ge=1, description="normalized GD iterations for the W parametrization (paper: 2000)")
    kq_steps: int = Field(2000, ge=1, description="normalized GD iterations for (K, Q) (paper: 2000)")
    kq_weight_decay: float = Field(PAPER_KQ_WEIGHT_DECAY, ge=0,
                                   description="lambda of lambda(||K||²+||Q||²) in (K, Q) runs (papers' code: 2.2e-16)")
    kq_noreg: bool = Field(True, description="also run (K, Q) with lambda = 0, reported as *_noreg")
    kq_width: int | None = Field(None, ge=1, description="inner dimension m of K, Q (d x m); default d")
    lr: float = Field(0.1, gt=0, description="step size eta of normalized GD")
    loss: str = Field("logistic", description="logistic | correlation")
    init_std: float | None = Field(None, gt=0, description="per-entry init std (default 1/sqrt(3d))")
    sizes: list[list[int]] = Field(default_factory=lambda: [[4, 6, 8], [8, 10, 16]],
                                   description="extra (n, T, d) settings reported as corr_*_n{n}_T{T}_d{d}")
    record_every: int = Field(10, ge=1, description="history resolution (iterations)")

    @field_validator("sizes")
    @classmethod
    def _sizes(cls, v: list[list[int]]) -> list[list[int]]:
        for s in v:
            if len(s) != 3 or min(s) < 1 or s[1] < 2:
                raise ValueError(f"each size must be [n, T, d] with n, d >= 1 and T >= 2, got {s}")
        return v

    @field_validator("loss")
    @classmethod
    def _loss(cls, v: str) -> str:
        if v not in ("logistic", "correlation"):
            raise ValueError(f"must be one of ['logistic', 'correlation'], got {v!r}")
        return v


def implicit_bias_runs(n: int, T: int, d: int, cfg: ImplicitBiasConfig, progress: bool = False) -> dict:
    """GD on W and on (K, Q) for cfg.n_seeds problems of size (n, T, d); correlations with both SVMs."""
    problem = sample_seeded(n, T, d, cfg.seed, cfg.n_seeds)
    glob = problem.optimal_tokens()
    out: dict = {}
    variants = [("W", "W", cfg.steps, 0.0), ("KQ", "KQ", cfg.kq_steps, cfg.kq_weight_decay)]
    if cfg.kq_noreg and cfg.kq_weight_decay > 0:
        variants.append(("KQ0", "KQ", cfg.kq_steps, 0.0))
    for name, param, steps, wd in variants:
        t0 = time.perf_counter()
        # the same init for both (K, Q) variants, so that they differ only by lambda
        res = train_attention(problem, param=param, steps=steps, lr=cfg.lr, loss=cfg.loss, init_std=cfg.init_std,
                              weight_decay=wd, width=cfg.kq_width if param == "KQ" else None,
                              generator=generator(cfg.seed, "svm-init", param, n, T, d),
                              record_every=cfg.record_every, progress=progress)
        t_gd = time.perf_counter() - t0
        sel = res.selected
        curves = {"fro": np.full((cfg.n_seeds, len(res.steps)), np.nan),
                  "nuc": np.full((cfg.n_seeds, len(res.steps)), np.nan)}
        ranks = {"fro": np.full(cfg.n_seeds, np.nan), "nuc": np.full(cfg.n_seeds, np.nan)}
        own = np.full(cfg.n_seeds, np.nan)
        t1 = time.perf_counter()
        for k in range(cfg.n_seeds):  # one convex solve per problem and norm (cvxpy; not a hot path)
            for norm in ("fro", "nuc"):
                W = _svm_or_none(problem[k], sel[k], norm)
                if W is not None:
                    curves[norm][k] = res.corr(torch.from_numpy(W))[:, k].numpy()
                    sv = np.linalg.svd(W, compute_uv=False)
                    ranks[norm][k] = int((sv > 1e-6 * sv[0]).sum())
                    if param == "KQ" and norm == "nuc":
                        W_own = own_subspace_svm(problem[k], sel[k], res.W[k].numpy(), int(ranks[norm][k]))
                        own[k] = np.nan if W_own is None else correlation(res.W[k].numpy(), W_own)
        out[name] = {"steps": res.steps, "corr_fro": curves["fro"], "corr_nuc": curves["nuc"],
                     "mass": res.mass(sel).T.numpy(), "w_norm": res.w_norm.T.numpy(),
                     "global": (sel == glob).all(-1).numpy(), "gd_s": t_gd, "svm_s": time.perf_counter() - t1,
                     "rank_fro": ranks["fro"], "rank_nuc": ranks["nuc"], "corr_own": own}
    return out


def _mean_final(curves: np.ndarray) -> float:
    final = curves[:, -1]
    final = final[np.isfinite(final)]
    return float(final.mean()) if len(final) else float("nan")


def _nan_stat(a: np.ndarray, fn) -> float:
    a = a[np.isfinite(a)]
    return float(fn(a)) if len(a) else float("nan")


def _at_step(run: dict, curves: np.ndarray, step: int) -> float:
    idx = int(np.searchsorted(run["steps"], min(step, int(run["steps"][-1]))))
    vals = curves[:, idx]
    vals = vals[np.isfinite(vals)]
    return float(vals.mean()) if len(vals) else float("nan")


@register("svm-implicit-bias", "Tarzanagh et al.: GD on attention W / (K,Q) -> Frobenius / nuclear Att-SVM direction",
          config=ImplicitBiasConfig,
          quick={"n_seeds": 4, "steps": 400, "kq_steps": 400, "sizes": [[4, 6, 8]], "record_every": 20})
def run_implicit_bias(cfg: ImplicitBiasConfig, ctx: RunContext) -> dict[str, float]:
    """Correlation of GD's direction with the Att-SVM solutions; figure implicit_bias.png."""
    main = implicit_bias_runs(cfg.n, cfg.T, cfg.d, cfg, ctx.progress)
    W, KQ = main["W"], main["KQ"]
    m: dict[str, float] = {
        "corr_W_fro": _mean_final(W["corr_fro"]), "corr_KQ_nuc": _mean_final(KQ["corr_nuc"]),
        "corr_W_fro_min": _nan_stat(W["corr_fro"][:, -1], np.min),
        "corr_KQ_nuc_min": _nan_stat(KQ["corr_nuc"][:, -1], np.min),
        "corr_W_nuc": _mean_final(W["corr_nuc"]), "corr_KQ_fro": _mean_final(KQ["corr_fro"]),
        "kq_weight_decay": cfg.kq_weight_decay,
        "w_norm_KQ": float(KQ["w_norm"][:, -1].mean()),
        "corr_KQ_nuc_own_subspace": _nan_stat(KQ["corr_own"], np.mean),
        "mass_W": float(W["mass"][:, -1].mean()), "mass_KQ": float(KQ["mass"][:, -1].mean()),
        "frac_global_W": float(W["global"].mean()), "frac_global_KQ": float(KQ["global"].mean()),
        "n_feasible_W": int(np.isfinite(W["corr_fro"][:, -1]).sum()),
        "n_feasible_KQ": int(np.isfinite(KQ["corr_nuc"][:, -1]).sum()),
        "rank_svm_fro": float(np.nanmean(W["rank_fro"])), "rank_svm_nuc": float(np.nanmean(KQ["rank_nuc"])),
        "gd_wall_s": round(sum(r["gd_s"] for r in main.values()), 2),
        "svm_wall_s": round(sum(r["svm_s"] for r in main.values()), 2),
    }
    if cfg.kq_steps > cfg.steps:
        m[f"corr_KQ_nuc_at_{cfg.steps}"] = _at_step(KQ, KQ["corr_nuc"], cfg.steps)
    KQ0 = main.get("KQ0")
    if KQ0 is not None:
        m.update({"corr_KQ_nuc_noreg": _mean_final(KQ0["corr_nuc"]),
                  "corr_KQ_nuc_noreg_min": _nan_stat(KQ0["corr_nuc"][:, -1], np.min),
                  "corr_KQ_fro_noreg": _mean_final(KQ0["corr_fro"]),
                  "corr_KQ_nuc_own_subspace_noreg": _nan_stat(KQ0["corr_own"], np.mean),
                  "w_norm_KQ_noreg": float(KQ0["w_norm"][:, -1].mean()),
                  "frac_global_KQ_noreg": float(KQ0["global"].mean())})
    for k in range(cfg.n_seeds):
        m[f"corr_W_fro_seed{k}"] = float(W["corr_fro"][k, -1])
        m[f"corr_KQ_nuc_seed{k}"] = float(KQ["corr_nuc"][k, -1])
        if KQ0 is not None:
            m[f"corr_KQ_nuc_noreg_seed{k}"] = float(KQ0["corr_nuc"][k, -1])
    for n, T, d in cfg.sizes:
        r = implicit_bias_runs(n, T, d, cfg, ctx.progress)
        m[f"corr_W_fro_n{n}_T{T}_d{d}"] = _mean_final(r["W"]["corr_fro"])
        m[f"corr_KQ_nuc_n{n}_T{T}_d{d}"] = _mean_final(r["KQ"]["corr_nuc"])
        if "KQ0" in r:
            m[f"corr_KQ_nuc_noreg_n{n}_T{T}_d{d}"] = _mean_final(r["KQ0"]["corr_nuc"])
    _save_npz(ctx.path("curves.npz"), W_steps=W["steps"], KQ_steps=KQ["steps"],
              **{f"{p}_{k}": main[p][k] for p in main for k in ("corr_fro", "corr_nuc", "mass", "w_norm")})
    _plot_implicit_bias(main, cfg, ctx)
    return m


def _finite_rows(a: np.ndarray) -> np.ndarray:
    return a[np.isfinite(a).all(1)]


def _plot_implicit_bias(main: dict, cfg: ImplicitBiasConfig, ctx: RunContext) -> None:
    import matplotlib.pyplot as plt

    plotting.paper_style()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    W, KQ = main["W"], main["KQ"]
    ax = axes[0]
    plotting.band(ax, W["steps"], _finite_rows(W["corr_fro"]), r"$W$ vs $W^{mm}$ (Frobenius)", BLUE)
    plotting.band(ax, KQ["steps"], _finite_rows(KQ["corr_nuc"]), r"$(K,Q)$ vs $W^{mm}_\star$ (nuclear)", RED)
    KQ0 = main.get("KQ0")
    if KQ0 is not None:
        ax.plot(KQ0["steps"], np.nanmean(KQ0["corr_nuc"], 0), color=RED, ls=":", lw=1.5,
                label=r"$(K,Q)$, $\lambda=0$, vs $W^{mm}_\star$")
    ax.plot(W["steps"], np.nanmean(W["corr_nuc"], 0), color=BLUE, ls="--", lw=1, label=r"$W$ vs $W^{mm}_\star$")
    ax.plot(KQ["steps"], np.nanmean(KQ["corr_fro"], 0), color=RED, ls="--", lw=1, label=r"$(K,Q)$ vs $W^{mm}$")
    ax.set(xlabel="Iterations", ylabel="Correlation coefficient", ylim=(0, 1.05))
    ax.set_title(f"n={cfg.n}, T={cfg.T}, d={cfg.d}, {cfg.n_seeds} seeds, $\\lambda_{{KQ}}$={cfg.kq_weight_decay:.2g}")
    ax.legend(loc="lower right")
    ax = axes[1]
    plotting.band(ax, W["steps"], W["mass"], r"$W$", BLUE)
    plotting.band(ax, KQ["steps"], KQ["mass"], r"$(K,Q)$", RED)
    ax.set(xlabel="Iterations", ylabel="Softmax probability (selected)")
    ax.legend(loc="lower right")
    ax = axes[2]
    plotting.band(ax, W["steps"], W["w_norm"], r"$W$", BLUE)
    plotting.band(ax, KQ["steps"], KQ["w_norm"], r"$KQ^\top$", RED)
    if KQ0 is not None:
        ax.plot(KQ0["steps"], np.nanmean(KQ0["w_norm"], 0), color=RED, ls=":", lw=1.5, label=r"$KQ^\top$, $\lambda=0$")
    ax.set(xlabel="Iterations", ylabel=r"$\|W\|_F$", yscale="log")
    ax.legend(loc="lower right")
    for ax in axes:
        ax.set_xscale("symlog", linthresh=10)
        ax.set_xlim(0, max(W["steps"][-1], KQ["steps"][-1]))
    plotting.save_figure(fig, ctx.path("implicit_bias"))


# ---------------------------------------------------------------------------------------------- local / global
class LocalGlobalConfig(_CPUConfig):
    """svm-local-global: random problems and initializations per dimension d (n, T fixed)."""

    n: int = Field(6, ge=1, description="sequences per problem")
    T: int = Field(8, ge=2, description="tokens per sequence")
    ds: list[int] = Field(default_factory=lambda: [2, 4, 6, 8, 12, 16, 24], description="dimensions d to sweep")
    runs: int = Field(50, ge=1, description="random problems (each with a random init) per d")
    steps: int = Field(1000, ge=1, description="normalized GD iterations")
    lr: float = Field(0.1, gt=0, description="step size of normalized GD")
    init_std: float | None = Field(None, gt=0, description="per-entry init std (default 1/sqrt(3d))")
    corr_threshold: float = Field(0.95, gt=0, le=1, description="corr with W_mm(alpha) that counts as converged")

    @field_validator("ds")
    @classmethod
    def _ds(cls, v: list[int]) -> list[int]:
        if not v or min(v) < 1:
            raise ValueError(f"must be a non-empty list of dimensions >= 1, got {v}")
        return v


def classify_runs(problem: SelectionProblem, W: torch.Tensor, corr_threshold: float) -> dict[str, np.ndarray]:
    """Per run: 'global' (optimal selection, converged to its SVM), 'local' (locally optimal, not global,
    converged), 'other'; plus whether the global Att-SVM is feasible. Returns boolean arrays (runs,)."""
    sel = attention_probs(problem, W).argmax(-1)
    glob = problem.optimal_tokens()
    R = W.shape[0]
    out = {k: np.zeros(R, dtype=bool) for k in ("global", "local", "other", "global_feasible")}
    corr = np.full(R, np.nan)
    for r in range(R):  # one convex solve per run (cvxpy)
        is_glob = bool((sel[r] == glob[r]).all())
        lo = check_local(problem[r], sel[r])
        if lo.feasible:
            corr[r] = correlation(W[r].numpy(), lo.solution.W)
        ok = lo.locally_optimal and corr[r] >= corr_threshold
        out["global"][r] = ok and is_glob
        out["local"][r] = ok and not is_glob
        out["other"][r] = not ok
        out["global_feasible"][r] = lo.feasible if is_glob else _svm_or_none(problem[r], glob[r], "fro") is not None
    out["corr"] = corr
    return out


@register("svm-local-global", "Tarzanagh et al.: how often attention GD reaches the global vs a local token selection",
          config=LocalGlobalConfig, quick={"ds": [2, 6, 16], "runs": 12, "steps": 300})
def run_local_global(cfg: LocalGlobalConfig, ctx: RunContext) -> dict[str, float]:
    """Fractions of global / local / other convergence per d; figure local_global.png."""
    m: dict[str, float] = {}
    frac = {k: [] for k in ("global", "local", "other", "global_feasible")}
    t0 = time.perf_counter()
    for d in cfg.ds:
        problem = sample_seeded(cfg.n, cfg.T, d, cfg.seed, cfg.runs)
        res = train_attention(problem, steps=cfg.steps, lr=cfg.lr, init_std=cfg.init_std,
                              generator=generator(cfg.seed, "svm-local-global-init", d), record_every=cfg.steps,
                              progress=ctx.progress)
        c = classify_runs(problem, res.W, cfg.corr_threshold)
        for k in frac:
            frac[k].append(float(c[k].mean()))
            m[f"frac_{k}_d{d}"] = float(c[k].mean())
        m[f"frac_locally_optimal_d{d}"] = float(c["global"].mean() + c["local"].mean())
    g = np.array(frac["global"])
    m["frac_global_first"], m["frac_global_last"] = float(g[0]), float(g[-1])
    m["global_spearman_with_d"] = (float(spearmanr(cfg.ds, g).statistic) if len(g) > 1 and g.std() > 0
                                   else float("nan"))
    m["wall_per_d_s"] = round((time.perf_counter() - t0) / len(cfg.ds), 2)
    _save_npz(ctx.path("fractions.npz"), ds=np.array(cfg.ds), **{k: np.array(v) for k, v in frac.items()})
    _plot_local_global(cfg, frac, ctx)
    return m


def _plot_local_global(cfg: LocalGlobalConfig, frac: dict, ctx: RunContext) -> None:
    import matplotlib.pyplot as plt

    plotting.paper_style()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    x = np.arange(len(cfg.ds))
    w = 0.27
    loc = np.array(frac["global"]) + np.array(frac["local"])
    ax.bar(x - w, 100 * np.array(frac["global"]), w, color=RED, label="Global")
    ax.bar(x, 100 * loc, w, color=BLUE, label="Local (incl. global)")
    ax.bar(x + w, 100 * np.array(frac["other"]), w, color=TEAL, label="Not local")
    ax.set_xticks(x, [str(d) for d in cfg.ds])
    ax.set(xlabel="Varying d", ylabel="Percentage (%)", ylim=(0, 122), yticks=[0, 20, 40, 60, 80, 100])
    ax.set_title(f"n={cfg.n}, T={cfg.T}, {cfg.runs} runs per d")
    ax.legend(loc="upper left", ncols=3)
    plotting.save_figure(fig, ctx.path("local_global"))


# ------------------------------------------------------------------------------------------- regularization path
class RegPathConfig(_CPUConfig):
    """svm-regpath: constrained minimizers over growing Frobenius / nuclear balls."""

    n: int = Field(6, ge=1, description="sequences per problem")
    T: int = Field(8, ge=2, description="tokens per sequence")
    d: int = Field(10, ge=1, description="token dimension")
    n_seeds: int = Field(5, ge=1, description="independent problems")
    r_min: float = Field(0.5, gt=0, description="smallest radius R")
    r_max: float = Field(200.0, gt=0, description="largest radius R")
    n_radii: int = Field(12, ge=2, description="radii, geometrically spaced")
    steps: int = Field(100, ge=1, description="projected-GD iterations per radius")

    @field_validator("r_max")
    @classmethod
    def _rmax(cls, v: float, info) -> float:
        if "r_min" in info.data and v <= info.data["r_min"]:
            raise ValueError(f"must be > r_min ({info.data['r_min']}), got {v}")
        return v


@register("svm-regpath", "Tarzanagh et al.: regularization path W_R/R -> Att-SVM direction (Frobenius and nuclear)",
          config=RegPathConfig, quick={"n_seeds": 3, "n_radii": 6, "steps": 40, "r_max": 60.0})
def run_regpath(cfg: RegPathConfig, ctx: RunContext) -> dict[str, float]:
    """Correlation of W_R with the Att-SVM of its final selection vs R; figure regpath.png."""
    problem = sample_seeded(cfg.n, cfg.T, cfg.d, cfg.seed, cfg.n_seeds)
    radii = np.geomspace(cfg.r_min, cfg.r_max, cfg.n_radii)
    m: dict[str, float] = {}
    curves = {}
    for norm in ("fro", "nuc"):
        t0 = time.perf_counter()
        res = regularization_path(problem, radii, norm=norm, steps=cfg.steps,
                                  generator=generator(cfg.seed, "svm-regpath-init", norm), progress=ctx.progress)
        sel = attention_probs(problem, res.W[-1]).argmax(-1)
        c = np.full((cfg.n_seeds, len(radii)), np.nan)
        for k in range(cfg.n_seeds):
            W = _svm_or_none(problem[k], sel[k], norm)
            if W is not None:
                c[k] = res.corr(torch.from_numpy(W))[:, k].numpy()
        curves[norm] = c
        m[f"corr_regpath_{norm}"] = _mean_final(c)
        for k in range(cfg.n_seeds):
            m[f"corr_regpath_{norm}_seed{k}"] = float(c[k, -1])
        m[f"frac_global_regpath_{norm}"] = float((sel == problem.optimal_tokens()).all(-1).double().mean())
        m[f"wall_regpath_{norm}_s"] = round(time.perf_counter() - t0, 2)
    if not np.isfinite(m["corr_regpath_fro"]) and not np.isfinite(m["corr_regpath_nuc"]):
        raise ConfigError("svm-regpath: Att-SVM infeasible for every problem; increase d or decrease n, T")
    _save_npz(ctx.path("regpath.npz"), radii=radii, corr_fro=curves["fro"], corr_nuc=curves["nuc"])
    import matplotlib.pyplot as plt

    plotting.paper_style()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    plotting.band(ax, radii, _finite_rows(curves["fro"]), r"$\|W\|_F\leq R$ vs $W^{mm}$", BLUE)
    plotting.band(ax, radii, _finite_rows(curves["nuc"]), r"$\|W\|_\star\leq R$ vs $W^{mm}_\star$", RED)
    ax.set(xscale="log", xlabel="Radius R", ylabel="Correlation coefficient", ylim=(0, 1.05))
    ax.set_title(f"Regularization path, n={cfg.n}, T={cfg.T}, d={cfg.d}")
    ax.legend(loc="lower right")
    plotting.save_figure(fig, ctx.path("regpath"))
    return m
