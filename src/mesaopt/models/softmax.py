"""Attention-only multi-head softmax transformer on concat tokens (von Oswald-style, softmax instead of linear).

Tokens (``mesaopt.models.tokens.concat_tokens``): context ``e_i = [x_i; y_i]``, query ``[x_q; 0]``, width
D = d + 1, the y-slot is the last coordinate. Every layer updates every token with a residual
multi-head softmax attention in which **only context tokens are keys and values**:

    e_j <- e_j + sum_h W_O^h sum_{i in allowed(j)} softmax_i( (W_Q^h e_j)^T (W_K^h e_i) / sqrt(k) ) W_V^h e_i

with W_Q^h, W_K^h, W_V^h in R^{k x D}, W_O^h in R^{D x k} (k = ``key_size``, default D). Queries never
see each other (nor themselves). ``allowed(j)`` depends on ``context``:

- ``"full"`` (default, like ``LSA``): every token attends to every context token.
- ``"causal"``: context token i attends to context tokens 0..i; a query attends to all context tokens.
  Then the context stream is prefix-consistent and ``prefix`` is one pass over 2T tokens
  (query t attends to context tokens 0..t-1).

A token with no allowed key (a query with an empty context) gets no update. No LayerNorm, no MLP.

Read-out: prediction = ``READOUT_SIGN * (query's y-slot) = -(query's y-slot)`` after the last layer,
the same convention as ``LSA`` (a GD-like layer writes -y_hat into the query's y-slot), so trained
softmax and linear models are read out identically.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from torch import nn

from mesaopt.config import check_float, check_int
from mesaopt.errors import ConfigError, ShapeError
from mesaopt.learner import check_prefix_inputs
from mesaopt.models import register
from mesaopt.models.hooks import ATTN_ONLY_BLOCK, HookedMixin, hook_tree, stack_hook_names
from mesaopt.models.pretrained import PretrainedMixin
from mesaopt.models.tokens import concat_tokens
from mesaopt.seeding import generator

__all__ = ["SoftmaxAttention", "READOUT_SIGN", "hook_names"]

READOUT_SIGN = -1.0  # prediction = READOUT_SIGN * y-slot of the query token (same convention as LSA)


def masked_softmax(scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis restricted to ``allowed`` (broadcastable bool); all-masked rows give 0."""
    neg = torch.finfo(scores.dtype).min
    p = torch.softmax(scores.masked_fill(~allowed, neg), dim=-1)
    return p * allowed.any(dim=-1, keepdim=True).to(p.dtype)


def hook_names(layers: int) -> list[str]:
    """Softmax-attention hook names: tokens, and per layer the residual stream, q/k/v, pattern, z and update."""
    return stack_hook_names(layers, ATTN_ONLY_BLOCK)


