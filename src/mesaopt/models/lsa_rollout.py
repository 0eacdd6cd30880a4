"""Damped roll-out of one LSA layer: apply a trained layer S times (von Oswald et al., arXiv 2212.07677, Sec. 3).

The paper's released code iterates a trained single layer with ``dampening`` lambda = 0.75 and ``y_update``:
every application adds lambda times the layer's update to the tokens' y-slots only (the x-slots stay the inputs),

    e_j[y] <- e_j[y] + lambda * (M e_j)[y],    M = sum_h W_PV^h S W_KQ^h,  S = (1/N) sum_{i in context} e_i e_i^T,

for context and query tokens alike, with S recomputed from the current context tokens before every application
(the first application is damped too). For the exact one-GD-step layer (``constructions.lsa_gd`` with step size
eta) this is S steps of gradient descent with step size lambda * eta. ``y_only=False`` adds the whole damped
update (the code's default ``y_update=False``).
"""

from __future__ import annotations

import math

import torch

from mesaopt.errors import ConfigError, ShapeError
from mesaopt.learner import check_learner_inputs
from mesaopt.models.lsa import LSA, READOUT_SIGN

__all__ = ["damped_rollout"]


def damped_rollout(model: LSA, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor, steps: int,
                   damping: float = 0.75, layer: int = 0, y_only: bool = True) -> torch.Tensor:
    """Prediction after each of ``steps`` damped applications of ``model``'s layer ``layer``: -> (steps, B, Q).

    ctx_x (B, N, d), ctx_y (B, N), qry_x (B, Q, d). Uses the context statistic S (B, D, D) only: every context
    token moves by the same map e <- (I + A) e with A = lambda M (y-row only if ``y_only``), so S <- (I+A) S (I+A)^T.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be an integer >= 1, got {steps!r}")
    if isinstance(damping, bool) or not isinstance(damping, (int, float)) or not math.isfinite(damping):
        raise ConfigError(f"damping must be a finite number, got {damping!r}")
    if not 0 <= layer < model.layers:
        raise ConfigError(f"layer must be in [0, {model.layers - 1}], got {layer!r}")
    check_learner_inputs(ctx_x, ctx_y, qry_x)
    if ctx_x.shape[-1] != model.d:
        raise ShapeError(f"inputs have d={ctx_x.shape[-1]} but the model was built with d={model.d}")
    kq, pv = (w[layer].to(ctx_x.dtype) for w in model.matrices())  # (H, D, D)
    ctx = torch.cat([ctx_x, ctx_y.unsqueeze(-1)], dim=-1)
    qry = torch.cat([qry_x, qry_x.new_zeros(qry_x.shape[:-1] + (1,))], dim=-1)
    n = ctx_x.shape[1]
    s = (ctx.transpose(-1, -2) @ ctx) * (1.0 / max(n, 1) if model.normalize else 1.0)  # (B, D, D)
    mask = torch.ones_like(kq[0])
    if y_only:
        mask[:-1] = 0.0  # only the y-row of the update is applied
    eye = torch.eye(mask.shape[0], dtype=ctx.dtype, device=ctx.device)
    outs = []
    for _ in range(steps):
        a = damping * mask * torch.einsum("hij,bjk,hkl->bil", pv, s, kq)  # (B, D, D)
        qry = qry + qry @ a.transpose(-1, -2)
        t = eye + a
        s = t @ s @ t.transpose(-1, -2)
        outs.append(READOUT_SIGN * qry[..., -1])
    return torch.stack(outs)
