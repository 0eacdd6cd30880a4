"""Comparison metrics between learners (von Oswald et al. Sec. 3): prediction and sensitivity agreement.

All functions are batched and pure. Conventions: ``pred`` and ``target`` are (B, Q); a learner maps
ctx_x (B, N, d), ctx_y (B, N), qry_x (B, Q, d) -> (B, Q). The *sensitivity* of a learner is the
gradient of its prediction with respect to the query input, d y_hat / d x_q (B, Q, d); for a linear
learner y_hat = w^T x_q it is the weight vector w it has (implicitly) fitted to the context.
"""

from __future__ import annotations

import copy
import itertools

import torch

from mesaopt.errors import ConfigError, ShapeError
from mesaopt.learner import Learner, check_learner_inputs

__all__ = ["mse", "half_mse", "pred_diff", "sensitivity", "model_diff", "sens_cos", "interpolate", "compare"]


def _same_shape(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise ShapeError(f"{what}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all entries: (B, Q), (B, Q) -> scalar tensor (differentiable)."""
    _same_shape(pred, target, "mse(pred, target)")
    return (pred - target).pow(2).mean()


def half_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Half the mean squared error (von Oswald's loss): (B, Q), (B, Q) -> scalar tensor."""
    return 0.5 * mse(pred, target)


def pred_diff(pred_a: torch.Tensor, pred_b: torch.Tensor) -> float:
    """Mean absolute prediction difference mean |y_a - y_b|: (B, Q), (B, Q) -> float."""
    _same_shape(pred_a, pred_b, "pred_diff(pred_a, pred_b)")
    return float((pred_a.detach() - pred_b.detach()).abs().mean())


def sensitivity(learner: Learner, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> torch.Tensor:
    """d y_hat / d x_q by autograd in one backward pass: (B,N,d), (B,N), (B,Q,d) -> (B, Q, d).

    Exact for learners whose queries (and tasks) are independent: then y_hat[b, q] depends on
    qry_x[b, q] only, so the gradient of the sum of all predictions is every per-query gradient.
    A learner that does not depend differentiably on the query (e.g. kNN) gets zeros.
    """
    return _pred_and_sens(learner, ctx_x, ctx_y, qry_x)[1]


def _pred_and_sens(learner: Learner, ctx_x: torch.Tensor, ctx_y: torch.Tensor,
                   qry_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions (B, Q) and sensitivities (B, Q, d) from one forward and one backward pass."""
    check_learner_inputs(ctx_x, ctx_y, qry_x)
    if not qry_x.is_floating_point():
        raise ShapeError(f"sensitivity needs floating-point qry_x, got {qry_x.dtype}")
    with torch.enable_grad():
        q = qry_x.detach().clone().requires_grad_(True)
        out = learner(ctx_x.detach(), ctx_y.detach(), q)
        if out.shape != qry_x.shape[:2]:
            raise ShapeError(f"learner returned {tuple(out.shape)}, expected (B, Q) = {tuple(qry_x.shape[:2])}")
        grad = torch.autograd.grad(out.sum(), q, allow_unused=True)[0] if out.requires_grad else None
    return out.detach(), (torch.zeros_like(q) if grad is None else grad.detach())


def _sens_pair(la: Learner | torch.Tensor, lb: Learner | torch.Tensor, ctx_x, ctx_y, qry_x):
    sa = la if isinstance(la, torch.Tensor) else sensitivity(la, ctx_x, ctx_y, qry_x)
    sb = lb if isinstance(lb, torch.Tensor) else sensitivity(lb, ctx_x, ctx_y, qry_x)
    _same_shape(sa, sb, "sensitivities")
    return sa, sb


def model_diff(la: Learner | torch.Tensor, lb: Learner | torch.Tensor, ctx_x: torch.Tensor, ctx_y: torch.Tensor,
               qry_x: torch.Tensor) -> float:
    """Mean over tasks and queries of ||s_a - s_b||_2 (s = sensitivity (B, Q, d), or pass s directly) -> float."""
    sa, sb = _sens_pair(la, lb, ctx_x, ctx_y, qry_x)
    return float(torch.linalg.vector_norm(sa - sb, dim=-1).mean())


def sens_cos(la: Learner | torch.Tensor, lb: Learner | torch.Tensor, ctx_x: torch.Tensor, ctx_y: torch.Tensor,
             qry_x: torch.Tensor, eps: float = 1e-12) -> float:
    """Mean over tasks and queries of cos(s_a, s_b) (s = sensitivity (B, Q, d), or pass s directly) -> float."""
    sa, sb = _sens_pair(la, lb, ctx_x, ctx_y, qry_x)
    num = (sa * sb).sum(-1)
    den = torch.linalg.vector_norm(sa, dim=-1) * torch.linalg.vector_norm(sb, dim=-1)
    return float((num / den.clamp_min(eps)).mean())


def interpolate(model_a: torch.nn.Module, model_b: torch.nn.Module, alpha: float) -> torch.nn.Module:
    """A copy of model_a with every floating parameter/buffer set to (1 - alpha) theta_a + alpha theta_b."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not torch.isfinite(torch.tensor(alpha)):
        raise ConfigError(f"alpha must be a finite number, got {alpha!r}")
    ignore = {"seed", "init_std"}  # initialisation settings do not change the architecture
    spec_a, spec_b = (
        {k: v for k, v in m.spec().items() if k not in ignore} if hasattr(m, "spec") else None
        for m in (model_a, model_b)
    )
    if spec_a is not None and spec_b is not None and spec_a != spec_b:
        raise ConfigError(f"interpolate needs two models of the same spec, got {spec_a} and {spec_b}")
    sa, sb = model_a.state_dict(), model_b.state_dict()
    if sa.keys() != sb.keys() or any(sa[k].shape != sb[k].shape for k in sa):
        raise ConfigError("interpolate needs two models with the same parameter names and shapes")
    out = copy.deepcopy(model_a)
    mixed = {k: ((1 - alpha) * v + alpha * sb[k].to(v.dtype)) if v.is_floating_point() else v.clone()
             for k, v in sa.items()}
    out.load_state_dict(mixed)
    return out


def compare(learners: dict[str, Learner], ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor,
            qry_y: torch.Tensor, loss: str = "mse", sensitivities: bool = True) -> dict[str, float]:
    """Flat metrics: ``{name}_loss`` for each learner and ``pred_diff|model_diff|sens_cos_{a}_{b}`` per pair.

    ``loss`` is "mse" or "half_mse" (the key names do not change). Pairs are in the dict's order
    (a before b). With ``sensitivities=False`` only losses and pred_diff are computed.
    """
    check_learner_inputs(ctx_x, ctx_y, qry_x)
    if loss not in ("mse", "half_mse"):
        raise ConfigError(f"loss must be one of ['mse', 'half_mse'], got {loss!r}")
    if qry_y.shape != qry_x.shape[:2]:
        raise ShapeError(f"qry_y must be (B, Q) = {tuple(qry_x.shape[:2])}, got {tuple(qry_y.shape)}")
    loss_fn = mse if loss == "mse" else half_mse
    preds, sens, out = {}, {}, {}
    for name, learner in learners.items():
        if sensitivities:
            preds[name], sens[name] = _pred_and_sens(learner, ctx_x, ctx_y, qry_x)
        else:
            preds[name] = learner(ctx_x, ctx_y, qry_x).detach()
        out[f"{name}_loss"] = float(loss_fn(preds[name], qry_y))
    for a, b in itertools.combinations(learners, 2):
        out[f"pred_diff_{a}_{b}"] = pred_diff(preds[a], preds[b])
        if sensitivities:
            out[f"model_diff_{a}_{b}"] = model_diff(sens[a], sens[b], ctx_x, ctx_y, qry_x)
            out[f"sens_cos_{a}_{b}"] = sens_cos(sens[a], sens[b], ctx_x, ctx_y, qry_x)
    return out
