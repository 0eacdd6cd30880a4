"""Which algorithm does each layer run? Per-layer matching of a learner against reference algorithms.

For a learner with ``forward_layers(ctx_x, ctx_y, qry_x) -> (L, B, Q)`` (the prediction read out after
every layer; plain learners count as one layer), :func:`identify` finds, per layer and per algorithm
family, the hyper-parameters that make the algorithm's predictions closest (mean squared difference) to
the layer's predictions on a *fit* batch, then reports the match on a disjoint *eval* batch:

* ``gd``: GD(steps=k, lr) from w = 0 (DESIGN convention L(w) = (1/2N) sum (w^T x - y)^2). All k <= max_gd_steps
  come from one ``GD.trajectory`` per lr of a log grid; the best lr is then refined by golden-section search.
* ``gdpp``: GD++ (von Oswald et al. Sec. 4) with k = layer + 1 steps, each step with its own lr and curvature
  coefficient gamma (x <- (I - gamma Sigma_hat) x), fitted by L-BFGS from the best GD lr (gamma = 0).
* ``newton``: Iterative Newton (Fu et al. 2310.17086), iterations k <= max_newton_iters, via one trajectory.
* ``ridge``: Ridge(lam) (sum-normalised lam), log grid then golden-section refinement in log lam.
* ``ols``: min-norm least squares (no hyper-parameter).

Reported per match: ``pred_diff`` and ``sens_cos`` (``mesaopt.analysis.metrics``), ``err_cos`` (cosine
similarity of the error vectors pred - y over the batch, Fu et al.'s "similarity of errors") and ``mse``
(the mean squared prediction difference that is minimised). The best family of a layer has the lowest
``mse``; a simpler family (order of ``FAMILIES``) wins when it is within ``tie_tol`` (relative, plus 1e-6 of
the mean squared layer prediction) of the best.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import optimize

from mesaopt.errors import ConfigError, ShapeError
from mesaopt.learner import check_learner_inputs

__all__ = ["FAMILIES", "READOUTS", "IdentifyResult", "LayerReadout", "compare", "gd_predictions", "gdpp_predictions",
           "identify", "layer_predictions", "newton_predictions", "sq_diff", "err_cos", "fit_gd", "fit_gdpp",
           "fit_newton", "fit_ridge", "build_learner", "CompareResult"]

FAMILIES = ("ols", "gd", "ridge", "newton", "gdpp")  # in order of simplicity: ties go to the earlier one
READOUTS = ("model", "probe")  # per-layer prediction: the model's forward_layers, or linear probes to y

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


# --------------------------------------------------------------------------- layer read-outs
def layer_predictions(model: Callable, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> torch.Tensor:
    """Predictions after every layer (L, B, Q) via ``forward_layers``; a plain learner gives (1, B, Q)."""
    fl = getattr(model, "forward_layers", None)
    with torch.no_grad():
        out = fl(ctx_x, ctx_y, qry_x) if callable(fl) else model(ctx_x, ctx_y, qry_x).unsqueeze(0)
    if out.dim() != 3 or out.shape[1:] != qry_x.shape[:2]:
        raise ShapeError(f"forward_layers must return (L, B, Q) = (L, {qry_x.shape[0]}, {qry_x.shape[1]}), "
                         f"got {tuple(out.shape)}")
    return out


class LayerReadout:
    """Learner 'read out after layer ``layer``' of a model with ``forward_layers``: (B,N,d),(B,N),(B,Q,d) -> (B,Q)."""

    def __init__(self, model: Callable, layer: int) -> None:
        self.model, self.layer = model, layer
        self.name = f"layer{layer}"

    def __call__(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> torch.Tensor:
        fl = getattr(self.model, "forward_layers", None)
        if not callable(fl):
            return self.model(ctx_x, ctx_y, qry_x)
        return fl(ctx_x, ctx_y, qry_x)[self.layer]


# --------------------------------------------------------------------------- batched candidate predictions
def _f64(*ts: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(t.to(torch.float64) for t in ts)


def gd_predictions(ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor, steps: int,
                   lr: float) -> torch.Tensor:
    """Predictions of GD after 0..steps steps (one trajectory): -> (steps+1, B, Q), float64."""
    from mesaopt.algorithms import GD

    cx, cy, qx = _f64(ctx_x, ctx_y, qry_x)
    traj = GD(steps=steps, lr=lr).trajectory(cx, cy).to(torch.float64)  # (B, steps+1, d)
    return torch.einsum("bsd,bqd->sbq", traj, qx)


def newton_predictions(ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor, iters: int) -> torch.Tensor:
    """Predictions of Iterative Newton after 0..iters iterations: -> (iters+1, B, Q), float64."""
    from mesaopt.algorithms import IterativeNewton

    cx, cy, qx = _f64(ctx_x, ctx_y, qry_x)
    traj = IterativeNewton(steps=iters).trajectory(cx, cy).to(torch.float64)  # (B, iters+1, d)
    return torch.einsum("bsd,bqd->sbq", traj, qx)


def gdpp_predictions(ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor, lrs: torch.Tensor,
                     gammas: torch.Tensor) -> torch.Tensor:
    """GD++ predictions after 0..K steps (differentiable in lrs (K,), gammas (K,)): -> (K+1, B, Q).

    Step k (von Oswald et al. Sec. 4, the LSA construction ``constructions.gd_plus_plus``): with the current
    inputs x (context and query) and residuals r_i = y_i - yhat(x_i), g = (1/N) sum_i r_i x_i; the prediction
    at every token grows by lr_k g^T x_j, then every input is transformed x <- (I - gamma_k Sigma_hat) x with
    Sigma_hat = (1/N) sum_i x_i x_i^T of the (pre-update) context inputs.
    """
    check_learner_inputs(ctx_x, ctx_y, qry_x)
    if lrs.shape != gammas.shape or lrs.dim() != 1:
        raise ShapeError(f"lrs and gammas must both be (K,), got {tuple(lrs.shape)} and {tuple(gammas.shape)}")
    n = max(ctx_x.shape[1], 1)
    x, r, xq = ctx_x, ctx_y, qry_x
    pred = qry_x.new_zeros(qry_x.shape[:2]).to(lrs.dtype)
    out = [pred]
    for k in range(lrs.shape[0]):
        g = torch.einsum("bn,bnd->bd", r, x) / n
        r = r - lrs[k] * torch.einsum("bnd,bd->bn", x, g)
        pred = pred + lrs[k] * torch.einsum("bqd,bd->bq", xq, g)
        out.append(pred)
        if k + 1 < lrs.shape[0]:
            sig = x.transpose(1, 2) @ x / n
            x, xq = x - gammas[k] * (x @ sig), xq - gammas[k] * (xq @ sig)
    return torch.stack(out)


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


def _golden(f: Callable[[float], float], lo: float, hi: float, iters: int) -> tuple[float, float]:
    """Minimise a unimodal ``f`` on [lo, hi] by golden-section search: -> (argmin, min)."""
    a, b = lo, hi
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(iters):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = f(d)
    return (c, fc) if fc <= fd else (d, fd)


def _mean_eig_scale(ctx_x: torch.Tensor) -> float:
    """Mean eigenvalue of Sigma_hat = X^T X / N over the batch (the natural inverse lr scale)."""
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
    """Best (steps, lr) of GD per layer of ``target`` (L, B, Q); scan holds the (steps+1, L) mse at each layer's lr."""
    scale = 1.0 / max(_mean_eig_scale(ctx_x), 1e-12)
    lrs = scale * torch.logspace(-3, math.log10(3.0), n_lr, dtype=torch.float64)
    diffs = torch.stack([sq_diff(gd_predictions(ctx_x, ctx_y, qry_x, max_steps, float(lr)), target)
                         for lr in lrs])  # (n_lr, S+1, L)
    diffs[:, 0, :] = math.inf  # zero steps is the zero predictor, not a GD match
    n_layers = target.shape[0]
    hps, mses, per_step = [], [], []
    for layer in range(n_layers):
        per_k, per_k_lr = diffs[:, :, layer].min(dim=0)  # (S+1,): best grid mse and lr index of every k
        tl = target[layer : layer + 1]
        best_hp, best = {"steps": 1, "lr": float(lrs[0])}, math.inf
        # refine the lr of the most promising step counts (grid ties between k and lr are common)
        for k in torch.argsort(per_k)[:n_refine].tolist():
            if not math.isfinite(float(per_k[k])):
                continue
            i = int(per_k_lr[k])
            lo, hi = float(lrs[max(i - 1, 0)]), float(lrs[min(i + 1, n_lr - 1)])

            def f(log_lr: float, k: int = k, tl: torch.Tensor = tl) -> float:
                p = gd_predictions(ctx_x, ctx_y, qry_x, k, math.exp(log_lr))[-1:]
                return float(sq_diff(p, tl)[0, 0])

            log_lr, m = _golden(f, math.log(lo), math.log(hi), refine_iters)
            if m > float(per_k[k]):
                log_lr, m = math.log(float(lrs[i])), float(per_k[k])
            if m < best:
                best_hp, best = {"steps": int(k), "lr": math.exp(log_lr)}, m
        hps.append(best_hp)
        mses.append(best)
        per_step.append(per_k.tolist())  # best grid mse over lrs for each k
    return FamilyFit("gd", hps, mses, {"lrs": lrs.tolist(), "min_mse_per_steps": per_step})


