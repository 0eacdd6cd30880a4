"""A tiny learner model for trainer tests: pred(q) = q^T W s + b, s = mean_i x_i y_i over the context."""

from __future__ import annotations

from typing import ClassVar

import torch

import mesaopt.models


@mesaopt.models.register
class TinyGD(torch.nn.Module):
    """One learned preconditioned GD step from w=0: (B,N,d),(B,N),(B,Q,d) -> (B,Q)."""

    kind: ClassVar[str] = "test_tiny_gd"

    def __init__(self, d: int, init_scale: float = 0.1, seed: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        self.d, self.init_scale, self.seed, self.dropout = d, init_scale, seed, dropout
        g = torch.Generator().manual_seed(seed)
        self.W = torch.nn.Parameter(init_scale * torch.randn(d, d, generator=g))
        self.b = torch.nn.Parameter(torch.zeros(()))

    def spec(self) -> dict:
        spec = {"kind": self.kind, "d": self.d, "init_scale": self.init_scale, "seed": self.seed}
        if self.dropout:
            spec["dropout"] = self.dropout
        return spec

    def forward(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> torch.Tensor:
        s = torch.einsum("bnd,bn->bd", ctx_x, ctx_y) / ctx_x.shape[1]
        s = torch.nn.functional.dropout(s, self.dropout, self.training)  # global torch RNG
        return torch.einsum("bqd,de,be->bq", qry_x, self.W, s) + self.b

    def prefix(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """(B,T,d),(B,T) -> (B,T): position t uses examples 0..t-1 (t=0: s=0)."""
        csum = torch.cumsum(xs * ys.unsqueeze(-1), dim=1)
        prev = torch.cat([torch.zeros_like(csum[:, :1]), csum[:, :-1]], dim=1)
        counts = torch.arange(xs.shape[1], device=xs.device, dtype=xs.dtype).clamp(min=1).view(1, -1, 1)
        s = prev / counts
        return torch.einsum("btd,de,bte->bt", xs, self.W, s) + self.b


@mesaopt.models.register
class NoPrefix(torch.nn.Module):
    """A learner without prefix(): q^T v (ignores the context)."""

    kind: ClassVar[str] = "test_no_prefix"

    def __init__(self, d: int) -> None:
        super().__init__()
        self.d = d
        self.v = torch.nn.Parameter(torch.zeros(d))

    def spec(self) -> dict:
        return {"kind": self.kind, "d": self.d}

    def forward(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> torch.Tensor:
        return qry_x @ self.v
