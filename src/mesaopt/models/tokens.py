"""Token formats for in-context regression.

* concat (von Oswald et al.): one token per example, context token ``[x; y]``, query token ``[x; 0]``,
  all of width ``d + 1``; the y-slot is the last coordinate.
* interleaved (Garg et al.-style): two tokens per example, x-token ``[x; 0]`` then y-token ``[0; y]``,
  width ``d + 1`` (Garg's code puts y in the first coordinate of a width-d token instead; the
  information is the same).
"""

from __future__ import annotations

import torch

from mesaopt.errors import ShapeError
from mesaopt.learner import check_learner_inputs, check_prefix_inputs

__all__ = ["concat_tokens", "split_concat", "interleave", "deinterleave", "fold_queries", "Y_SLOT"]

Y_SLOT = -1  # index of the y coordinate in every token


def concat_tokens(ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> torch.Tensor:
    """(B, N, d), (B, N), (B, Q, d) -> tokens (B, N+Q, d+1): context ``[x; y]`` then query ``[x; 0]``."""
    check_learner_inputs(ctx_x, ctx_y, qry_x)
    ctx = torch.cat([ctx_x, ctx_y.unsqueeze(-1).to(ctx_x.dtype)], dim=-1)
    qry = torch.cat([qry_x, qry_x.new_zeros(qry_x.shape[:-1] + (1,))], dim=-1)
    return torch.cat([ctx, qry], dim=1)


def split_concat(tokens: torch.Tensor, n_context: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of ``concat_tokens``: (B, N+Q, d+1) -> ctx_x (B,N,d), ctx_y (B,N), qry_x (B,Q,d), qry_slot (B,Q)."""
    if tokens.dim() != 3 or tokens.shape[-1] < 2:
        raise ShapeError(f"tokens must be (B, N+Q, d+1) with d >= 1, got {tuple(tokens.shape)}")
    if not 0 <= n_context <= tokens.shape[1]:
        raise ShapeError(f"n_context must be in [0, {tokens.shape[1]}], got {n_context}")
    ctx, qry = tokens[:, :n_context], tokens[:, n_context:]
    return ctx[..., :-1], ctx[..., -1], qry[..., :-1], qry[..., -1]


def interleave(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """(B, T, d), (B, T) -> (B, 2T, d+1): x-token ``[x_t; 0]`` at 2t, y-token ``[0; y_t]`` at 2t+1."""
    check_prefix_inputs(xs, ys)
    b, t, d = xs.shape
    x_tok = torch.cat([xs, xs.new_zeros(b, t, 1)], dim=-1)
    y_tok = torch.cat([xs.new_zeros(b, t, d), ys.unsqueeze(-1).to(xs.dtype)], dim=-1)
    return torch.stack([x_tok, y_tok], dim=2).reshape(b, 2 * t, d + 1)


def fold_queries(ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One sequence per query, folded into the batch: (B, N, d), (B, N), (B, Q, d) -> xs (B*Q, N+1, d), ys (B*Q, N+1).

    Row ``b * Q + q`` is the context of problem b followed by its query q (whose y is 0); unfold a per-row
    result ``r`` (B*Q, ...) with ``r.reshape(B, Q, ...)``.
    """
    b, n, d = ctx_x.shape
    q = qry_x.shape[1]
    xs = torch.cat([ctx_x.unsqueeze(1).expand(b, q, n, d), qry_x.unsqueeze(2)], dim=2).reshape(b * q, n + 1, d)
    ys = torch.cat([ctx_y.unsqueeze(1).expand(b, q, n), ctx_y.new_zeros(b, q, 1)], dim=2).reshape(b * q, n + 1)
    return xs, ys


def deinterleave(tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of ``interleave``: (B, 2T, d+1) -> xs (B, T, d), ys (B, T)."""
    if tokens.dim() != 3 or tokens.shape[1] % 2 or tokens.shape[-1] < 2:
        raise ShapeError(f"tokens must be (B, 2T, d+1) with d >= 1, got {tuple(tokens.shape)}")
    return tokens[:, 0::2, :-1], tokens[:, 1::2, -1]
