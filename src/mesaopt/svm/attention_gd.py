"""Gradient descent on one softmax-attention layer f(X) = vᵀ Xᵀ softmax(X W z) (Tarzanagh et al. 2023).

Parametrizations: W directly, or W = K Qᵀ with K, Q (d, m). Losses (mean over the n sequences):
``logistic`` l(u) = log(1 + exp(-u)) and ``correlation`` l(u) = -u, with u = y_i f(X_i). Gradients are in
closed form (checked against autograd in the tests) and computed in a cancellation-free way: the factor
(vᵀx_it - f_i) is evaluated as sum_u s_iu (vᵀx_it - vᵀx_iu), so directions stay accurate even when the
softmax is saturated to 1 - 1e-30 (autograd's softmax backward loses them to rounding there).
Everything is batched over leading problem dimensions: X (..., n, T, d), W (..., d, d).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from mesaopt.errors import ConfigError, ShapeError
from mesaopt.tasks.selection import SelectionProblem

Param = Literal["W", "KQ"]
Loss = Literal["logistic", "correlation"]

#: lambda of the papers' (K, Q) runs: loss + lambda (||K||² + ||Q||²) with lambda = float64 eps (their code), the
#: "vanishing regularization" under which (K, Q) converges in direction to the nuclear Att-SVM (their Theorem 3).
#: It caps ||W|| where the loss gradient balances 2 lambda K (||KQᵀ|| ~ 124 for n=6, T=8, d=10), and normalized GD
#: then keeps rotating at a constant angle per step instead of one shrinking like 1/iteration (docs/svm.md).
PAPER_KQ_WEIGHT_DECAY = 2.2e-16


def attention_probs(problem: SelectionProblem, W: torch.Tensor) -> torch.Tensor:
    """softmax_t(x_itᵀ W z_i): W (..., d, d) -> (..., n, T)."""
    a = torch.einsum("...ntd,...de,...ne->...nt", problem.X, W, problem.Z)
    return torch.softmax(a, dim=-1)


def attention_output(problem: SelectionProblem, W: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
    """f(X_i) = vᵀ X_iᵀ softmax(X_i W z_i): W (..., d, d), v (..., d) -> (..., n)."""
    v = problem.v if v is None else v
    h = torch.einsum("...ntd,...d->...nt", problem.X, v)
    return (attention_probs(problem, W) * h).sum(-1)


def _loss_terms(u: torch.Tensor, loss: str) -> tuple[torch.Tensor, torch.Tensor]:
    """l(u) and l'(u) elementwise."""
    if loss == "logistic":
        return F.softplus(-u), -torch.sigmoid(-u)
    if loss == "correlation":
        return -u, -torch.ones_like(u)
    raise ConfigError(f"loss must be one of ['logistic', 'correlation'], got {loss!r}")


def attention_loss(problem: SelectionProblem, W: torch.Tensor, v: torch.Tensor | None = None,
                   loss: Loss = "logistic") -> torch.Tensor:
    """Mean over sequences of l(y_i f(X_i)): (...,)."""
    u = problem.y * attention_output(problem, W, v)
    return _loss_terms(u, loss)[0].mean(-1)


