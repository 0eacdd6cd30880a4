"""The algorithm families ``identify`` and ``compare`` match a learner against: one table, one row per family.

A :class:`Family` says how to fit the family's hyper-parameters to a model's per-layer predictions
(``fit(FitProblem) -> FamilyFit``), how to build the reference learner from fitted hyper-parameters
(``build(hparams) -> Learner``) and which hyper-parameters a result row reports (``reports``).
``FAMILY_TABLE`` holds them in order of simplicity (ties go to the earlier family); ``FAMILIES`` is its keys.

* ``ols``: min-norm least squares (no hyper-parameter).
* ``gd``: GD(steps=k, lr) from w = 0 (DESIGN convention L(w) = (1/2N) sum (w^T x - y)^2). All k <= max_gd_steps
  come from one ``GD.trajectory`` per lr of a log grid; the best lr is then refined by scipy's bounded Brent
  minimiser (``minimize_scalar``) in log lr.
* ``ridge``: Ridge(lam) (sum-normalised lam), log grid then bounded Brent refinement in log lam.
* ``newton``: Iterative Newton (Fu et al. 2310.17086), iterations k <= max_newton_iters, via one trajectory.
* ``gdpp``: GD++ (von Oswald et al. Sec. 4) with k = layer + 1 steps, each step with its own lr and curvature
  coefficient gamma (x <- (I - gamma Sigma_hat) x), fitted by L-BFGS from the best GD lr (gamma = 0). The
  predictions come from ``algorithms.gradient.gdpp_trajectory``, the library's one GD++ implementation.

All candidate predictions are float64; ``sq_diff`` compares every candidate with every layer at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import optimize

from mesaopt import algorithms
from mesaopt.algorithms.base import full_counts
from mesaopt.algorithms.gradient import gdpp_trajectory
from mesaopt.errors import ConfigError, ShapeError
from mesaopt.learner import check_learner_inputs

__all__ = ["FAMILIES", "FAMILY_TABLE", "Family", "FamilyFit", "FitProblem", "build_learner", "err_cos", "fit_gd",
           "fit_gdpp", "fit_newton", "fit_ols", "fit_ridge", "gd_predictions", "gdpp_predictions",
           "newton_predictions", "ridge_predictions", "sq_diff"]


# --------------------------------------------------------------------------- batched candidate predictions
def _f64(*ts: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(t.to(torch.float64) for t in ts)


def gd_predictions(ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor, steps: int,
                   lr: float) -> torch.Tensor:
    """Predictions of GD after 0..steps steps (one trajectory): (B,N,d), (B,N), (B,Q,d) -> (steps+1, B, Q), float64."""
    cx, cy, qx = _f64(ctx_x, ctx_y, qry_x)
    traj = algorithms.GD(steps=steps, lr=lr).trajectory(cx, cy).to(torch.float64)  # (B, steps+1, d)
    return torch.einsum("bsd,bqd->sbq", traj, qx)


def newton_predictions(ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor, iters: int) -> torch.Tensor:
    """Predictions of Iterative Newton after 0..iters iterations: (B,N,d), (B,N), (B,Q,d) -> (iters+1, B, Q)."""
    cx, cy, qx = _f64(ctx_x, ctx_y, qry_x)
    traj = algorithms.IterativeNewton(steps=iters).trajectory(cx, cy).to(torch.float64)  # (B, iters+1, d)
    return torch.einsum("bsd,bqd->sbq", traj, qx)


def gdpp_predictions(ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor, lrs: torch.Tensor,
                     gammas: torch.Tensor) -> torch.Tensor:
    """GD++ predictions after 0..K steps, float64, differentiable in lrs (K,) and gammas (K,): -> (K+1, B, Q).

    ctx_x (B, N, d), ctx_y (B, N), qry_x (B, Q, d). Step k (von Oswald et al. Sec. 4, the LSA construction
    ``constructions.gd_plus_plus``): with the current inputs x (context and query) and residuals
    r_i = y_i - yhat(x_i), g = (1/N) sum_i r_i x_i; the prediction at every token grows by lr_k g^T x_j, then
    every input is transformed x <- (I - gamma_k Sigma_hat) x with Sigma_hat = (1/N) sum_i x_i x_i^T of the
    (pre-update) context inputs. Computed by ``algorithms.gradient.gdpp_trajectory`` (weights in the original
    coordinates) and read out at the queries.
    """
    check_learner_inputs(ctx_x, ctx_y, qry_x)
    if lrs.shape != gammas.shape or lrs.dim() != 1:
        raise ShapeError(f"lrs and gammas must both be (K,), got {tuple(lrs.shape)} and {tuple(gammas.shape)}")
    cx, cy, qx = _f64(ctx_x, ctx_y, qry_x)
    traj = gdpp_trajectory(cx, cy, full_counts(cx), lrs.shape[0], lrs.to(torch.float64),
                           gammas.to(torch.float64))  # (B, K+1, d)
    return torch.einsum("bsd,bqd->sbq", traj, qx)


def ridge_predictions(ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor, lam: float) -> torch.Tensor:
    """Ridge(lam) predictions as one candidate: (B,N,d), (B,N), (B,Q,d) -> (1, B, Q), float64."""
    cx, cy, qx = _f64(ctx_x, ctx_y, qry_x)
    return algorithms.Ridge(lam=lam)(cx, cy, qx).unsqueeze(0)


def sq_diff(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of every candidate with every layer: (S,B,Q), (L,B,Q) -> (S,L); inf if not finite."""
    p = preds.to(torch.float64)
    t = target.to(torch.float64)
    m = t.shape[1] * t.shape[2]
    out = ((p * p).sum((1, 2))[:, None] + (t * t).sum((1, 2))[None, :]
           - 2.0 * torch.einsum("sbq,lbq->sl", p, t)) / m
    bad = ~torch.isfinite(p).all(dim=2).all(dim=1)
    out = out.clamp(min=0.0)
    out[bad] = math.inf
    return torch.nan_to_num(out, nan=math.inf, posinf=math.inf)


