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
        "alpha": 0.05}
QUICK = {"tasks": 200, "d": 5, "n": 10, "baseline_tasks": 20, "prefix_baseline_tasks": 5, "lam": 0.5, "alpha": 0.05}


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def _best(fn, repeats: int = 2):
    best, out = float("inf"), None
    for _ in range(repeats):
        out, s = _timed(fn)
        best = min(best, s)
    return out, best


def run(quick: bool = False, out=None, peaks: dict | None = None, plot: bool = True) -> dict:
    """Time batched OLS/ridge/LASSO (fit+predict, prefix) against per-task loops; returns the JSON dict."""
    from sklearn.linear_model import Lasso as SkLasso
    from sklearn.linear_model import Ridge as SkRidge

    import mesaopt as mo

    cfg = QUICK if quick else FULL
    m, d, n, k, kp = cfg["tasks"], cfg["d"], cfg["n"], cfg["baseline_tasks"], cfg["prefix_baseline_tasks"]
    lam, alpha = cfg["lam"], cfg["alpha"]
    task = mo.tasks.LinearRegression(d=d, noise_std=0.1)
    batch = task.sample(m, n + 1, torch.Generator().manual_seed(0))
    cx, cy, qx, _ = batch.split(n)
    xs, ys = batch.xs[:, :n], batch.ys[:, :n]
    X, Y, Q = (t.double().numpy() for t in (cx, cy, qx[:, 0]))

    ols, ridge, lasso = mo.algorithms.OLS(), mo.algorithms.Ridge(lam=lam), mo.algorithms.Lasso(alpha=alpha)
    res: dict = {"benchmark": "algorithms", "shape": {"tasks": m, "d": d, "n_context": n},
                 "baseline_tasks_timed": k, "prefix_baseline_tasks_timed": kp, "rows": {}}

    def row(name, fast_s, base_s_per_task, base_name, err, target):
        base_total = base_s_per_task * m
        res["rows"][name] = {"mesaopt_s": round(fast_s, 4), "baseline": base_name,
                             "baseline_s_extrapolated": round(base_total, 3), "speedup": round(base_total / fast_s, 1),
                             "target": target, "max_abs_pred_diff": float(err)}

    # ---- OLS fit + predict
    pred, fast = _best(lambda: ols(cx, cy, qx))

    def np_ols():
        return np.array([np.linalg.lstsq(X[i], Y[i], rcond=None)[0] @ Q[i] for i in range(k)])

    ref, base = _timed(np_ols)
    row("ols", fast, base / k, "numpy.linalg.lstsq per task", np.abs(pred[:k, 0].double().numpy() - ref).max(), 50)

    # ---- ridge fit + predict (NumPy solve loop and scikit-learn loop)
    pred, fast = _best(lambda: ridge(cx, cy, qx))

    def np_ridge():
        eye = lam * np.eye(d)
        return np.array([np.linalg.solve(X[i].T @ X[i] + eye, X[i].T @ Y[i]) @ Q[i] for i in range(k)])

    def sk_ridge():
        return np.array([SkRidge(alpha=lam, fit_intercept=False).fit(X[i], Y[i]).predict(Q[i:i + 1])[0]
                         for i in range(k)])

    ref, base = _timed(np_ridge)
    row("ridge", fast, base / k, "numpy.linalg.solve per task", np.abs(pred[:k, 0].double().numpy() - ref).max(), 50)
    ref, base = _timed(sk_ridge)
    row("ridge_vs_sklearn", fast, base / k, "sklearn Ridge per task",
        np.abs(pred[:k, 0].double().numpy() - ref).max(), 50)

    # ---- LASSO fit + predict
    pred, fast = _best(lambda: lasso(cx, cy, qx), repeats=1)

    def sk_lasso():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.array([SkLasso(alpha=alpha, fit_intercept=False, tol=1e-10, max_iter=100_000).fit(X[i], Y[i])
                             .predict(Q[i:i + 1])[0] for i in range(k)])

    ref, base = _timed(sk_lasso)
    row("lasso", fast, base / k, "sklearn Lasso per task", np.abs(pred[:k, 0].double().numpy() - ref).max(), 10)

    # ---- prefix: all n prefix problems per task (Greville / RLS recursions vs a per-task, per-prefix loop)
    XP, YP = xs.double().numpy(), ys.double().numpy()
    pred, fast = _best(lambda: ols.prefix(xs, ys), repeats=1)

    def np_ols_prefix():
        return np.array([[0.0] + [np.linalg.lstsq(XP[i, :t], YP[i, :t], rcond=None)[0] @ XP[i, t] for t in range(1, n)]
                         for i in range(kp)])

    ref, base = _timed(np_ols_prefix)
    row("ols_prefix", fast, base / kp, "numpy.linalg.lstsq per task and prefix",
        np.abs(pred[:kp].double().numpy() - ref).max(), 50)
    pred, fast = _best(lambda: ridge.prefix(xs, ys), repeats=1)

    def np_ridge_prefix():
        eye = lam * np.eye(d)
        return np.array([[np.linalg.solve(XP[i, :t].T @ XP[i, :t] + eye, XP[i, :t].T @ YP[i, :t]) @ XP[i, t]
                          for t in range(n)] for i in range(kp)])

    ref, base = _timed(np_ridge_prefix)
    row("ridge_prefix", fast, base / kp, "numpy.linalg.solve per task and prefix",
        np.abs(pred[:kp].double().numpy() - ref).max(), 50)
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
