"""Exact LSA weights that run gradient descent (von Oswald et al., arXiv 2212.07677, Sec. 2-4).

With tokens e = [x; y] (width D = d + 1) and the layer e_j <- e_j + (1/N) sum_h W_PV^h S W_KQ^h e_j
(``mesaopt.models.LSA``), layer k of the construction uses, for learning rate eta_k and curvature
coefficient gamma_k (gamma = 0 for plain GD), split equally over H heads:

    W_KQ^h = [[I_d, 0], [0, 0]]              W_PV^h = (1/H) [[-gamma_k I_d, 0], [0, -eta_k]]

so M e_j = [-gamma_k Sigma_hat x_j ; -(eta_k/N) sum_i r_i x_i^T x_j] with r_i the context y-slots and
Sigma_hat = (1/N) sum_i x_i x_i^T. With gamma = 0 the context y-slots hold the residuals
r_i = y_i - w_k^T x_i of GD on L(w) = (1/2N) sum_i (w^T x_i - y_i)^2 from w_0 = 0 and the query's y-slot
holds -w_k^T x_q, so the LSA read-out (READOUT_SIGN = -1) is the GD prediction after k steps.
See docs/constructions.md for the derivation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from mesaopt.errors import ConfigError
from mesaopt.models.lsa import LSA

__all__ = ["lsa_gd", "gd_plus_plus", "gd_layer_matrices"]


def _per_layer(name: str, value: float | Sequence[float], steps: int) -> list[float]:
    vals = [value] * steps if isinstance(value, (int, float)) and not isinstance(value, bool) else list(value)
    if len(vals) != steps or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                                 for v in vals):
        raise ConfigError(f"{name} must be a finite number or a list of {steps} finite numbers (one per step), "
                          f"got {value!r}")
    return [float(v) for v in vals]


def _check_steps(steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be an integer >= 1, got {steps!r}")


def gd_layer_matrices(d: int, lr: float, gamma: float = 0.0, heads: int = 1,
                      dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's construction matrices (W_KQ, W_PV), each (heads, d+1, d+1), for step size lr and GD++ gamma."""
    D = d + 1
    kq = torch.zeros(heads, D, D, dtype=dtype)
    kq[:, :d, :d] = torch.eye(d, dtype=dtype)
    pv = torch.zeros(heads, D, D, dtype=dtype)
    pv[:, :d, :d] = -(gamma / heads) * torch.eye(d, dtype=dtype)
    pv[:, d, d] = -lr / heads
    return kq, pv


def _build(d: int, lrs: list[float], gammas: list[float], heads: int, dtype: torch.dtype, param: str) -> LSA:
    steps = len(lrs)
    model = LSA(d=d, layers=steps, heads=heads, param=param, init_std=0.0).to(dtype)
    mats = [gd_layer_matrices(d, lr, g, heads, dtype) for lr, g in zip(lrs, gammas, strict=True)]
    kq = torch.stack([m[0] for m in mats])
    pv = torch.stack([m[1] for m in mats])
    if param == "merged":
        return model.load_matrices(kq, pv)
    # separate: K = Q = W_KQ (a projection, so K^T Q = W_KQ) and V = I, P = W_PV
    with torch.no_grad():
        model.k_weight.copy_(kq)
        model.q_weight.copy_(kq)
        model.v_weight.copy_(torch.eye(d + 1, dtype=dtype).expand_as(pv))
        model.p_weight.copy_(pv)
    return model


def lsa_gd(d: int, steps: int = 1, lr: float | Sequence[float] = 1.0, heads: int = 1,
           dtype: torch.dtype = torch.float32, param: str = "merged") -> LSA:
    """A ``steps``-layer LSA whose forward is exactly ``steps`` GD steps (per-layer lr) from w = 0: -> LSA(d)."""
    _check_steps(steps)
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
        raise ConfigError(f"heads must be an integer >= 1, got {heads!r}")
    return _build(d, _per_layer("lr", lr, steps), [0.0] * steps, heads, dtype, param)


def gd_plus_plus(d: int, steps: int = 1, lr: float | Sequence[float] = 1.0, gamma: float | Sequence[float] = 0.0,
                 heads: int = 1, dtype: torch.dtype = torch.float32, param: str = "merged") -> LSA:
    """A ``steps``-layer LSA running GD++: each layer a GD step (lr) and x <- (I - gamma Sigma_hat) x: -> LSA(d)."""
    _check_steps(steps)
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
        raise ConfigError(f"heads must be an integer >= 1, got {heads!r}")
    return _build(d, _per_layer("lr", lr, steps), _per_layer("gamma", gamma, steps), heads, dtype, param)