def err_cos(pred_a: torch.Tensor, pred_b: torch.Tensor, y: torch.Tensor) -> float:
    """Cosine similarity of the error vectors (pred_a - y) and (pred_b - y) over the whole batch: (B,Q) x3 -> float."""
    ea = (pred_a.to(torch.float64) - y.to(torch.float64)).flatten()
    eb = (pred_b.to(torch.float64) - y.to(torch.float64)).flatten()
    den = ea.norm() * eb.norm()
    return float((ea @ eb) / den) if den > 0 else 0.0


def _refine_log(f: Callable[[float], float], lo: float, hi: float, maxiter: int) -> tuple[float, float]:
    """Minimise ``f(log v)`` over log v in [log lo, log hi] (scipy bounded Brent): -> (argmin log v, min)."""
    res = optimize.minimize_scalar(f, bounds=(math.log(lo), math.log(hi)), method="bounded",
                                   options={"xatol": 1e-9, "maxiter": maxiter})
    return float(res.x), float(res.fun)


def _mean_eig_scale(ctx_x: torch.Tensor) -> float:
    """Mean eigenvalue of Sigma_hat = X^T X / N over the batch (the natural inverse lr scale); ctx_x (B, N, d)."""
    x = ctx_x.to(torch.float64)
    return float((x * x).sum(-1).mean()) / x.shape[-1]


# --------------------------------------------------------------------------- per-family fits
@dataclass
class FamilyFit:
    """Best hyper-parameters of one family for every layer: hparams[l] and the fit-batch mse[l]."""

    family: str
    hparams: list[dict]
    mse: list[float]
    scan: dict[str, Any] = field(default_factory=dict)


