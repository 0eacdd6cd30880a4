"""A softmax copy layer then linear self-attention on interleaved tokens: von Oswald et al. (arXiv 2212.07677) Sec. 5.

Tokens (width D = p + d + 1, p = 2 * max_context + 1 one-hot positions first, the y-slot last): the context is
interleaved as x-token ``[pos_2i; x_i; 0]`` and y-token ``[pos_2i+1; 0; y_i]`` (i = 0..N-1), every query is
``[pos_2N; x_q; 0]``. So no token holds a pair (x_i, y_i): a GD step needs the tokens to be *built* first.

1. Softmax self-attention (``heads`` heads, key size D, residual, no LayerNorm/MLP): context token t attends
   causally to tokens 0..t, a query to every context token and itself (queries never see each other):
   e_t <- e_t + sum_h W_O^h sum_j softmax_j((W_Q^h e_t)^T (W_K^h e_j) / sqrt(D)) W_V^h e_j.
   Attending from the y-token 2i+1 to its previous token 2i and copying the x-part builds [x_i; y_i].
2. ``LSA`` (``lsa.forward_tokens``) with the 2N context tokens as keys/values; the prediction is minus the
   query's y-slot (``LSA``'s read-out).

``attention(ctx_x, ctx_y, qry_x)`` returns the softmax pattern (B, H, 2N+Q, 2N+Q) (for the copy-mass metric and
the heat map); ``copy_layer`` / ``lsa`` can be set by hand (``load_copy``) to the exact copy-then-GD construction.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from mesaopt.config import check_float, check_int
from mesaopt.errors import ShapeError
from mesaopt.learner import check_learner_inputs
from mesaopt.models import register
from mesaopt.models.lsa import LSA
from mesaopt.models.pretrained import PretrainedMixin
from mesaopt.models.softmax import masked_softmax
from mesaopt.seeding import derive_seed, generator

__all__ = ["CopyLSA"]


@register
class CopyLSA(PretrainedMixin, nn.Module):
    """Softmax copy layer + LSA on interleaved tokens; a Learner (B,N,d),(B,N),(B,Q,d) -> (B,Q) for N <= max_context."""

    kind: ClassVar[str] = "copy_lsa"

    def __init__(self, d: int, max_context: int, heads: int = 1, init_std: float = 0.02, lsa_init_std: float = 0.002,
                 seed: int = 0) -> None:
        super().__init__()
        self.d = check_int("model.d", d, 1)
        self.max_context = check_int("model.max_context", max_context, 1)
        self.heads = check_int("model.heads", heads, 1)
        self.init_std = check_float("model.init_std", init_std, 0.0)
        self.lsa_init_std = check_float("model.lsa_init_std", lsa_init_std, 0.0)
        self.seed = check_int("model.seed", seed, 0)
        self.p = 2 * self.max_context + 1
        dim = self.p + d + 1
        g = generator(self.seed, "copy-init")

        def init(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.randn(*shape, generator=g) * self.init_std)

        self.q_weight, self.k_weight = init(self.heads, dim, dim), init(self.heads, dim, dim)
        self.v_weight, self.o_weight = init(self.heads, dim, dim), init(self.heads, dim, dim)
        self.lsa = LSA(d=self.p + d, layers=1, heads=1, param="merged", init_std=self.lsa_init_std,
                       seed=derive_seed(self.seed, "lsa") % (2**31))

    def spec(self) -> dict:
        """Constructor kwargs plus ``kind`` (JSON-able)."""
        return {"kind": self.kind, "d": self.d, "max_context": self.max_context, "heads": self.heads,
                "init_std": self.init_std, "lsa_init_std": self.lsa_init_std, "seed": self.seed}

    def tokens(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> torch.Tensor:
        """Interleaved tokens with one-hot positions: (B,N,d), (B,N), (B,Q,d) -> (B, 2N+Q, p+d+1)."""
        check_learner_inputs(ctx_x, ctx_y, qry_x)
        b, n, d = ctx_x.shape
        if d != self.d or n > self.max_context:
            raise ShapeError(f"inputs have d={d}, N={n}; the model was built for d={self.d}, N <= {self.max_context}")
        q = qry_x.shape[1]
        z = ctx_x.new_zeros(b, 2 * n + q, self.p + d + 1)
        z[:, 0:2 * n:2, self.p:self.p + d] = ctx_x
        z[:, 1:2 * n:2, -1] = ctx_y.to(ctx_x.dtype)
        z[:, 2 * n:, self.p:self.p + d] = qry_x
        pos = torch.cat([torch.arange(2 * n), torch.full((q,), 2 * n)]).to(ctx_x.device)
        z[:, torch.arange(2 * n + q, device=ctx_x.device), pos] = 1.0
        return z

    def _allowed(self, n_ctx: int, q: int, device) -> torch.Tensor:
        """(2N+Q, 2N+Q) bool: context causal (self included); a query sees all context tokens and itself."""
        s = n_ctx + q
        allowed = torch.tril(torch.ones(s, s, dtype=torch.bool, device=device))
        allowed[n_ctx:, n_ctx:] = torch.eye(q, dtype=torch.bool, device=device)
        return allowed

    def _pattern(self, z: torch.Tensor, n_ctx: int) -> torch.Tensor:
        qv = torch.einsum("hkD,bsD->bhsk", self.q_weight, z)
        kv = torch.einsum("hkD,bsD->bhsk", self.k_weight, z)
        scores = qv @ kv.transpose(-1, -2) / math.sqrt(z.shape[-1])
        return masked_softmax(scores, self._allowed(n_ctx, z.shape[1] - n_ctx, z.device))

    def attention(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> torch.Tensor:
        """Softmax pattern of the copy layer: (B,N,d), (B,N), (B,Q,d) -> (B, H, 2N+Q, 2N+Q) (rows: attending token)."""
        return self._pattern(self.tokens(ctx_x, ctx_y, qry_x), 2 * ctx_x.shape[1])

    def copy_layer(self, z: torch.Tensor, n_ctx: int) -> torch.Tensor:
        """The residual softmax layer on tokens z (B, S, D) whose first ``n_ctx`` are context -> (B, S, D)."""
        att = self._pattern(z, n_ctx)
        vals = torch.einsum("hkD,bsD->bhsk", self.v_weight, z)
        return z + torch.einsum("hDk,bhsk->bsD", self.o_weight, att @ vals)

    def forward(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> torch.Tensor:
        """Predictions: (B,N,d), (B,N), (B,Q,d) -> (B, Q)."""
        n_ctx = 2 * ctx_x.shape[1]
        z = self.copy_layer(self.tokens(ctx_x, ctx_y, qry_x), n_ctx)
        return self.lsa.forward_tokens(z[:, :n_ctx], z[:, n_ctx:])[-1]

    @torch.no_grad()
    def load_copy(self, logit: float, lsa_kq: torch.Tensor, lsa_pv: torch.Tensor) -> CopyLSA:
        """Hand-set weights: head 0 attends from every token t to t-1 with score ``logit`` (others 0) and copies the
        x-part; the other heads are zero; the LSA gets (W_KQ, W_PV) (1, 1, p+d+1, p+d+1). Returns self."""
        dim, p, d = self.p + self.d + 1, self.p, self.d
        for w in (self.q_weight, self.k_weight, self.v_weight, self.o_weight):
            w.zero_()
        shift = torch.diag(torch.ones(p - 1), -1)  # shift @ onehot(t) = onehot(t + 1); its transpose goes back
        self.q_weight[0, :p, :p] = shift.T * (logit * math.sqrt(dim))
        self.k_weight[0, :p, :p] = torch.eye(p)
        self.v_weight[0, p:p + d, p:p + d] = torch.eye(d)
        self.o_weight[0] = torch.eye(dim)
        self.lsa.load_matrices(lsa_kq, lsa_pv)
        return self
