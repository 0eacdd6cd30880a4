"""The EBT's transformer backbone (shared by ``EBT`` and ``EBTFeedForward``) and its hook names.

Concat-token embedding, pre-LN blocks (multi-head softmax attention + GELU MLP) and a scalar head. Context
tokens attend to the context; every query (candidate) token attends to the context and to itself, reusing the
context's keys and values. Each method takes an optional hook tree (``mesaopt.models.hooks``): None is the plain
fused path, a tree calls every hook point.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from mesaopt.errors import ConfigError
from mesaopt.models.hooks import TRANSFORMER_BLOCK, stack_hook_names

__all__ = ["hook_names"]


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """SDPA with the math backend (the only CPU backend with double backward): (B,H,L,dh) -> (B,H,L,dh)."""
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class _Block(nn.Module):
    """Pre-LN transformer block: multi-head softmax attention + GELU MLP, both residual.

    ``hp`` (optional) is the block's hook subtree; with it every hook point is called and the attention is
    formed explicitly when ``attn.hook_pattern`` has a hook (outputs equal the fused path to float tolerance).
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def _split(self, h: torch.Tensor, hp: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, dim = h.shape
        qkv = self.qkv(self.ln1(h)).view(b, n, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, n, dh)
        if hp is not None:
            q, k, v = hp.attn.hook_q(q), hp.attn.hook_k(k), hp.attn.hook_v(v)
        return q, k, v

    @staticmethod
    def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                hp: nn.Module | None) -> torch.Tensor:
        if hp is None:
            return _attention(q, k, v, mask)
        if hp.attn.hook_pattern.fns:
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            o = hp.attn.hook_pattern(torch.softmax(scores, dim=-1)) @ v
        else:
            o = _attention(q, k, v, mask)
        return hp.attn.hook_z(o)

    def _merge(self, h: torch.Tensor, o: torch.Tensor, hp: nn.Module | None) -> torch.Tensor:
        b, _, n, _ = o.shape
        a = self.proj(o.transpose(1, 2).reshape(b, n, -1))
        if hp is None:
            h = h + a
            return h + self.mlp(self.ln2(h))
        h = hp.hook_resid_mid(h + hp.hook_attn_out(a))
        return hp.hook_resid_post(h + hp.hook_mlp_out(self.mlp(self.ln2(h))))

    def context(self, h: torch.Tensor, hp: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Context tokens attend to each other: h (B,N,D) -> (h' (B,N,D), k, v (B,H,N,dh))."""
        if hp is not None:
            h = hp.hook_resid_pre(h)
        q, k, v = self._split(h, hp)
        if h.shape[1] == 0:
            return h, k, v
        return self._merge(h, self._attend(q, k, v, None, hp), hp), k, v

    def query(self, h: torch.Tensor, k_ctx: torch.Tensor, v_ctx: torch.Tensor,
              hp: nn.Module | None = None) -> torch.Tensor:
        """Each query token attends to the context and itself: h (B,Q,D), k/v_ctx (B,H,N,dh) -> (B,Q,D)."""
        if hp is not None:
            h = hp.hook_resid_pre(h)
        q, k, v = self._split(h, hp)
        n, nq = k_ctx.shape[2], h.shape[1]
        mask = torch.zeros(nq, n + nq, dtype=torch.bool, device=h.device)
        mask[:, :n] = True
        mask[:, n:] = torch.eye(nq, dtype=torch.bool, device=h.device)
        o = self._attend(q, torch.cat([k_ctx, k], dim=2), torch.cat([v_ctx, v], dim=2), mask, hp)
        return self._merge(h, o, hp)


class _Backbone(nn.Module):
    """Concat-token embedding (width d+1), ``layers`` blocks, final LayerNorm and a scalar head."""

    def __init__(self, d: int, dim: int, layers: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(f"dim must be divisible by heads, got dim={dim}, heads={heads}")
        self.embed = nn.Linear(d + 1, dim)
        self.blocks = nn.ModuleList(_Block(dim, heads, mlp_ratio) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 1)

    def encode_context(self, ctx_tok: torch.Tensor,
                       hooks: nn.Module | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Context tokens (B,N,d+1) -> per-layer keys/values [(k, v) (B,H,N,dh)] (independent of queries).

        ``hooks``: the model's hook tree (its ``context.*`` points are called), or None for the plain path."""
        h = self.embed(ctx_tok)
        hp = None if hooks is None else hooks.context
        if hp is not None:
            h = hp.hook_embed(h)
        cache = []
        for layer, blk in enumerate(self.blocks):
            h, k, v = blk.context(h, None if hp is None else getattr(hp.blocks, str(layer)))
            cache.append((k, v))
        return cache

    def read_queries(self, cache: list[tuple[torch.Tensor, torch.Tensor]], qry_tok: torch.Tensor,
                     hooks: nn.Module | None = None) -> torch.Tensor:
        """Query tokens (B,Q,d+1) with the context cache -> scalar head output (B,Q) (``query.*``, ``hook_head``)."""
        h = self.embed(qry_tok)
        hp = None if hooks is None else hooks.query
        if hp is not None:
            h = hp.hook_embed(h)
        for layer, (blk, (k, v)) in enumerate(zip(self.blocks, cache, strict=True)):
            h = blk.query(h, k, v, None if hp is None else getattr(hp.blocks, str(layer)))
        out = self.head(self.ln_f(h)).squeeze(-1)
        return out if hooks is None else hooks.hook_head(out)


def hook_names(layers: int) -> list[str]:
    """EBT / EBTFeedForward hook names: the context pass (``context.*``, once per call), the candidate-token
    pass (``query.*``, at every energy evaluation) and ``hook_head`` (energy (B,Q); the prediction for ebt_ff)."""
    return [f"{part}.{n}" for part in ("context", "query")
            for n in stack_hook_names(layers, TRANSFORMER_BLOCK)] + ["hook_head"]