def fit_gd(ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor, target: torch.Tensor,
           max_steps: int = 64, n_lr: int = 65, refine_iters: int = 25, n_refine: int = 8) -> FamilyFit:
    """Best (steps, lr) of GD per layer of ``target`` (L, B, Q); scan holds the lr grid and per-k grid minima.

    ctx_x (B, N, d), ctx_y (B, N), qry_x (B, Q, d). The ``n_refine`` most promising step counts get their lr
    refined by bounded Brent in log lr (at most ``refine_iters`` iterations) between the grid neighbours.
    """
    scale = 1.0 / max(_mean_eig_scale(ctx_x), 1e-12)
    lrs = scale * torch.logspace(-3, math.log10(3.0), n_lr, dtype=torch.float64)
    diffs = torch.stack([sq_diff(gd_predictions(ctx_x, ctx_y, qry_x, max_steps, float(lr)), target)
                         for lr in lrs])  # (n_lr, S+1, L)
    diffs[:, 0, :] = math.inf  # zero steps is the zero predictor, not a GD match
    hps, mses, per_step = [], [], []
    for layer in range(target.shape[0]):
        per_k, per_k_lr = diffs[:, :, layer].min(dim=0)  # (S+1,): best grid mse and lr index of every k
        tl = target[layer : layer + 1]
        best_hp, best = {"steps": 1, "lr": float(lrs[0])}, math.inf
        # refine the lr of the most promising step counts (grid ties between k and lr are common)
        for k in torch.argsort(per_k)[:n_refine].tolist():
            if not math.isfinite(float(per_k[k])):
                continue
            i = int(per_k_lr[k])

            def f(log_lr: float, k: int = k, tl: torch.Tensor = tl) -> float:
                p = gd_predictions(ctx_x, ctx_y, qry_x, k, math.exp(log_lr))[-1:]
                return float(sq_diff(p, tl)[0, 0])

            log_lr, m = _refine_log(f, float(lrs[max(i - 1, 0)]), float(lrs[min(i + 1, n_lr - 1)]), refine_iters)
            if not m <= float(per_k[k]):  # never worse than the grid point (NaN-safe)
                log_lr, m = math.log(float(lrs[i])), float(per_k[k])
            if m < best:
                best_hp, best = {"steps": int(k), "lr": math.exp(log_lr)}, m
        hps.append(best_hp)
        mses.append(best)
        per_step.append(per_k.tolist())  # best grid mse over lrs for each k
    return FamilyFit("gd", hps, mses, {"lrs": lrs.tolist(), "min_mse_per_steps": per_step})


def fit_newton(ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor, target: torch.Tensor,
               max_iters: int = 24) -> FamilyFit:
    """Best number of Iterative Newton iterations per layer of target (L, B, Q); scan: the mse curve per layer."""
    d = sq_diff(newton_predictions(ctx_x, ctx_y, qry_x, max_iters), target)  # (S+1, L)
    hps, mses = [], []
    for layer in range(target.shape[0]):
        k = int(torch.argmin(d[:, layer]))
        hps.append({"iterations": k})
        mses.append(float(d[k, layer]))
    return FamilyFit("newton", hps, mses, {"mse_per_iter": d.T.tolist()})


def fit_ridge(ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor, target: torch.Tensor,
              n_lam: int = 31, refine_iters: int = 25) -> FamilyFit:
    """Best ridge lam per layer of target (L, B, Q): log grid (relative to the mean diagonal of X^T X), then
    bounded Brent refinement in log lam between the grid neighbours (at most ``refine_iters`` iterations)."""
    scale = _mean_eig_scale(ctx_x) * ctx_x.shape[1]
    lams = scale * torch.logspace(-5, 2, n_lam, dtype=torch.float64)
    diffs = torch.cat([sq_diff(ridge_predictions(ctx_x, ctx_y, qry_x, float(lam)), target)
                       for lam in lams])  # (n_lam, L)
    hps, mses = [], []
    for layer in range(target.shape[0]):
        i = int(torch.argmin(diffs[:, layer]))
        tl = target[layer : layer + 1]

        def f(log_lam: float, tl: torch.Tensor = tl) -> float:
            return float(sq_diff(ridge_predictions(ctx_x, ctx_y, qry_x, math.exp(log_lam)), tl)[0, 0])

        log_lam, best = _refine_log(f, float(lams[max(i - 1, 0)]), float(lams[min(i + 1, n_lam - 1)]), refine_iters)
        if not best <= float(diffs[i, layer]):
            log_lam, best = math.log(float(lams[i])), float(diffs[i, layer])
        hps.append({"lam": math.exp(log_lam)})
        mses.append(best)
    return FamilyFit("ridge", hps, mses, {"lams": lams.tolist()})


