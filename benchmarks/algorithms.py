"""Reference algorithms on many tasks: mesaopt's batched torch solvers vs a per-task NumPy / scikit-learn loop.

10,000 tasks (d=20, N=40 context points, one query each): OLS (min-norm), ridge and LASSO, fit + predict, and
the prefix (all 40 prefix problems per task) for OLS/ridge. The per-task baselines are timed on a subset of
tasks and scaled linearly to all tasks (a Python loop over independent tasks is linear in their number); the
subset size is reported. Predictions are checked to agree.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch

FULL = {"tasks": 10_000, "d": 20, "n": 40, "baseline_tasks": 500, "prefix_baseline_tasks": 50, "lam": 0.5,
        "alpha": 0.05, "repeats": 3}
QUICK = {"tasks": 200, "d": 5, "n": 10, "baseline_tasks": 20, "prefix_baseline_tasks": 5, "lam": 0.5, "alpha": 0.05,
         "repeats": 1}


def _round_robin(fns: dict, repeats: int) -> tuple[dict, dict]:
    """Best-of-``repeats`` wall and process-CPU seconds per fn, called alternately (load drift hits all alike)."""
    wall = {k: float("inf") for k in fns}
    cpu = dict(wall)
    for _ in range(repeats):
        for name, fn in fns.items():
            w, c = time.perf_counter(), time.process_time()
            fn()
            wall[name] = min(wall[name], time.perf_counter() - w)
            cpu[name] = min(cpu[name], time.process_time() - c)
    return wall, cpu


def _f64_peak(n: int = 512, repeats: int = 3) -> float:
    """float64 GFLOP/s of one n x n x n matmul (best of ``repeats``): the flop bound of the batched fits."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g, dtype=torch.float64), torch.randn(n, n, generator=g, dtype=torch.float64)
    best = float("inf")
    for _ in range(repeats + 1):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def run(quick: bool = False, out=None, peaks: dict | None = None, plot: bool = True) -> dict:
    """Time batched OLS/ridge/LASSO (fit+predict, prefix) against per-task loops; returns the JSON dict.

    Each row times the mesaopt call and its per-task baseline round-robin (best of ``repeats``), so load drift hits
    both alike; wall and process-CPU seconds are both reported (CPU time is robust to time-slicing on a shared
    machine). Baselines run on a subset of tasks and are scaled linearly.
    """
    from sklearn.linear_model import Lasso as SkLasso
    from sklearn.linear_model import LinearRegression as SkLinearRegression
    from sklearn.linear_model import Ridge as SkRidge

    import mesaopt as mo
    cfg = QUICK if quick else FULL
    m, d, n, k, kp = cfg["tasks"], cfg["d"], cfg["n"], cfg["baseline_tasks"], cfg["prefix_baseline_tasks"]
    lam, alpha, reps = cfg["lam"], cfg["alpha"], cfg["repeats"]
    task = mo.tasks.LinearRegression(d=d, noise_std=0.1)
    batch = task.sample(m, n + 1, torch.Generator().manual_seed(0))
    cx, cy, qx, _ = batch.split(n)
    xs, ys = batch.xs[:, :n], batch.ys[:, :n]
    X, Y, Q = (t.double().numpy() for t in (cx, cy, qx[:, 0]))
    XP, YP = xs.double().numpy(), ys.double().numpy()

    ols, ridge, lasso = mo.algorithms.OLS(), mo.algorithms.Ridge(lam=lam), mo.algorithms.Lasso(alpha=alpha)
    peak = _f64_peak(128 if quick else 512)
    res: dict = {"benchmark": "algorithms", "shape": {"tasks": m, "d": d, "n_context": n},
                 "input_dtype": str(cx.dtype), "compute_dtype": "float64", "torch_threads": torch.get_num_threads(),
                 "baseline_tasks_timed": k, "prefix_baseline_tasks_timed": kp, "float64_matmul_gflops": round(peak, 2),
                 "rows": {}}
    # Minimum float64 work of one fit: the symmetric Gram [X y]^T [X y] (N (d+1)(d+2) flops) + Cholesky (d^3 / 3).
    fit_flops = n * (d + 1) * (d + 2) + d**3 / 3

    def row(name, fast, base, base_name, base_tasks, err, target, flops_per_task=None):
        """fast/base: callables; the baseline returns its predictions for the first ``base_tasks`` tasks."""
        out_fast, out_base = {}, {}
        fns = {"fast": lambda: out_fast.setdefault("v", fast()), "base": lambda: out_base.setdefault("v", base())}
        secs, cpu = _round_robin(fns, reps)
        base_total = secs["base"] / base_tasks * m
        r = {"mesaopt_s": round(secs["fast"], 4), "baseline": base_name,
             "baseline_s_extrapolated": round(base_total, 3),
             "baseline_us_per_task": round(secs["base"] / base_tasks * 1e6, 1),
             "speedup": round(base_total / secs["fast"], 1), "target": target,
             "mesaopt_cpu_s": round(cpu["fast"], 4),
             "baseline_cpu_s_extrapolated": round(cpu["base"] / base_tasks * m, 3),
             "speedup_cpu": round(cpu["base"] / base_tasks * m / max(cpu["fast"], 1e-9), 1),
             "max_abs_pred_diff": float(err(out_fast["v"], out_base["v"]))}
        if flops_per_task is not None:  # the fastest any float64 implementation could be on this core
            bound = flops_per_task * m / (peak * 1e9)
            r["flop_bound_s"] = round(bound, 5)
            r["max_speedup_at_flop_bound"] = round(base_total / bound, 1)
        res["rows"][name] = r

    def diff(cols):
        return lambda fast, ref: np.abs(fast[:cols].double().numpy() - ref).max()

    # ---- OLS fit + predict: NumPy lstsq loop and scikit-learn LinearRegression loop
    def np_ols():
        return np.array([np.linalg.lstsq(X[i], Y[i], rcond=None)[0] @ Q[i] for i in range(k)])

    def sk_ols():
        return np.array([SkLinearRegression(fit_intercept=False).fit(X[i], Y[i]).predict(Q[i:i + 1])[0]
                         for i in range(k)])

    def first(f):
        return lambda: f()[:, 0]

    row("ols", first(lambda: ols(cx, cy, qx)), np_ols, "numpy.linalg.lstsq per task", k, diff(k), 50,
        fit_flops + 4 * n * d)
    row("ols_vs_sklearn", first(lambda: ols(cx, cy, qx)), sk_ols, "sklearn LinearRegression per task", k, diff(k), 50)

    # ---- ridge fit + predict (NumPy solve loop and scikit-learn loop)
    def np_ridge():
        eye = lam * np.eye(d)
        return np.array([np.linalg.solve(X[i].T @ X[i] + eye, X[i].T @ Y[i]) @ Q[i] for i in range(k)])

    def sk_ridge():
        return np.array([SkRidge(alpha=lam, fit_intercept=False).fit(X[i], Y[i]).predict(Q[i:i + 1])[0]
                         for i in range(k)])

    row("ridge", first(lambda: ridge(cx, cy, qx)), np_ridge, "numpy.linalg.solve per task", k, diff(k), 50, fit_flops)
    row("ridge_vs_sklearn", first(lambda: ridge(cx, cy, qx)), sk_ridge, "sklearn Ridge per task", k, diff(k), 50)

    # ---- LASSO fit + predict
    def sk_lasso():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.array([SkLasso(alpha=alpha, fit_intercept=False, tol=1e-10, max_iter=100_000).fit(X[i], Y[i])
                             .predict(Q[i:i + 1])[0] for i in range(k)])

    row("lasso", first(lambda: lasso(cx, cy, qx)), sk_lasso, "sklearn Lasso per task (tol 1e-10)", k, diff(k), 10)

    # ---- prefix: all n prefix problems per task (Greville / RLS recursions vs a per-task, per-prefix loop)
    def np_ols_prefix():
        return np.array([[0.0] + [np.linalg.lstsq(XP[i, :t], YP[i, :t], rcond=None)[0] @ XP[i, t] for t in range(1, n)]
                         for i in range(kp)])

    def np_ridge_prefix():
        eye = lam * np.eye(d)
        return np.array([[np.linalg.solve(XP[i, :t].T @ XP[i, :t] + eye, XP[i, :t].T @ YP[i, :t]) @ XP[i, t]
                          for t in range(n)] for i in range(kp)])

    row("ols_prefix", lambda: ols.prefix(xs, ys), np_ols_prefix, "numpy.linalg.lstsq per task and prefix", kp,
        diff(kp), 50)
    row("ridge_prefix", lambda: ridge.prefix(xs, ys), np_ridge_prefix, "numpy.linalg.solve per task and prefix", kp,
        diff(kp), 50)
    if plot:
        from benchmarks.common import out_dir

        res["plot"] = str(_plot(res, out_dir(out)))
    return res


def _plot(res: dict, out):
    import matplotlib.pyplot as plt

    from mesaopt.plotting import paper_style, save_figure

    paper_style()
    names = list(res["rows"])
    fig, ax = plt.subplots(figsize=(7, 3.2))
    x = np.arange(len(names))
    ax.bar(x - 0.2, [res["rows"][k]["mesaopt_s"] for k in names], 0.4, label="mesaopt (batched)")
    ax.bar(x + 0.2, [res["rows"][k]["baseline_s_extrapolated"] for k in names], 0.4, label="per-task loop")
    for i, k in enumerate(names):
        ax.text(i, res["rows"][k]["baseline_s_extrapolated"], f"{res['rows'][k]['speedup']:.0f}x", ha="center",
                va="bottom", fontsize=8)
    ax.set_yscale("log")
    ax.set_xticks(x, names, rotation=20)
    ax.set_ylabel(f"seconds for {res['shape']['tasks']} tasks")
    ax.set_title(f"reference algorithms (d={res['shape']['d']}, N={res['shape']['n_context']})")
    ax.legend()
    stem = out / "algorithms_cost"
    save_figure(fig, stem)
    return stem.with_suffix(".png")