def attention_grads(problem: SelectionProblem, W: torch.Tensor, v: torch.Tensor | None = None,
                    loss: Loss = "logistic") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss (...), dL/dW (..., d, d), dL/dv (..., d) and the softmax probabilities (..., n, T), in closed form."""
    v = problem.v if v is None else v
    X, Z, y = problem.X, problem.Z, problem.y
    s = attention_probs(problem, W)  # (..., n, T)
    h = torch.einsum("...ntd,...d->...nt", X, v)
    f = (s * h).sum(-1)
    lval, lprime = _loss_terms(y * f, loss)
    c = lprime * y / problem.n  # dL/df_i, (..., n)
    # dh_t = h_t - f = sum_u s_u (h_t - h_u): no cancellation when s is saturated
    dh = torch.einsum("...nu,...ntu->...nt", s, h.unsqueeze(-1) - h.unsqueeze(-2))
    g = c.unsqueeze(-1) * s * dh  # dL/d(score_it)
    gW = torch.einsum("...nt,...ntd,...ne->...de", g, X, Z)
    gv = torch.einsum("...n,...nt,...ntd->...d", c, s, X)
    return lval.mean(-1), gW, gv, s


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one intra-op thread (tiny batched ops are many times faster so on shared CPUs); restore."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def scaled_grad_W(problem: SelectionProblem, W: torch.Tensor, v: torch.Tensor | None = None,
                  loss: Loss = "logistic") -> torch.Tensor:
    """dL/dW times an unknown positive factor per problem, computed in the log domain: (..., d, d).

    dL/dW = sum_{i,t,u} c_i s_it s_iu (h_it - h_iu) x_it z_iᵀ with c_i = l'(y_i f_i) y_i / n. Each weight
    c_i s_it s_iu is formed as exp(log|c_i| + log s_it + log s_iu - M) with M the per-problem maximum, so the
    direction stays exact long after the true gradient has underflowed to 0 in float64 (saturated softmax).
    Normalized GD only needs this direction.
    """
    v = problem.v if v is None else v
    X, Z, y = problem.X, problem.Z, problem.y
    a = torch.einsum("...ntd,...de,...ne->...nt", X, W, Z)
    logs = torch.log_softmax(a, dim=-1)
    h = torch.einsum("...ntd,...d->...nt", X, v)
    f = (logs.exp() * h).sum(-1)
    u = y * f
    if loss == "logistic":
        logc, sign = F.logsigmoid(-u), -y
    elif loss == "correlation":
        logc, sign = torch.zeros_like(u), -y
    else:
        raise ConfigError(f"loss must be one of ['logistic', 'correlation'], got {loss!r}")
    lw = logc[..., None, None] + logs.unsqueeze(-1) + logs.unsqueeze(-2)  # (..., n, T, T)
    T = problem.T
    eye = torch.eye(T, dtype=torch.bool, device=a.device)
    lw = lw.masked_fill(eye, float("-inf"))
    M = lw.flatten(start_dim=-3).amax(-1)  # (...)
    w = torch.exp(lw - M[..., None, None, None]) * sign[..., None, None] * (h.unsqueeze(-1) - h.unsqueeze(-2))
    g = w.sum(-1)
    return torch.einsum("...nt,...ntd,...ne->...de", g, X, Z)


def _fro(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(start_dim=-2).norm(dim=-1)


def _normalize(g: torch.Tensor, ndim: int) -> torch.Tensor:
    """g / ||g|| over its last ``ndim`` dims; rescaled by max|g| first so that tiny gradients (1e-200) whose
    squares underflow are still normalized correctly; a zero gradient stays zero."""
    tiny = torch.finfo(g.dtype).tiny
    flat = g.flatten(start_dim=g.dim() - ndim)
    scale = flat.abs().amax(dim=-1, keepdim=True).clamp_min(tiny)
    flat = flat / scale
    flat = flat / flat.norm(dim=-1, keepdim=True).clamp_min(tiny)
    return flat.reshape(g.shape)


@dataclass
class AttentionGDResult:
    """Final W (..., d, d) (and K, Q (..., d, m) for "KQ"), v (..., d); history recorded at ``steps`` (S,).

    W_hist (S, ..., d, d), loss (S, ...), probs (S, ..., n, T), w_norm (S, ...) = ||W||_F.
    """

    W: torch.Tensor
    v: torch.Tensor
    K: torch.Tensor | None
    Q: torch.Tensor | None
    steps: np.ndarray
    W_hist: torch.Tensor
    loss: torch.Tensor
    probs: torch.Tensor
    w_norm: torch.Tensor

    @property
    def selected(self) -> torch.Tensor:
        """Token with the largest final softmax weight per sequence: (..., n)."""
        return self.probs[-1].argmax(-1)

    def corr(self, W_ref: torch.Tensor | np.ndarray) -> torch.Tensor:
        """<W_k, W_ref> / (||W_k|| ||W_ref||) along the history: W_ref (..., d, d) -> (S, ...)."""
        W_ref = torch.as_tensor(W_ref, dtype=self.W_hist.dtype)
        num = (self.W_hist * W_ref).sum((-2, -1))
        return num / (_fro(self.W_hist) * _fro(W_ref)).clamp_min(torch.finfo(self.W_hist.dtype).tiny)

    def mass(self, alpha: torch.Tensor) -> torch.Tensor:
        """Softmax weight on token alpha_i averaged over sequences along the history: alpha (..., n) -> (S, ...)."""
        idx = alpha.to(torch.int64).unsqueeze(-1).expand(self.probs.shape[:-1] + (1,))
        return self.probs.gather(-1, idx).squeeze(-1).mean(-1)


def init_attention(problem: SelectionProblem, param: Param = "W", init_std: float | None = None,
                   width: int | None = None, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Random init with per-entry std ``init_std`` (default 1/sqrt(3d), torch.nn.Linear's scale): (W, K, Q)."""
    d, dtype = problem.d, problem.X.dtype
    std = (1.0 / np.sqrt(3 * d)) if init_std is None else float(init_std)
    shape = problem.batch_shape
    if param == "W":
        W = torch.randn((*shape, d, d), generator=generator, dtype=torch.float64).to(dtype) * std
        return W, None, None
    m = d if width is None else width
    K = torch.randn((*shape, d, m), generator=generator, dtype=torch.float64).to(dtype) * std
    Q = torch.randn((*shape, d, m), generator=generator, dtype=torch.float64).to(dtype) * std
    return K @ Q.transpose(-2, -1), K, Q