def fit_ols(ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor, target: torch.Tensor) -> FamilyFit:
    """OLS has no hyper-parameter: its mse to every layer of target (L, B, Q)."""
    cx, cy, qx = _f64(ctx_x, ctx_y, qry_x)
    d = sq_diff(algorithms.OLS()(cx, cy, qx).unsqueeze(0), target)[0]
    return FamilyFit("ols", [{} for _ in range(target.shape[0])], d.tolist())


def _gdpp_mse(cx: torch.Tensor, cy: torch.Tensor, qx: torch.Tensor, lrs: torch.Tensor, gammas: torch.Tensor,
              tl: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of K-step GD++ (lrs, gammas (K,)) with one layer's predictions tl (B, Q)."""
    return ((gdpp_predictions(cx, cy, qx, lrs, gammas)[-1] - tl) ** 2).mean()


def fit_gdpp(ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor, target: torch.Tensor,
             steps: Sequence[int], init_lr: Sequence[float], max_iter: int = 200,
             starts: Sequence[tuple[float, float]] = ((1.0, 0.0), (1.0, 1.0), (2.0, 1.0))) -> FamilyFit:
    """GD++, steps[j] steps fitted to row j of target (L,B,Q): per-step (lr, gamma) by L-BFGS from (init_lr[j], 0).

    ctx_x (B, N, d), ctx_y (B, N), qry_x (B, Q, d). A few starts (lr, gamma multiples of init_lr[j]); the
    result is never worse than constant-lr GD at init_lr[j]. The last step's gamma is reported as 0.
    """
    cx, cy, qx = _f64(ctx_x, ctx_y, qry_x)
    if len(steps) != target.shape[0] or len(init_lr) != target.shape[0]:
        raise ShapeError(f"steps and init_lr need one entry per target row ({target.shape[0]})")
    hps, mses = [], []
    for j in range(target.shape[0]):
        k = int(steps[j])
        tl = target[j].detach().to(torch.float64)
        lr0 = float(init_lr[j])
        scale = lr0 if lr0 > 0 else 1.0  # lr and gamma are both measured in units of this scale

        def loss_grad(u: np.ndarray, k: int = k, tl: torch.Tensor = tl, scale: float = scale
                      ) -> tuple[float, np.ndarray]:
            params = torch.tensor(u, dtype=torch.float64, requires_grad=True)
            with torch.enable_grad():
                loss = _gdpp_mse(cx, cy, qx, params[:k] * scale, params[k:] * scale, tl)
                if not torch.isfinite(loss):
                    return 1e30, np.zeros_like(u)
                (g,) = torch.autograd.grad(loss, params)
            return float(loss.detach()), g.numpy().copy()

        lrs, gammas = torch.full((k,), lr0, dtype=torch.float64), torch.zeros(k, dtype=torch.float64)
        with torch.no_grad():
            m = float(_gdpp_mse(cx, cy, qx, lrs, gammas, tl))  # never worse than its GD start
        good = 1e-12 * float((tl**2).mean())
        for lr_mult, g_mult in starts:  # a few starts: the landscape in gamma has local minima
            if m <= good:
                break
            res = optimize.minimize(loss_grad, np.array([lr_mult] * k + [g_mult] * k), jac=True, method="L-BFGS-B",
                                    options={"maxiter": max_iter, "ftol": 1e-15, "gtol": 1e-12})
            u = torch.as_tensor(res.x, dtype=torch.float64)
            with torch.no_grad():
                mu = float(_gdpp_mse(cx, cy, qx, u[:k] * scale, u[k:] * scale, tl))
            if math.isfinite(mu) and mu < m:
                lrs, gammas, m = u[:k] * scale, u[k:] * scale, mu
        gammas = gammas.clone()
        gammas[-1] = 0.0  # the last step's input transform reaches no prediction
        hps.append({"steps": k, "lr": [float(v) for v in lrs], "gamma": [float(v) for v in gammas]})
        mses.append(m)
    return FamilyFit("gdpp", hps, mses)


# --------------------------------------------------------------------------- the table
@dataclass
class FitProblem:
    """What a family is fitted to: one fit batch and the per-layer predictions to match.

    ctx_x (B, N, d), ctx_y (B, N), qry_x (B, Q, d); target (L', B, Q) float64, row j the prediction of model
    layer ``layers[j]``; ``fits`` holds the fits of families earlier in the table (GD++ starts from GD's grid).
    """

    ctx_x: torch.Tensor
    ctx_y: torch.Tensor
    qry_x: torch.Tensor
    target: torch.Tensor
    layers: list[int]
    max_gd_steps: int = 64
    max_newton_iters: int = 24
    fits: dict[str, FamilyFit] = field(default_factory=dict)


@dataclass(frozen=True)
class Family:
    """One algorithm family: its name, how to fit it, how to build its learner, which hyper-parameters it reports."""

    name: str
    summary: str
    fit: Callable[[FitProblem], FamilyFit]
    build: Callable[[dict], Callable]
    reports: tuple[str, ...]


def _fit_gd(p: FitProblem) -> FamilyFit:
    return fit_gd(p.ctx_x, p.ctx_y, p.qry_x, p.target, max_steps=p.max_gd_steps)


def _fit_gdpp(p: FitProblem) -> FamilyFit:
    """GD++ with layer+1 steps per layer, started from the best lr of plain GD with that many steps."""
    gd = p.fits.get("gd") or _fit_gd(p)
    init = []
    for j, layer in enumerate(p.layers):
        mse = [float(sq_diff(gd_predictions(p.ctx_x, p.ctx_y, p.qry_x, layer + 1, float(lr))[-1:],
                             p.target[j : j + 1])[0, 0]) for lr in gd.scan["lrs"]]
        init.append(gd.scan["lrs"][int(torch.tensor(mse).argmin())])
    return fit_gdpp(p.ctx_x, p.ctx_y, p.qry_x, p.target, [layer + 1 for layer in p.layers], init)


FAMILY_TABLE: dict[str, Family] = {f.name: f for f in (  # in order of simplicity: ties go to the earlier one
    Family("ols", "min-norm least squares", lambda p: fit_ols(p.ctx_x, p.ctx_y, p.qry_x, p.target),
           lambda hp: algorithms.OLS(), ()),
    Family("gd", "GD(steps, lr) from w = 0", _fit_gd,
           lambda hp: algorithms.GD(steps=hp["steps"], lr=hp["lr"]), ("steps", "lr")),
    Family("ridge", "Ridge(lam)", lambda p: fit_ridge(p.ctx_x, p.ctx_y, p.qry_x, p.target),
           lambda hp: algorithms.Ridge(lam=hp["lam"]), ("lam",)),
    Family("newton", "Iterative Newton(iterations)",
           lambda p: fit_newton(p.ctx_x, p.ctx_y, p.qry_x, p.target, max_iters=p.max_newton_iters),
           lambda hp: algorithms.IterativeNewton(steps=hp["iterations"]), ("iterations",)),
    Family("gdpp", "GD++ with per-step (lr, gamma)", _fit_gdpp,
           lambda hp: algorithms.GDPlusPlus(steps=hp["steps"], lr=hp["lr"], gamma=hp["gamma"]),
           ("steps", "lr", "gamma")),
)}
FAMILIES = tuple(FAMILY_TABLE)


def build_learner(family: str, hparams: dict, d: int | None = None) -> Callable:
    """The reference learner of a fitted family (a Learner: (B,N,d), (B,N), (B,Q,d) -> (B,Q)); ``d`` is unused."""
    if family not in FAMILY_TABLE:
        raise ConfigError(f"algorithm family must be one of {list(FAMILIES)}, got {family!r}")
    return FAMILY_TABLE[family].build(hparams)
