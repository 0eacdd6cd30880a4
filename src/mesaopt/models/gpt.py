"""GPT-2-style causal transformer for in-context learning on interleaved (x, y) tokens (Garg et al. 2022).

Architecture (arXiv 2208.01066, Sec. 2): the sequence x_0, y_0, x_1, y_1, ... is written as interleaved
tokens (``mesaopt.models.tokens.interleave``: x-token ``[x; 0]``, y-token ``[0; y]``, width d+1), mapped
to the residual width by a linear read-in, plus learned absolute position embeddings, followed by
``layers`` pre-LN blocks (causal multi-head self-attention via ``scaled_dot_product_attention`` and a
GELU MLP), a final LayerNorm and a linear read-out to one number. The prediction for y_t is the
read-out at the position of the x_t token (so it depends on (x_0, y_0, ..., x_{t-1}, y_{t-1}, x_t) only).
There is no sign flip in the read-out: prediction = ``read_out(ln_f(h))``.

Initialisation follows GPT-2: weights N(0, 0.02^2), biases 0, the output projection of every
residual branch N(0, (0.02 / sqrt(2 * layers))^2); it is drawn from ``seed`` only (the global RNG is
left untouched), so the same spec gives the same weights.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mesaopt.errors import ConfigError, ShapeError
from mesaopt.learner import check_learner_inputs, check_prefix_inputs
from mesaopt.models import register
from mesaopt.models.hooks import TRANSFORMER_BLOCK, HookedMixin, hook_tree, stack_hook_names
from mesaopt.models.pretrained import PretrainedMixin
from mesaopt.models.tokens import fold_queries, interleave
from mesaopt.seeding import generator as seeded_generator

SIZES: dict[str, dict[str, int]] = {
    "tiny": {"layers": 3, "heads": 2, "width": 64},
    "small": {"layers": 6, "heads": 4, "width": 128},
    "standard": {"layers": 12, "heads": 8, "width": 256},
}


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: (B, S, width) -> (B, S, width)."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.dropout = dropout

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(B, S, width) -> (B, S, width)."""
        b, s, w = h.shape
        q, k, v = self.qkv(h).view(b, s, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                             dropout_p=self.dropout if self.training else 0.0)
        out = out.transpose(1, 2).reshape(b, s, w)
        return F.dropout(self.proj(out), self.dropout, self.training)

    def forward_hooked(self, h: torch.Tensor, hp: nn.Module) -> torch.Tensor:
        """``forward`` calling the hook points ``hp`` (q/k/v (B,H,S,dh), pattern (B,H,S,S), z (B,H,S,dh)).

        Fused SDPA unless a hook is attached to ``hook_pattern``; then softmax(q k^T / sqrt(dh)) is formed.
        """
        b, s, w = h.shape
        q, k, v = self.qkv(h).view(b, s, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = hp.hook_q(q), hp.hook_k(k), hp.hook_v(v)
        drop = self.dropout if self.training else 0.0
        if hp.hook_pattern.fns:
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
            causal = torch.ones(s, s, dtype=torch.bool, device=h.device).tril()
            pattern = hp.hook_pattern(torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1))
            out = F.dropout(pattern, drop, self.training) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=drop)
        out = hp.hook_z(out).transpose(1, 2).reshape(b, s, w)
        return F.dropout(self.proj(out), self.dropout, self.training)


class Block(nn.Module):
    """Pre-LN transformer block: h + attn(ln(h)), then + mlp(ln(h))."""

    def __init__(self, width: int, heads: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads, dropout)
        self.ln2 = nn.LayerNorm(width)
        self.fc = nn.Linear(width, mlp_ratio * width)
        self.proj = nn.Linear(mlp_ratio * width, width)
        self.dropout = dropout

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """(B, S, width) -> (B, S, width)."""
        h = h + self.attn(self.ln1(h))
        m = self.proj(F.gelu(self.fc(self.ln2(h)), approximate="tanh"))
        return h + F.dropout(m, self.dropout, self.training)

    def forward_hooked(self, h: torch.Tensor, hp: nn.Module) -> torch.Tensor:
        """``forward`` calling the block's hook points ``hp``: (B, S, width) -> (B, S, width)."""
        h = hp.hook_resid_pre(h)
        h = hp.hook_resid_mid(h + hp.hook_attn_out(self.attn.forward_hooked(self.ln1(h), hp.attn)))
        m = self.proj(F.gelu(self.fc(self.ln2(h)), approximate="tanh"))
        return hp.hook_resid_post(h + hp.hook_mlp_out(F.dropout(m, self.dropout, self.training)))


def hook_names(layers: int) -> list[str]:
    """GPT hook names (TransformerLens layout): embedding, then per block resid/attn/mlp points."""
    return stack_hook_names(layers, TRANSFORMER_BLOCK)