def fit_newton(ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor, target: torch.Tensor,
               max_iters: int = 24) -> FamilyFit:
    """Best number of Iterative Newton iterations per layer; scan holds the (iters+1) mse curve per layer."""
    d = sq_diff(newton_predictions(ctx_x, ctx_y, qry_x, max_iters), target)  # (S+1, L)
    hps, mses = [], []
    for layer in range(target.shape[0]):
        k = int(torch.argmin(d[:, layer]))
        hps.append({"iterations": k})
        mses.append(float(d[k, layer]))
    return FamilyFit("newton", hps, mses, {"mse_per_iter": d.T.tolist()})


def _ridge_preds(ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor, lam: float) -> torch.Tensor:
    from mesaopt.algorithms import Ridge

    cx, cy, qx = _f64(ctx_x, ctx_y, qry_x)
    return Ridge(lam=lam)(cx, cy, qx).unsqueeze(0)


def fit_ridge(ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor, target: torch.Tensor,
              n_lam: int = 31, refine_iters: int = 25) -> FamilyFit:
    """Best ridge lam per layer: log grid (relative to the mean diagonal of X^T X) then golden refinement."""
    scale = _mean_eig_scale(ctx_x) * ctx_x.shape[1]
    lams = scale * torch.logspace(-5, 2, n_lam, dtype=torch.float64)
    diffs = torch.cat([sq_diff(_ridge_preds(ctx_x, ctx_y, qry_x, float(lam)), target) for lam in lams])  # (n, L)
    hps, mses = [], []
    for layer in range(target.shape[0]):
        i = int(torch.argmin(diffs[:, layer]))
        tl = target[layer : layer + 1]

        def f(log_lam: float, tl: torch.Tensor = tl) -> float:
            return float(sq_diff(_ridge_preds(ctx_x, ctx_y, qry_x, math.exp(log_lam)), tl)[0, 0])

        lo, hi = float(lams[max(i - 1, 0)]), float(lams[min(i + 1, n_lam - 1)])
        log_lam, best = _golden(f, math.log(lo), math.log(hi), refine_iters)
        if best > float(diffs[i, layer]):
            log_lam, best = math.log(float(lams[i])), float(diffs[i, layer])
        hps.append({"lam": math.exp(log_lam)})
        mses.append(best)
    return FamilyFit("ridge", hps, mses, {"lams": lams.tolist()})