def train_attention(problem: SelectionProblem, param: Param = "W", steps: int = 2000, lr: float = 0.1,
                    normalized: bool = True, loss: Loss = "logistic", train_v: bool = False,
                    init_std: float | None = None, width: int | None = None, weight_decay: float = 0.0,
                    generator: torch.Generator | None = None, W0: torch.Tensor | None = None,
                    record_every: int = 1, progress: bool = False) -> AttentionGDResult:
    """(Normalized) GD on W or on (K, Q) (each normalized separately), optionally with v trained jointly.

    Batched over the problem's leading dimensions; each problem gets its own normalization. ``weight_decay``
    adds lambda (||K||² + ||Q||²) (or lambda ||W||²) to the loss (the papers' code uses 2.2e-16 for (K, Q)).
    """
    if param not in ("W", "KQ"):
        raise ConfigError(f"param must be one of ['W', 'KQ'], got {param!r}")
    if loss not in ("logistic", "correlation"):
        raise ConfigError(f"loss must be one of ['logistic', 'correlation'], got {loss!r}")
    if not isinstance(steps, int) or steps < 0:
        raise ConfigError(f"steps must be an integer >= 0, got {steps!r}")
    if not lr > 0:
        raise ConfigError(f"lr must be > 0, got {lr!r}")
    if not isinstance(record_every, int) or record_every < 1:
        raise ConfigError(f"record_every must be an integer >= 1, got {record_every!r}")
    if not weight_decay >= 0:
        raise ConfigError(f"weight_decay must be >= 0, got {weight_decay!r}")
    if W0 is not None:
        if param != "W":
            raise ConfigError("W0 is only supported for param='W'")
        if W0.shape != (*problem.batch_shape, problem.d, problem.d):
            raise ShapeError(f"W0 must be {(*problem.batch_shape, problem.d, problem.d)}, got {tuple(W0.shape)}")
        W, K, Q = W0.to(problem.X.dtype).clone(), None, None
    else:
        W, K, Q = init_attention(problem, param, init_std, width, generator)
    v = problem.v.clone()

    rec_steps, Ws, losses, probs = [], [], [], []
    it = range(steps + 1)
    if progress:
        from rich.console import Console
        from rich.progress import track

        it = track(it, description=f"attention GD ({param})", transient=True, console=Console(stderr=True))
    with single_thread():
        for k in it:
            rec = k % record_every == 0 or k == steps
            if rec or train_v or not normalized or weight_decay:
                lval, gW, gv, s = attention_grads(problem, W, v, loss)
            if rec:
                rec_steps.append(k)
                Ws.append(W.clone())
                losses.append(lval)
                probs.append(s)
            if k == steps:
                break
            if normalized and not weight_decay:
                gW = scaled_grad_W(problem, W, v, loss)  # same direction, no underflow when saturated
            if param == "W":
                if weight_decay:
                    gW = gW + 2 * weight_decay * W
                W = W - lr * (_normalize(gW, 2) if normalized else gW)
            else:
                gK = gW @ Q + (2 * weight_decay * K if weight_decay else 0)
                gQ = gW.transpose(-2, -1) @ K + (2 * weight_decay * Q if weight_decay else 0)
                if normalized:
                    gK, gQ = _normalize(gK, 2), _normalize(gQ, 2)
                K, Q = K - lr * gK, Q - lr * gQ
                W = K @ Q.transpose(-2, -1)
            if train_v:
                v = v - lr * (_normalize(gv, 1) if normalized else gv)
    W_hist = torch.stack(Ws)
    return AttentionGDResult(W=W, v=v, K=K, Q=Q, steps=np.asarray(rec_steps), W_hist=W_hist,
                             loss=torch.stack(losses), probs=torch.stack(probs), w_norm=_fro(W_hist))
