"""One Att-SVM demonstration (the ``mesaopt svm`` command): train attention by normalized GD, compare to Att-SVM."""

from __future__ import annotations

import time

import numpy as np

from mesaopt.errors import ConfigError
from mesaopt.seeding import generator
from mesaopt.svm.att_svm import SVMInfeasible, att_svm, correlation
from mesaopt.svm.attention_gd import PAPER_KQ_WEIGHT_DECAY, train_attention
from mesaopt.svm.optimal_tokens import check_local
from mesaopt.tasks.selection import sample_selection


def implicit_bias_demo(param: str = "W", n: int = 4, T: int = 6, d: int = 8, seed: int = 0, steps: int = 2000,
                       lr: float = 0.1, weight_decay: float | None = None, progress: bool = False) -> dict:
    """Sample one problem, run normalized GD on W or (K, Q), solve Att-SVM (fro for W, nuc for KQ) on GD's
    final selection and return a JSON-able summary (correlation, selection, margins, norms, timings).

    ``weight_decay`` None means the papers' choice: 0 for W, PAPER_KQ_WEIGHT_DECAY (2.2e-16) for (K, Q)."""
    if param not in ("W", "KQ"):
        raise ConfigError(f"--param must be one of ['W', 'KQ'], got {param!r}")
    norm = "fro" if param == "W" else "nuc"
    if weight_decay is None:
        weight_decay = 0.0 if param == "W" else PAPER_KQ_WEIGHT_DECAY
    problem = sample_selection(n, T, d, generator(seed, "svm-demo", "problem"))
    t0 = time.perf_counter()
    res = train_attention(problem, param=param, steps=steps, lr=lr, weight_decay=weight_decay,
                          generator=generator(seed, "svm-demo", "init"), record_every=max(1, steps // 100),
                          progress=progress)
    t_gd = time.perf_counter() - t0
    sel = res.selected
    glob = problem.optimal_tokens()
    out = {"param": param, "norm": norm, "n": n, "T": T, "d": d, "seed": seed, "steps": steps, "lr": lr,
           "weight_decay": weight_decay,
           "selected": sel.tolist(), "global_tokens": glob.tolist(), "is_global": bool((sel == glob).all()),
           "final_loss": float(res.loss[-1]), "w_norm": float(res.w_norm[-1]),
           "softmax_mass": float(res.mass(sel)[-1]), "gd_wall_s": round(t_gd, 3)}
    t1 = time.perf_counter()
    try:
        sol = att_svm(problem.X, problem.Z, sel, norm=norm)
    except SVMInfeasible as e:
        out.update({"feasible": False, "svm_error": str(e)})
        return out
    loc = check_local(problem, sel, norm=norm, sol=sol)
    out.update({"feasible": True, "corr": float(correlation(res.W.numpy(), sol.W)),
                "svm_norm": sol.objective, "svm_min_margin": sol.min_margin, "n_support": sol.n_active,
                "svm_rank": int(np.linalg.matrix_rank(sol.W, tol=1e-6)), "locally_optimal": loc.locally_optimal,
                "solver": sol.solver, "svm_wall_s": round(time.perf_counter() - t1, 3)})
    return out