@register
class SoftmaxAttention(HookedMixin, PretrainedMixin, nn.Module):
    """Attention-only softmax transformer on concat tokens; a Learner (B,N,d),(B,N),(B,Q,d) -> (B,Q)."""

    kind: ClassVar[str] = "softmax"

    def __init__(self, d: int, layers: int = 1, heads: int = 1, key_size: int | None = None,
                 context: Literal["full", "causal"] = "full", init_std: float = 0.02, seed: int = 0) -> None:
        super().__init__()
        self.d = check_int("model.d", d, 1)
        self.layers = check_int("model.layers", layers, 1)
        self.heads = check_int("model.heads", heads, 1)
        if key_size is not None:
            check_int("model.key_size", key_size, 1)
        self.key_size = key_size
        if context not in ("full", "causal"):
            raise ConfigError(f"model.context must be one of ['full', 'causal'], got {context!r}")
        self.context = context
        self.init_std = check_float("model.init_std", init_std, 0.0)
        self.seed = check_int("model.seed", seed, 0)
        D, k, L, H = d + 1, key_size or d + 1, self.layers, self.heads
        g = generator(self.seed, "softmax-init")

        def init(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.randn(*shape, generator=g) * self.init_std)

        self.q_weight = init(L, H, k, D)
        self.k_weight = init(L, H, k, D)
        self.v_weight = init(L, H, k, D)
        self.o_weight = init(L, H, D, k)
        self.hook_points = hook_tree(hook_names(L))

    def spec(self) -> dict:
        """Constructor kwargs plus ``kind`` (JSON-able)."""
        return {"kind": self.kind, "d": self.d, "layers": self.layers, "heads": self.heads,
                "key_size": self.key_size, "context": self.context, "init_std": self.init_std, "seed": self.seed}

    def _check(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.d:
            raise ShapeError(f"inputs have d={x.shape[-1]} but the model was built with d={self.d}")
        if x.dtype != self.q_weight.dtype:
            raise ShapeError(f"inputs are {x.dtype} but the model is {self.q_weight.dtype}; cast one of them")

    def _run(self, ctx: torch.Tensor, qry: torch.Tensor, ctx_allowed: torch.Tensor,
             qry_allowed: torch.Tensor) -> list[torch.Tensor]:
        """ctx (B, N, D), qry (B, Q, D), masks (.., N, N) / (.., Q, N) bool -> per-layer readouts [(B, Q)]."""
        n = ctx.shape[1]
        allowed = torch.cat([ctx_allowed, qry_allowed], dim=-2).unsqueeze(-3)  # (.., 1, N+Q, N)
        scale = 1.0 / math.sqrt(self.q_weight.shape[2])
        outs = []
        z = torch.cat([ctx, qry], dim=1)
        if self.hooks_active:
            return self._run_hooked(z, n, allowed, scale)
        for layer in range(self.layers):
            c = z[:, :n]
            q = torch.einsum("hkD,bsD->bhsk", self.q_weight[layer], z)
            k = torch.einsum("hkD,bnD->bhnk", self.k_weight[layer], c)
            v = torch.einsum("hkD,bnD->bhnk", self.v_weight[layer], c)
            att = masked_softmax(torch.einsum("bhsk,bhnk->bhsn", q, k) * scale, allowed)
            z = z + torch.einsum("hDk,bhsk->bsD", self.o_weight[layer], att @ v)
            outs.append(READOUT_SIGN * z[:, n:, -1])
        return outs

    def _run_hooked(self, z: torch.Tensor, n: int, allowed: torch.Tensor, scale: float) -> list[torch.Tensor]:
        """``_run`` calling every hook point: tokens (B, S, D), the first n the context -> readouts [(B, S-n)]."""
        z = self.hook("hook_embed")(z)
        outs = []
        for layer in range(self.layers):
            lh = self.layer_hooks(layer)
            z = lh.hook_resid_pre(z)
            c = z[:, :n]
            q = lh.attn.hook_q(torch.einsum("hkD,bsD->bhsk", self.q_weight[layer], z))
            k = lh.attn.hook_k(torch.einsum("hkD,bnD->bhnk", self.k_weight[layer], c))
            v = lh.attn.hook_v(torch.einsum("hkD,bnD->bhnk", self.v_weight[layer], c))
            att = lh.attn.hook_pattern(masked_softmax(torch.einsum("bhsk,bhnk->bhsn", q, k) * scale, allowed))
            out = lh.hook_attn_out(torch.einsum("hDk,bhsk->bsD", self.o_weight[layer], lh.attn.hook_z(att @ v)))
            z = lh.hook_resid_post(z + out)
            outs.append(READOUT_SIGN * z[:, n:, -1])
        return outs

    def _ctx_allowed(self, n: int, device) -> torch.Tensor:
        full = torch.ones(n, n, dtype=torch.bool, device=device)
        return full if self.context == "full" else torch.tril(full)

    def forward_layers(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> torch.Tensor:
        """Prediction read out after every layer: (B,N,d), (B,N), (B,Q,d) -> (L, B, Q)."""
        tokens = concat_tokens(ctx_x, ctx_y, qry_x)
        self._check(ctx_x)
        n, q = ctx_x.shape[1], qry_x.shape[1]
        qry_allowed = torch.ones(q, n, dtype=torch.bool, device=ctx_x.device)
        return torch.stack(self._run(tokens[:, :n], tokens[:, n:], self._ctx_allowed(n, ctx_x.device), qry_allowed))

    def forward(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> torch.Tensor:
        """Predictions after the last layer: (B,N,d), (B,N), (B,Q,d) -> (B, Q)."""
        return self.forward_layers(ctx_x, ctx_y, qry_x)[-1]

    def prefix_layers(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Per-layer prediction at t from examples 0..t-1 (t=0 predicts 0): (B,T,d), (B,T) -> (L, B, T).

        ``causal``: one pass, context stream plus T query tokens (query t attends to context 0..t-1).
        ``full``: every t is its own problem, folded into the batch (B*T, T context tokens with keys 0..t-1).
        """
        check_prefix_inputs(xs, ys)
        self._check(xs)
        b, t, d = xs.shape
        tokens = concat_tokens(xs, ys, xs)  # (B, 2T, D): context tokens then query tokens [x_t; 0]
        ctx, qry = tokens[:, :t], tokens[:, t:]
        idx = torch.arange(t, device=xs.device)
        before = idx[None, :] < idx[:, None]  # (T, T): [t, j] = j < t
        if self.context == "causal":
            outs = self._run(ctx, qry, self._ctx_allowed(t, xs.device), before)
            return torch.stack(outs)
        ctx_f = ctx.unsqueeze(1).expand(b, t, t, d + 1).reshape(b * t, t, d + 1)  # problem t = row b*T + t
        qry_f = qry.reshape(b * t, 1, d + 1)
        keys = before.unsqueeze(0).expand(b, t, t).reshape(b * t, 1, t)  # problem t sees keys j < t
        outs = self._run(ctx_f, qry_f, keys.expand(b * t, t, t), keys)
        return torch.stack(outs).reshape(self.layers, b, t)

    def prefix(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Prediction at t from examples 0..t-1 (t=0 predicts 0): (B,T,d), (B,T) -> (B, T)."""
        return self.prefix_layers(xs, ys)[-1]