def fit_ols(ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor, target: torch.Tensor) -> FamilyFit:
    """OLS has no hyper-parameter: its mse to every layer."""
    from mesaopt.algorithms import OLS

    cx, cy, qx = _f64(ctx_x, ctx_y, qry_x)
    d = sq_diff(OLS()(cx, cy, qx).unsqueeze(0), target)[0]
    return FamilyFit("ols", [{} for _ in range(target.shape[0])], d.tolist())


def fit_gdpp(ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor, target: torch.Tensor,
             steps: Sequence[int], init_lr: Sequence[float], max_iter: int = 200,
             starts: Sequence[tuple[float, float]] = ((1.0, 0.0), (1.0, 1.0), (2.0, 1.0))) -> FamilyFit:
    """GD++, steps[j] steps fitted to row j of target (L,B,Q): per-step (lr, gamma) by L-BFGS from (init_lr[j], 0)."""
    cx, cy, qx = _f64(ctx_x, ctx_y, qry_x)
    if len(steps) != target.shape[0] or len(init_lr) != target.shape[0]:
        raise ShapeError(f"steps and init_lr need one entry per target row ({target.shape[0]})")
    hps, mses = [], []
    for j in range(target.shape[0]):
        k = int(steps[j])
        tl = target[j].detach().to(torch.float64)
        lr0 = float(init_lr[j])
        scale = lr0 if lr0 > 0 else 1.0
        gscale = scale  # gamma is measured in units of the lr scale (both multiply Sigma_hat)

        def loss_grad(u: np.ndarray, k: int = k, tl: torch.Tensor = tl, scale: float = scale,
                      gscale: float = gscale) -> tuple[float, np.ndarray]:
            params = torch.tensor(u, dtype=torch.float64, requires_grad=True)
            with torch.enable_grad():
                p = gdpp_predictions(cx, cy, qx, params[:k] * scale, params[k:] * gscale)[-1]
                loss = ((p - tl) ** 2).mean()
                if not torch.isfinite(loss):
                    return 1e30, np.zeros_like(u)
                (g,) = torch.autograd.grad(loss, params)
            return float(loss.detach()), g.numpy().copy()

        lrs0, gammas0 = torch.full((k,), lr0, dtype=torch.float64), torch.zeros(k, dtype=torch.float64)
        with torch.no_grad():
            m0 = float(((gdpp_predictions(cx, cy, qx, lrs0, gammas0)[-1] - tl) ** 2).mean())
        lrs, gammas, m = lrs0, gammas0, m0  # never worse than its GD start
        good = 1e-12 * float((tl**2).mean())
        for lr_mult, g_mult in starts:  # a few starts: the landscape in gamma has local minima
            if m <= good:
                break
            res = optimize.minimize(loss_grad, np.array([lr_mult] * k + [g_mult] * k), jac=True, method="L-BFGS-B",
                                    options={"maxiter": max_iter, "ftol": 1e-15, "gtol": 1e-12})
            u = torch.as_tensor(res.x, dtype=torch.float64)
            with torch.no_grad():
                mu = float(((gdpp_predictions(cx, cy, qx, u[:k] * scale, u[k:] * gscale)[-1] - tl) ** 2).mean())
            if math.isfinite(mu) and mu < m:
                lrs, gammas, m = u[:k] * scale, u[k:] * gscale, mu
        gammas = gammas.clone()
        gammas[-1] = 0.0  # the last step's input transform reaches no prediction
        hps.append({"steps": k, "lr": [float(v) for v in lrs], "gamma": [float(v) for v in gammas]})
        mses.append(m)
    return FamilyFit("gdpp", hps, mses)


