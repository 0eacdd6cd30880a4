"""Gradient-descent learners on L(w) = (1/2N) sum_i (w^T x_i - y_i)^2 from w = 0.

* ``GD(steps, lr)``: w_{k+1} = w_k - (lr/N) X^T (X w_k - y), so one step is w_1 = (lr/N) X^T y.
  ``lr="optimal"`` must be fitted with ``GD.fit_lr(task, steps, n_context, generator)``.
* ``PreconditionedGD(steps, lr, precond)``: w_{k+1} = w_k - lr * P (1/N) X^T (X w_k - y).
* ``GDPlusPlus(steps, lr, gamma)``: von Oswald et al. (arXiv 2212.07677, Sec. 4) "GD++": every layer does
  the GD step on the current inputs and, simultaneously, transforms every input (context and query)
  x <- (I - gamma * S_k) x with S_k = (1/N) X_k^T X_k (the current inputs' second moment; our gamma is
  N times the paper's gamma, which multiplies the unnormalised sum over x_i x_i^T). See ``GDPlusPlus``.

Prefix predictions run all B*T zero-padded prefix problems at once (chunked over the batch):
O(B * T^2 * d * steps) time.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from scipy import optimize

from mesaopt.algorithms.base import (
    LinearAlgorithm,
    as_matrix,
    check_fit_inputs,
    check_int,
    full_counts,
    register,
)
from mesaopt.errors import ConfigError, ShapeError


def _bmv(a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Batched matrix-vector product (B, m, n) x (B, n) -> (B, m)."""
    return (a @ v.unsqueeze(-1)).squeeze(-1)


def gd_trajectory(x: torch.Tensor, y: torch.Tensor, n: torch.Tensor, steps: int, lr: float,
                  precond: torch.Tensor | None = None) -> torch.Tensor:
    """GD iterates from w = 0 on zero-padded contexts: x (B,N,d), y (B,N), counts n (B,) -> (B, steps+1, d)."""
    b, _, d = x.shape
    inv_n = (1.0 / n.clamp_min(1.0)).unsqueeze(-1)
    xt = x.transpose(1, 2)
    w = x.new_zeros(b, d)
    traj = [w]
    for _ in range(steps):
        grad = _bmv(xt, _bmv(x, w) - y) * inv_n
        if precond is not None:
            grad = grad @ precond.T
        w = w - lr * grad
        traj.append(w)
    return torch.stack(traj, dim=1)


def _per_step(name: str, value: float | torch.Tensor, steps: int) -> list:
    """One value per step: a float repeated, or the entries of a (steps,) tensor (kept as 0-d tensors for autograd)."""
    if isinstance(value, torch.Tensor) and value.dim() > 0:
        if value.shape != (steps,):
            raise ShapeError(f"{name} must be a number or a ({steps},) tensor, got shape {tuple(value.shape)}")
        return list(value.unbind(0))
    return [value] * steps


def gdpp_trajectory(x: torch.Tensor, y: torch.Tensor, n: torch.Tensor, steps: int, lr: float | torch.Tensor,
                    gamma: float | torch.Tensor) -> torch.Tensor:
    """GD++ effective weights after 0..steps layers, in the original x coordinates -> (B, steps+1, d).

    The one implementation of GD++ (``GDPlusPlus``, ``analysis.families.gdpp_predictions`` and the fits of
    ``vonoswald-deep`` call it). x (B, N, d) zero-padded contexts, y (B, N), counts n (B,); ``lr`` and ``gamma``
    are numbers or per-step (steps,) tensors (differentiable: autograd flows into them).
    Layer k (all from the layer's input, as one attention layer): delta_k = (lr_k/n) X_k^T r_k,
    r_{k+1} = r_k - X_k delta_k (residual targets, r_0 = y), x <- T_k x with T_k = I - gamma_k X_k^T X_k / n for
    every context and query input. The query prediction after K layers is sum_k (A_k x_q)^T delta_k with
    A_k = T_{k-1} ... T_0, i.e. x_q^T w_K with w_K = sum_k A_k^T delta_k (returned).
    """
    lrs, gammas = _per_step("lr", lr, steps), _per_step("gamma", gamma, steps)
    b, _, d = x.shape
    inv_n = (1.0 / n.clamp_min(1.0))[:, None, None]
    eye = torch.eye(d, dtype=x.dtype, device=x.device)
    a = eye.expand(b, d, d).clone()  # A_k: current inputs are x A_k^T
    xk, r = x, y
    w = x.new_zeros(b, d)
    traj = [w]
    for k in range(steps):
        xkt = xk.transpose(1, 2)
        delta = _bmv(xkt, r) * inv_n[:, :, 0] * lrs[k]
        w = w + _bmv(a.transpose(1, 2), delta)
        traj.append(w)
        if k + 1 < steps:  # the last layer's input transform reaches no prediction
            r = r - _bmv(xk, delta)
            t = eye - gammas[k] * (xkt @ xk) * inv_n
            xk = xk @ t.transpose(1, 2)
            a = t @ a
    return torch.stack(traj, dim=1)