@register
class GPT(HookedMixin, PretrainedMixin, nn.Module):
    """Causal transformer learner on interleaved (x, y) tokens; native ``prefix`` in one forward pass."""

    kind: ClassVar[str] = "gpt"

    def __init__(self, d: int, n_positions: int, layers: int = 12, heads: int = 8, width: int = 256,
                 mlp_ratio: int = 4, dropout: float = 0.0, seed: int = 0) -> None:
        super().__init__()
        for name, val in (("d", d), ("n_positions", n_positions), ("layers", layers), ("heads", heads),
                          ("width", width), ("mlp_ratio", mlp_ratio)):
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise ConfigError(f"model.{name} must be an integer >= 1, got {val!r}")
        if width % heads:
            raise ConfigError(f"model.width must be divisible by model.heads={heads}, got {width}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {dropout!r}")
        self.d, self.n_positions, self.layers, self.heads, self.width = d, n_positions, layers, heads, width
        self.mlp_ratio, self.dropout, self.seed = mlp_ratio, float(dropout), int(seed)
        with torch.random.fork_rng(devices=[]):  # default init must not consume the global RNG
            self.read_in = nn.Linear(d + 1, width)
            self.pos = nn.Embedding(2 * n_positions, width)
            self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, self.dropout) for _ in range(layers))
            self.ln_f = nn.LayerNorm(width)
            self.read_out = nn.Linear(width, 1)
        self.hook_points = hook_tree(hook_names(layers))
        self.reset_parameters()

    @classmethod
    def from_size(cls, size: str, d: int, n_positions: int, **kwargs) -> GPT:
        """A named size: tiny (3 layers, 2 heads, width 64), small (6, 4, 128), standard (12, 8, 256; Garg)."""
        if size not in SIZES:
            raise ConfigError(f"model.size must be one of {sorted(SIZES)}, got {size!r}")
        return cls(d=d, n_positions=n_positions, **{**SIZES[size], **kwargs})

    def reset_parameters(self) -> None:
        """GPT-2 initialisation drawn from ``seed`` (deterministic, global RNG untouched)."""
        g = seeded_generator(self.seed, "gpt-init")
        resid_std = 0.02 / math.sqrt(2 * self.layers)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if p.dim() == 1:  # biases -> 0, LayerNorm gains -> 1
                    p.fill_(1.0 if name.endswith("weight") else 0.0)
                    continue
                std = resid_std if name.endswith("proj.weight") else 0.02
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)

    def spec(self) -> dict:
        """Constructor kwargs plus ``kind`` (JSON-able)."""
        return {"kind": self.kind, "d": self.d, "n_positions": self.n_positions, "layers": self.layers,
                "heads": self.heads, "width": self.width, "mlp_ratio": self.mlp_ratio,
                "dropout": self.dropout, "seed": self.seed}

    def _check(self, xs: torch.Tensor, n_tokens: int) -> None:
        if xs.shape[-1] != self.d:
            raise ShapeError(f"x has dimension {xs.shape[-1]} but the model was built for d={self.d}")
        if n_tokens > 2 * self.n_positions:
            raise ShapeError(f"sequence of {n_tokens} tokens ({(n_tokens + 1) // 2} examples) exceeds "
                             f"model.n_positions={self.n_positions} examples")

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        return self.read_in(tokens) + self.pos(pos)

    def _stream(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """Residual stream (B, S, width) after the embedding and after every block: L+1 tensors."""
        if self.hooks_active:
            h = F.dropout(self.hook("hook_embed")(self._embed(tokens)), self.dropout, self.training)
            out = [h]
            for layer, blk in enumerate(self.blocks):
                h = blk.forward_hooked(h, self.layer_hooks(layer))
                out.append(h)
            return out
        h = F.dropout(self._embed(tokens), self.dropout, self.training)
        out = [h]
        for blk in self.blocks:
            h = blk(h)
            out.append(h)
        return out

    def readout(self, h: torch.Tensor) -> torch.Tensor:
        """(..., width) -> (...): ``read_out(ln_f(h))`` (no sign flip)."""
        return self.read_out(self.ln_f(h)).squeeze(-1)

    @staticmethod
    def _fold(ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> torch.Tensor:
        """Fold each query into the batch: tokens (B*Q, 2N+1, d+1) = context tokens then x_query."""
        return interleave(*fold_queries(ctx_x, ctx_y, qry_x))[:, :-1]  # drop the query's (unknown) y-token

    def prefix(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """(B, T, d), (B, T) -> (B, T): prediction for y_t from (x_0, y_0, ..., x_t), one forward pass."""
        check_prefix_inputs(xs, ys)
        tokens = interleave(xs, ys)
        self._check(xs, tokens.shape[1])
        return self.readout(self._stream(tokens)[-1][:, 0::2])

    def forward(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> torch.Tensor:
        """(B, N, d), (B, N), (B, Q, d) -> (B, Q): each query appended to the context independently."""
        return self.forward_layers(ctx_x, ctx_y, qry_x, all_layers=False)[-1]

    def forward_layers(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor,
                       all_layers: bool = True) -> torch.Tensor:
        """(B, N, d), (B, N), (B, Q, d) -> (L, B, Q): ``readout`` applied to each block's output at the query."""
        check_learner_inputs(ctx_x, ctx_y, qry_x)
        b, n, _ = ctx_x.shape
        q = qry_x.shape[1]
        tokens = self._fold(ctx_x, ctx_y, qry_x)
        self._check(ctx_x, tokens.shape[1])
        stream = self._stream(tokens)[1:] if all_layers else self._stream(tokens)[-1:]
        last = torch.stack([h[:, -1] for h in stream])  # (L, B*Q, width)
        return self.readout(last).reshape(len(stream), b, q)

    def prefix_layers(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """(B, T, d), (B, T) -> (L, B, T): ``readout`` of every block's output at the x-token positions."""
        check_prefix_inputs(xs, ys)
        tokens = interleave(xs, ys)
        self._check(xs, tokens.shape[1])
        return self.readout(torch.stack([h[:, 0::2] for h in self._stream(tokens)[1:]]))

    def hidden_states(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """(B, T, d), (B, T) -> (L+1, B, 2T, width): residual stream after the embedding and every block."""
        check_prefix_inputs(xs, ys)
        tokens = interleave(xs, ys)
        self._check(xs, tokens.shape[1])
        return torch.stack(self._stream(tokens))