def build_learner(family: str, hparams: dict, d: int) -> Callable:
    """The reference learner of a fitted family (float32 in, float32 out): a Learner."""
    from mesaopt import algorithms

    if family == "gd":
        return algorithms.GD(steps=hparams["steps"], lr=hparams["lr"])
    if family == "newton":
        return algorithms.IterativeNewton(steps=hparams["iterations"])
    if family == "ridge":
        return algorithms.Ridge(lam=hparams["lam"])
    if family == "ols":
        return algorithms.OLS()
    if family == "gdpp":
        return _GDPP(hparams["lr"], hparams["gamma"])
    raise ConfigError(f"algorithm family must be one of {list(FAMILIES)}, got {family!r}")


class _GDPP:
    """GD++ with per-step lrs and gammas as a Learner (see ``gdpp_predictions``)."""

    def __init__(self, lrs: Sequence[float], gammas: Sequence[float]) -> None:
        self.lrs = torch.tensor(list(lrs), dtype=torch.float64)
        self.gammas = torch.tensor(list(gammas), dtype=torch.float64)
        self.name = "gdpp"

    def __call__(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> torch.Tensor:
        cx, cy, qx = _f64(ctx_x, ctx_y, qry_x)
        return gdpp_predictions(cx, cy, qx, self.lrs, self.gammas)[-1].to(qry_x.dtype)


# --------------------------------------------------------------------------- the result table
@dataclass
class IdentifyResult:
    """Rows (one per layer x family): layer, algorithm, hparams, mse, pred_diff, sens_cos, err_cos, best."""

    rows: list[dict]
    meta: dict = field(default_factory=dict)
    scans: dict = field(default_factory=dict)

    def best(self) -> list[dict]:
        """The best-matching row of every layer, in layer order."""
        return [r for r in self.rows if r["best"]]

    def to_dict(self) -> dict:
        """JSON-able dict: {"meta", "best", "rows"}."""
        return {"meta": self.meta, "best": self.best(), "rows": self.rows}

    def to_json(self) -> str:
        """The result as a JSON string."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)


def format_hparams(h: dict) -> str:
    """Short human string of a hyper-parameter dict (lists abbreviated to their mean)."""
    parts = []
    for k, v in h.items():
        if isinstance(v, list):
            parts.append(f"{k}=[{', '.join(f'{x:.3g}' for x in v[:4])}{', ...' if len(v) > 4 else ''}]")
        elif isinstance(v, float):
            parts.append(f"{k}={v:.4g}")
        else:
            parts.append(f"{k}={v}")
    return " ".join(parts) or "-"


def _check_families(families: Sequence[str]) -> list[str]:
    fams = list(families)
    bad = [f for f in fams if f not in FAMILIES]
    if bad or not fams:
        raise ConfigError(f"families must be a non-empty subset of {list(FAMILIES)}, got {fams}")
    return [f for f in FAMILIES if f in fams]


def _batches(task: Any, n_context: int, batch_size: int, n_queries: int, seed: int, device: str,
             dtype: torch.dtype) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    from mesaopt.seeding import generator

    if n_context < 1 or batch_size < 2 or n_queries < 1:
        raise ConfigError(f"need n_context >= 1, batch_size >= 2, n_queries >= 1; got {n_context}, {batch_size}, "
                          f"{n_queries}")
    out = []
    for name in ("identify-fit", "identify-eval"):
        b = task.sample(batch_size, n_context + n_queries, generator(seed, name), dtype=dtype)
        out.append(tuple(t.to(device) for t in b.split(n_context)))
    return out[0], out[1]


def _model_dtype(model: Any) -> torch.dtype:
    try:
        return next(model.parameters()).dtype
    except (AttributeError, StopIteration):
        return torch.float32


def _match_metrics(model: Callable, layer: int, family: str, hp: dict, ev: tuple[torch.Tensor, ...],
                   target: torch.Tensor) -> dict:
    from mesaopt.analysis import metrics

    cx, cy, qx, qy = ev
    alg = build_learner(family, hp, cx.shape[-1])
    with torch.no_grad():
        pa = alg(cx, cy, qx).to(target.dtype)
    return {"mse": float(((pa.double() - target.double()) ** 2).mean()),
            "pred_diff": float(metrics.pred_diff(target, pa)),
            "sens_cos": float(metrics.sens_cos(LayerReadout(model, layer), alg, cx, cy, qx)),
            "err_cos": err_cos(target, pa, qy)}


def identify(model: Callable, task: Any, n_context: int, families: Sequence[str] = FAMILIES,
             batch_size: int = 1024, n_queries: int = 1, seed: int = 0, max_gd_steps: int = 64,
             max_newton_iters: int = 24, tie_tol: float = 0.05, layers: Sequence[int] | None = None,
             device: str = "cpu", progress: Callable[[str], None] | None = None, readout: str = "model",
             probe_batch_size: int = 4096) -> IdentifyResult:
    """Per layer of ``model`` (``forward_layers``), the best-matching algorithm + fitted hyper-parameters on ``task``.

    Hyper-parameters are fitted on one batch of ``batch_size`` tasks (``n_context`` examples, ``n_queries``
    queries each); the reported metrics come from a second, disjoint batch. ``readout``: ``model`` = the
    model's own ``forward_layers``; ``probe`` = a ridge probe per layer from the query hidden state to y,
    fitted on a third batch of ``probe_batch_size`` sequences (``probes.fit_readout``; GPT). Returns an
    ``IdentifyResult``.
    """
    fams = _check_families(families)
    if readout not in READOUTS:
        raise ConfigError(f"readout must be one of {list(READOUTS)}, got {readout!r}")
    if readout == "probe":
        from mesaopt.analysis import probes

        (progress or (lambda s: None))("fitting per-layer probes")
        model = probes.fit_readout(model, task, n_context, batch_size=probe_batch_size, seed=seed)
    dtype = _model_dtype(model)
    fit, ev = _batches(task, n_context, batch_size, n_queries, seed, device, dtype)
    cx, cy, qx, _ = fit
    target_all = layer_predictions(model, cx, cy, qx)
    eval_all = layer_predictions(model, *ev[:3])
    n_layers = target_all.shape[0]
    sel = list(range(n_layers)) if layers is None else [int(i) % n_layers for i in layers]
    target = target_all[sel].to(torch.float64)
    say = progress or (lambda s: None)
    fits: dict[str, FamilyFit] = {}
    for fam in fams:
        say(f"fitting {fam}")
        if fam == "gd":
            fits[fam] = fit_gd(cx, cy, qx, target, max_steps=max_gd_steps)
        elif fam == "newton":
            fits[fam] = fit_newton(cx, cy, qx, target, max_iters=max_newton_iters)
        elif fam == "ridge":
            fits[fam] = fit_ridge(cx, cy, qx, target)
        elif fam == "ols":
            fits[fam] = fit_ols(cx, cy, qx, target)
        elif fam == "gdpp":
            gd = fits.get("gd") or fit_gd(cx, cy, qx, target, max_steps=max_gd_steps)
            # GD++ takes layer+1 steps; start from the best lr of plain GD with that many steps
            init = []
            for j, layer in enumerate(sel):
                k = layer + 1
                p = [float(sq_diff(gd_predictions(cx, cy, qx, k, float(lr))[-1:], target[j : j + 1])[0, 0])
                     for lr in gd.scan["lrs"]]
                init.append(gd.scan["lrs"][int(torch.tensor(p).argmin())])
            fits[fam] = fit_gdpp(cx, cy, qx, target, [layer + 1 for layer in sel], init)
    rows = []
    for j, layer in enumerate(sel):
        layer_rows = []
        for fam in fams:
            hp = fits[fam].hparams[j]
            row = {"layer": layer, "algorithm": fam, "hparams": hp, "fit_mse": fits[fam].mse[j]}
            row.update(_match_metrics(model, layer, fam, hp, ev, eval_all[layer]))
            row["best"] = False
            layer_rows.append(row)
        best = min(layer_rows, key=lambda r: r["mse"])
        atol = 1e-6 * float((eval_all[layer].double() ** 2).mean())  # float32-level agreement counts as exact
        for r in layer_rows:  # simplest family within tie_tol of the best
            if r["mse"] <= best["mse"] * (1.0 + tie_tol) + atol:
                r["best"] = True
                break
        rows.extend(layer_rows)
    meta = {"n_layers": n_layers, "layers": sel, "families": fams, "n_context": n_context,
            "batch_size": batch_size, "n_queries": n_queries, "seed": seed, "max_gd_steps": max_gd_steps,
            "max_newton_iters": max_newton_iters, "tie_tol": tie_tol, "readout": readout,
            "model_mse_to_y": [float(((eval_all[i].double() - ev[3].double()) ** 2).mean()) for i in sel]}
    scans = {k: v.scan for k, v in fits.items() if v.scan}
    return IdentifyResult(rows, meta, scans)


# --------------------------------------------------------------------------- compare
@dataclass
class CompareResult:
    """Rows (one per algorithm): algorithm, hparams, loss, mse, pred_diff, sens_cos, err_cos; plus the model's loss."""

    rows: list[dict]
    meta: dict

    def to_dict(self) -> dict:
        """JSON-able dict: {"meta", "rows"}."""
        return {"meta": self.meta, "rows": self.rows}

    def to_json(self) -> str:
        """The result as a JSON string."""
        return json.dumps(self.to_dict(), indent=2)


def compare(model: Callable, task: Any, n_context: int, algorithms: Sequence[str] = ("gd", "ridge", "newton"),
            batch_size: int = 1024, n_queries: int = 1, seed: int = 0, max_gd_steps: int = 64,
            max_newton_iters: int = 24, device: str = "cpu") -> CompareResult:
    """Pairwise metrics between ``model``'s final prediction and each algorithm.

    Families of ``FAMILIES`` get their hyper-parameters fitted to the model's final layer (as in ``identify``);
    any other name is an ``mesaopt.algorithms`` kind built with its default hyper-parameters. Losses are MSE.
    """
    from mesaopt import algorithms as algs
    from mesaopt.analysis import metrics

    names = [a.strip() for a in algorithms if a.strip()]
    if not names:
        raise ConfigError("algorithms must name at least one algorithm, e.g. gd,ridge,newton")
    dtype = _model_dtype(model)
    _, ev = _batches(task, n_context, batch_size, n_queries, seed, device, dtype)
    n_layers = layer_predictions(model, *ev[:3]).shape[0]
    cx, cy, qx, qy = ev
    with torch.no_grad():
        pm = model(cx, cy, qx)
    rows = []
    for name in names:
        if name in FAMILIES:
            res = identify(model, task, n_context, families=[name], batch_size=batch_size, n_queries=n_queries,
                           seed=seed, max_gd_steps=max_gd_steps, max_newton_iters=max_newton_iters,
                           layers=[n_layers - 1], device=device)
            hp = res.rows[0]["hparams"]
            alg = build_learner(name, hp, cx.shape[-1])
        else:
            try:
                alg = algs.build({"kind": name})
            except ConfigError as e:
                raise ConfigError(f"--algorithms: {e}; fitted families are {list(FAMILIES)}") from None
            hp = alg.hparams() if hasattr(alg, "hparams") else {}
        with torch.no_grad():
            pa = alg(cx, cy, qx).to(pm.dtype)
        rows.append({"algorithm": name, "hparams": hp, "loss": float(((pa.double() - qy.double()) ** 2).mean()),
                     "mse": float(((pa.double() - pm.double()) ** 2).mean()),
                     "pred_diff": float(metrics.pred_diff(pm, pa)),
                     "sens_cos": float(metrics.sens_cos(model, alg, cx, cy, qx)),
                     "err_cos": err_cos(pm, pa, qy)})
    meta = {"model_loss": float(((pm.double() - qy.double()) ** 2).mean()), "n_context": n_context,
            "batch_size": batch_size, "seed": seed, "loss": "mse"}
    return CompareResult(rows, meta)


# --------------------------------------------------------------------------- checkpoints
def load_run(path: Any, device: str = "cpu") -> tuple[Any, Any, int]:
    """(model, task, n_context) of a run/ckpt folder: the task spec and n_points are read from the checkpoint state."""
    from mesaopt import tasks
    from mesaopt.errors import CheckpointError
    from mesaopt.train.checkpoint import load_model

    model, state = load_model(path, device=device)
    spec = state.get("task")
    if not isinstance(spec, dict):
        raise CheckpointError(f"checkpoint '{state.get('path', path)}' stores no task spec; identify/compare need one")
    try:
        task = tasks.build(spec)
    except (ConfigError, TypeError, ValueError) as e:
        raise CheckpointError(f"cannot rebuild the task from the checkpoint spec: {' '.join(str(e).split())}") from None
    train = state.get("train") if isinstance(state.get("train"), dict) else {}
    n_points = train.get("n_points")
    points = (train.get("curriculum") or {}).get("points") if isinstance(train.get("curriculum"), dict) else None
    if isinstance(points, dict) and isinstance(points.get("end"), int):
        n_points = points["end"]  # a points curriculum ends at this sequence length
    if not isinstance(n_points, int) or n_points < 2:
        raise CheckpointError(f"checkpoint train config has no usable n_points (got {n_points!r})")
    return model, task, n_points - 1


def plot_compare(res: CompareResult, path: Any) -> list:
    """Bar charts of the loss, pred_diff and sens_cos of every compared algorithm; saves PNG + PDF at ``path``."""
    from pathlib import Path

    from mesaopt import plotting

    plotting.paper_style()
    import matplotlib.pyplot as plt

    names = [r["algorithm"] for r in res.rows]
    colors = [plotting.PALETTE.get(n, "#444444") for n in names]
    fig, axes = plt.subplots(1, 3, figsize=(9.0, 2.8))
    axes[0].bar(names, [r["loss"] for r in res.rows], color=colors)
    axes[0].axhline(res.meta["model_loss"], color=plotting.PALETTE["model"], ls="--", label="model")
    axes[0].set_ylabel("loss (MSE)")
    axes[0].legend()
    axes[1].bar(names, [r["pred_diff"] for r in res.rows], color=colors)
    axes[1].set_ylabel("pred_diff to model")
    axes[2].bar(names, [r["sens_cos"] for r in res.rows], color=colors)
    axes[2].set_ylabel("sens_cos with model")
    axes[2].set_ylim(min(0.0, min(r["sens_cos"] for r in res.rows)), 1.02)
    fig.tight_layout()
    stem = Path(path)
    return plotting.save_figure(fig, stem.with_suffix("") if stem.suffix.lower() in (".png", ".pdf") else stem)