def _check_lr(value: Any, allow_optimal: bool) -> float | str:
    if allow_optimal and value == "optimal":
        return "optimal"
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value)):
        return float(value)
    allowed = "a finite number or 'optimal'" if allow_optimal else "a finite number"
    raise ConfigError(f"lr must be {allowed}, got {value!r}")


def _check_gamma(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value)):
        return float(value)
    raise ConfigError(f"gamma must be a finite number, got {value!r}")


def _check_per_step(name: str, value: Any, steps: int) -> float | list[float]:
    """A finite number, or a list of ``steps`` finite numbers (one per GD++ layer)."""
    if isinstance(value, (list, tuple)) or (isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 1):
        vals = [float(v) for v in value]
        if len(vals) != steps or not all(math.isfinite(v) for v in vals):
            raise ConfigError(f"{name} must be a finite number or {steps} finite numbers (one per step), got {value!r}")
        return vals
    return _check_lr(value, allow_optimal=False) if name == "lr" else _check_gamma(value)


class IterativeLinear(LinearAlgorithm):
    """A linear learner defined by iterates w_0..w_steps; ``trajectory`` returns all of them."""

    steps: int

    def trajectory(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor) -> torch.Tensor:
        """ctx_x (B, N, d), ctx_y (B, N) -> iterates (B, steps+1, d) (w_0 first, the fitted w last)."""
        check_fit_inputs(ctx_x, ctx_y)
        self._check_ready()
        x, y = ctx_x.to(torch.float64), ctx_y.to(torch.float64)
        return self._trajectory_masked(x, y, full_counts(x)).to(ctx_x.dtype)

    def _trajectory_masked(self, x: torch.Tensor, y: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _fit_masked(self, x: torch.Tensor, y: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        return self._trajectory_masked(x, y, n)[:, -1]


# ---------------------------------------------------------------- hyper-parameter fitting helpers
def fit_batch(task, n_context: int, generator: torch.Generator, batch_size: int,
              n_queries: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A float64 batch for hyper-parameter fitting: (B,N,d), (B,N), (B,Q,d), (B,Q)."""
    check_int("n_context", n_context, 1)
    check_int("batch_size", batch_size, 1)
    check_int("n_queries", n_queries, 1)
    batch = task.sample(batch_size, n_context + n_queries, generator=generator, dtype=torch.float64)
    return batch.split(n_context)


def _lr_scale(ctx_x: torch.Tensor) -> float:
    """1 / (mean eigenvalue of X^T X / N): the natural unit of GD learning rates."""
    n, d = ctx_x.shape[1], ctx_x.shape[2]
    mean_eig = float((ctx_x * ctx_x).sum(dim=(1, 2)).mean()) / (n * d)
    return 1.0 / max(mean_eig, 1e-300)


def spectral_coef(lam: torch.Tensor, steps: int, lr: float | torch.Tensor,
                  gamma: float | torch.Tensor) -> torch.Tensor:
    """GD++'s scalar recursion per eigenvalue (see ``SpectralLoss``): lam (...) -> c_K(lam) (...).

    1 - lam * c_K(lam) is the share of the eigen-direction's signal left unlearned after K layers (1 before any).
    """
    lrs, gammas = _per_step("lr", lr, steps), _per_step("gamma", gamma, steps)
    a, e, c = torch.ones_like(lam), torch.ones_like(lam), torch.zeros_like(lam)
    for k in range(steps):
        a2 = a * a
        delta = lrs[k] * a2 * e
        c = c + delta
        e = e - lam * delta
        a = (1.0 - gammas[k] * a2 * lam) * a
    return c


class SpectralLoss:
    """Mean squared query error of GD / GD++ as a cheap function of (lr, gamma), for hyper-parameter fits.

    With S = X^T X / N = U diag(lam) U^T and b = X^T y / N, every GD / GD++ quantity is a polynomial in S
    applied to b, so the prediction after K layers is sum_i (x_q^T u_i)(u_i^T b) c_K(lam_i) with the scalar
    recursion (per eigenvalue): a_0 = 1, e_0 = 1; delta = lr a_k^2 e_k; c += delta; e <- e - lam delta;
    a <- (1 - gamma a^2 lam) a. Each evaluation costs O(B (d K + Q d)). Tests check it against the direct
    iteration.
    """

    def __init__(self, cx: torch.Tensor, cy: torch.Tensor, qx: torch.Tensor, qy: torch.Tensor) -> None:
        n = cx.shape[1]
        s = cx.transpose(1, 2) @ cx / n
        b = _bmv(cx.transpose(1, 2), cy) / n
        self.lam, u = torch.linalg.eigh(s)
        beta = _bmv(u.transpose(1, 2), b)
        self.z = (qx @ u) * beta.unsqueeze(1)  # (B, Q, d)
        self.qy = qy

    def coef(self, steps: int, lr: float | torch.Tensor, gamma: float | torch.Tensor) -> torch.Tensor:
        """c_K(lam) (B, d) after ``steps`` layers; lr / gamma are numbers or per-layer (steps,) tensors."""
        return spectral_coef(self.lam, steps, lr, gamma)

    def mse(self, steps: int, lr: float | torch.Tensor, gamma: float | torch.Tensor = 0.0) -> torch.Tensor:
        """Mean squared query error as a 0-d tensor (differentiable in per-layer (steps,) lr / gamma tensors)."""
        pred = (self.z * self.coef(steps, lr, gamma).unsqueeze(1)).sum(-1)
        return ((pred - self.qy) ** 2).mean()

    def __call__(self, steps: int, lr: float | torch.Tensor, gamma: float | torch.Tensor = 0.0) -> float:
        pred = (self.z * self.coef(steps, lr, gamma).unsqueeze(1)).sum(-1)
        return _safe_loss(pred, self.qy)


def _safe_loss(pred: torch.Tensor, target: torch.Tensor) -> float:
    loss = float(((pred - target) ** 2).mean())
    return loss if math.isfinite(loss) else 1e300


def minimize_1d_log(loss_fn, center: float, lo: float = 1e-3, hi: float = 3.0, n_grid: int = 64) -> float:
    """argmin over lr > 0 of loss_fn(lr): log grid center*[lo, hi], then bounded refinement in log-space."""
    grid = center * np.logspace(math.log10(lo), math.log10(hi), n_grid)
    losses = np.array([loss_fn(float(v)) for v in grid])
    i = int(np.argmin(losses))
    a, b = math.log(grid[max(i - 1, 0)]), math.log(grid[min(i + 1, n_grid - 1)])
    res = optimize.minimize_scalar(lambda u: loss_fn(math.exp(u)), bounds=(a, b), method="bounded",
                                   options={"xatol": 1e-8})
    best = math.exp(res.x) if res.fun <= losses[i] else float(grid[i])
    return float(best)


@register
class GD(IterativeLinear):
    """``steps`` steps of gradient descent with step size ``lr`` on (1/2N) sum (w^T x - y)^2 from w = 0."""

    kind: ClassVar[str] = "gd"

    def __init__(self, steps: int = 1, lr: float | str = 1.0) -> None:
        self.steps = check_int("steps", steps, 0)
        self.lr = _check_lr(lr, allow_optimal=True)

    def hparams(self) -> dict:
        return {"steps": self.steps, "lr": self.lr}

    def _check_ready(self) -> None:
        if self.lr == "optimal":
            raise ConfigError("GD(lr='optimal') is not fitted: use GD.fit_lr(task, steps, n_context, generator)")

    def _trajectory_masked(self, x: torch.Tensor, y: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        return gd_trajectory(x, y, n, self.steps, float(self.lr))

    @classmethod
    def fit_lr(cls, task, steps: int, n_context: int, generator: torch.Generator, batch_size: int = 4096,
               n_queries: int = 4) -> GD:
        """GD(steps, lr*) with lr* minimising the mean squared query error on a batch drawn from ``task``.

        steps = 1: the loss is quadratic in lr, lr* = sum(g y_q) / sum(g^2) with g = x_q^T X^T y / N.
        steps > 1: log grid around 1/mean-eigenvalue of X^T X / N, then bounded Brent refinement, on the
        exact loss evaluated spectrally (``SpectralLoss``).
        """
        steps = check_int("steps", steps, 1)
        cx, cy, qx, qy = fit_batch(task, n_context, generator, batch_size, n_queries)
        if steps == 1:
            g = torch.einsum("bqd,bd->bq", qx, gd_trajectory(cx, cy, full_counts(cx), 1, 1.0)[:, 1])
            lr = float((g * qy).sum() / (g * g).sum().clamp_min(1e-300))
        else:
            loss = SpectralLoss(cx, cy, qx, qy)
            lr = minimize_1d_log(lambda v: loss(steps, v), _lr_scale(cx))
        return cls(steps=steps, lr=lr)


@register
class PreconditionedGD(IterativeLinear):
    """w_{k+1} = w_k - lr * P (1/N) X^T (X w_k - y) from w = 0, with a fixed preconditioner P (d, d)."""

    kind: ClassVar[str] = "preconditioned_gd"

    def __init__(self, steps: int = 1, lr: float = 1.0, precond: Any = None) -> None:
        self.steps = check_int("steps", steps, 0)
        self.lr = _check_lr(lr, allow_optimal=False)
        if precond is None:
            raise ConfigError("precond must be a (d, d) matrix, got None")
        self.precond = as_matrix("precond", precond)
        if self.precond.shape[0] != self.precond.shape[1]:
            raise ConfigError(f"precond must be square (d, d), got {tuple(self.precond.shape)}")

    def hparams(self) -> dict:
        return {"steps": self.steps, "lr": self.lr, "precond": self.precond.tolist()}

    def _trajectory_masked(self, x: torch.Tensor, y: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.precond.shape[0]:
            raise ShapeError(f"precond is {tuple(self.precond.shape)} but inputs have d={x.shape[-1]}")
        return gd_trajectory(x, y, n, self.steps, self.lr, self.precond.to(device=x.device, dtype=x.dtype))


@register
class GDPlusPlus(IterativeLinear):
    """GD++ (von Oswald et al. 2023, Sec. 4): GD with an iterative curvature correction of the inputs.

    Each of the ``steps`` layers computes, from its input, the GD step delta = (lr/N) X^T r on the residual
    targets r (r_0 = y) and moves r <- r - X delta, and at the same time transforms every input, context and
    query, x <- (I - gamma * X^T X / N) x. The paper writes x_j <- x_j - gamma_paper * sum_i x_i x_i^T x_j,
    so ``gamma = N * gamma_paper``. gamma = 0 is exactly GD. ``fit``/``trajectory`` return the equivalent
    weights in the original coordinates (prediction after k layers = x_q^T w_k). ``lr`` and ``gamma`` are one
    number for every layer or a list with one number per layer (``identify``'s per-layer fits).
    """

    kind: ClassVar[str] = "gd_plus_plus"

    def __init__(self, steps: int = 1, lr: float | list[float] = 1.0, gamma: float | list[float] = 0.0) -> None:
        self.steps = check_int("steps", steps, 0)
        self.lr = _check_per_step("lr", lr, self.steps)
        self.gamma = _check_per_step("gamma", gamma, self.steps)

    def hparams(self) -> dict:
        return {"steps": self.steps, "lr": self.lr, "gamma": self.gamma}

    def _trajectory_masked(self, x: torch.Tensor, y: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        def per_step(v: float | list[float]) -> float | torch.Tensor:
            return torch.tensor(v, dtype=x.dtype, device=x.device) if isinstance(v, list) else v

        return gdpp_trajectory(x, y, n, self.steps, per_step(self.lr), per_step(self.gamma))

    @classmethod
    def fit_hparams(cls, task, steps: int, n_context: int, generator: torch.Generator, batch_size: int = 4096,
                    n_queries: int = 4) -> GDPlusPlus:
        """GDPlusPlus(steps, lr*, gamma*) minimising the mean squared query error on a batch from ``task``.

        Starts at (GD's best lr, gamma = 0) and refines (log lr, gamma) with Nelder-Mead, so the fitted
        loss is never above GD's on the same batch.
        """
        steps = check_int("steps", steps, 1)
        cx, cy, qx, qy = fit_batch(task, n_context, generator, batch_size, n_queries)
        lr, gamma = _fit_shared(SpectralLoss(cx, cy, qx, qy), steps, _lr_scale(cx))
        return cls(steps=steps, lr=lr, gamma=gamma)

    @classmethod
    def fit_layerwise(cls, task, steps: int, n_context: int, generator: torch.Generator, batch_size: int = 4096,
                      n_queries: int = 4, stable_margin: float | None = 1.2,
                      validation_factor: int = 4) -> GDPlusPlus:
        """GDPlusPlus(steps, [lr_1..lr_K], [gamma_1..gamma_K]): one (lr, gamma) per layer fitted on the loss.

        The fit batch is the one ``fit_hparams`` draws with the same generator state (contexts (B, N, d), queries
        (B, Q, d)); a validation batch of ``validation_factor`` * B tasks is drawn after it. Candidates: the shared
        fit (``fit_hparams``' (lr*, gamma*) in every layer) and L-BFGS-B on the 2K - 1 free values (the last
        gamma reaches no prediction and is 0) with the exact gradient of the spectral loss (torch autograd), from
        the shared fit and four "early layers precondition, the last one steps" starts (the loss is not convex),
        each run once on the plain loss and, if ``stable_margin`` m is set, once more with a stiff penalty on
        |1 - lam c_K(lam)| > 1 (an eigen-direction of X^T X / N ending worse than predicting 0) for lam in
        [0, m * the batch's largest eigenvalue]. Among the candidates whose fit-batch loss is not above the shared
        fit's (so the result never is), the one with the lowest validation loss is returned (the lowest fit
        loss if ``validation_factor`` is 0). Why: for K >= 3 the plain optimum is a high-degree polynomial in
        X^T X / N that is excellent on the fit batch and explodes on rare tasks with an eigenvalue beyond it.
        """
        steps = check_int("steps", steps, 1)
        check_int("validation_factor", validation_factor, 0)
        if stable_margin is not None and not (isinstance(stable_margin, (int, float)) and stable_margin >= 1.0):
            raise ConfigError(f"stable_margin must be a number >= 1 or None, got {stable_margin!r}")
        cx, cy, qx, qy = fit_batch(task, n_context, generator, batch_size, n_queries)
        scale = _lr_scale(cx)
        spectral = SpectralLoss(cx, cy, qx, qy)
        lr0, gamma0 = _fit_shared(spectral, steps, scale)
        shared = (torch.full((steps,), lr0, dtype=cx.dtype),
                  torch.tensor([gamma0] * (steps - 1) + [0.0], dtype=cx.dtype))
        cands = [shared, *_per_layer_candidates(spectral, steps, scale, shared, stable_margin)]
        limit = float(spectral.mse(steps, *shared))
        cands = [c for c in cands if float(spectral.mse(steps, *c)) <= limit]  # the shared fit always stays
        judge = spectral
        if validation_factor > 0:
            judge = SpectralLoss(*fit_batch(task, n_context, generator, validation_factor * batch_size, n_queries))
        lrs, gammas = min(cands, key=lambda c: _finite_or_inf(float(judge.mse(steps, *c))))
        return cls(steps=steps, lr=[float(v) for v in lrs], gamma=[float(v) for v in gammas])


def _finite_or_inf(v: float) -> float:
    """v, or +inf for NaN / inf (so a NaN loss never wins a min)."""
    return v if math.isfinite(v) else math.inf


def _fit_shared(spectral: SpectralLoss, steps: int, scale: float) -> tuple[float, float]:
    """One (lr, gamma) for every layer: GD's best lr, then Nelder-Mead on (log lr, gamma) (never above GD)."""

    def loss(lr: float, gamma: float) -> float:
        return spectral(steps, lr, gamma)

    lr0 = minimize_1d_log(lambda v: loss(v, 0.0), scale)
    u0 = math.log(lr0 / scale)
    simplex = np.array([[u0, 0.0], [u0 + 0.3, 0.0], [u0, 0.05]])
    res = optimize.minimize(lambda p: loss(scale * math.exp(p[0]), scale * p[1]), np.array([u0, 0.0]),
                            method="Nelder-Mead",
                            options={"initial_simplex": simplex, "xatol": 1e-6, "fatol": 1e-14, "maxiter": 1000})
    if res.fun <= loss(lr0, 0.0):
        return scale * math.exp(float(res.x[0])), scale * float(res.x[1])
    return lr0, 0.0


def _per_layer_candidates(spectral: SpectralLoss, steps: int, scale: float, shared: tuple[torch.Tensor, torch.Tensor],
                          margin: float | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """L-BFGS-B results (lrs (K,), gammas (K,) with gammas[-1] = 0) over (lr_1..lr_K, gamma_1..gamma_{K-1}) in
    units of ``scale``: from the shared fit and four more starts, on the plain loss and (``margin`` set) with the
    stability penalty of ``GDPlusPlus.fit_layerwise``."""
    n_g = steps - 1
    lr0, gamma0 = float(shared[0][0]) / scale, float(shared[1][0]) / scale
    grid = torch.linspace(0.0, (margin or 1.0) * float(spectral.lam.max()), 257, dtype=spectral.lam.dtype)
    weight = 1e3 * float((spectral.qy ** 2).mean())

    def unpack(p: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.as_tensor(p, dtype=spectral.lam.dtype) * scale
        return t[:steps], torch.cat([t[steps:], t.new_zeros(1)])

    def fun(p: np.ndarray, penalised: bool) -> tuple[float, np.ndarray]:
        t = torch.tensor(p, dtype=spectral.lam.dtype, requires_grad=True)
        lr, gamma = unpack(t)
        loss = spectral.mse(steps, lr, gamma)
        if penalised:
            left = 1.0 - grid * spectral_coef(grid, steps, lr, gamma)
            loss = loss + weight * torch.relu(left * left - 1.0).mean()
        if not torch.isfinite(loss):
            return 1e300, np.zeros_like(p)
        (grad,) = torch.autograd.grad(loss, t)
        return float(loss.detach()), grad.numpy().astype(np.float64)

    starts = [np.array([lr0] * steps + [gamma0] * n_g)]
    if steps > 1:
        starts += [np.array([f * lr0] * (steps - 1) + [2.0 * lr0] + [g * max(gamma0, 1.0)] * n_g)
                   for f in (0.1, 0.3) for g in (1.0, 3.0)]
    out = []
    for penalised in (False, True) if margin is not None else (False,):
        for start in starts:
            res = optimize.minimize(fun, start, args=(penalised,), jac=True, method="L-BFGS-B",
                                    options={"maxiter": 300, "ftol": 1e-13, "gtol": 1e-10})
            if math.isfinite(float(res.fun)):
                out.append(unpack(res.x))
    return out
