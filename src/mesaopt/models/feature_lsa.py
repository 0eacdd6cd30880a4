"""An MLP embedding of x followed by linear self-attention: von Oswald et al. (arXiv 2212.07677), non-linear regression.

Every input x (context and query alike) goes through the same two-layer MLP

    phi(x) = W_2 gelu(W_1 x + b_1) + b_2,   W_1 (hidden, d), W_2 (features, hidden),

and the ``LSA`` (``mesaopt.models.lsa``) then runs on the concat tokens ``[phi(x_i); y_i]`` / ``[phi(x_q); 0]``:
the labels are not embedded, so a GD-like LSA does in-context regression of y on the *learned* features
(``features(x)`` exposes phi; ``lsa`` is the attention part, a Learner on features). Read-out as ``LSA``
(minus the query's y-slot). Init: W_1 ~ N(0, 2/d), W_2 ~ N(0, 1/hidden), biases 0, from ``seed``.
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
from mesaopt.seeding import derive_seed, generator

__all__ = ["FeatureLSA"]


@register
class FeatureLSA(PretrainedMixin, nn.Module):
    """phi = per-token MLP of x, then an LSA stack on [phi(x); y]; a Learner (B,N,d),(B,N),(B,Q,d) -> (B,Q)."""

    kind: ClassVar[str] = "feature_lsa"

    def __init__(self, d: int = 1, features: int = 40, hidden: int = 160, layers: int = 1, heads: int = 1,
                 init_std: float = 0.002, seed: int = 0) -> None:
        super().__init__()
        self.d = check_int("model.d", d, 1)
        self.features = check_int("model.features", features, 1)
        self.hidden = check_int("model.hidden", hidden, 1)
        self.init_std = check_float("model.init_std", init_std, 0.0)
        self.seed = check_int("model.seed", seed, 0)
        g = generator(self.seed, "mlp-init")
        self.w1 = nn.Parameter(torch.randn(self.hidden, d, generator=g) * math.sqrt(2.0 / d))
        self.b1 = nn.Parameter(torch.zeros(self.hidden))
        self.w2 = nn.Parameter(torch.randn(self.features, self.hidden, generator=g) * math.sqrt(1.0 / self.hidden))
        self.b2 = nn.Parameter(torch.zeros(self.features))
        self.lsa = LSA(d=self.features, layers=layers, heads=heads, param="merged", init_std=self.init_std,
                       seed=derive_seed(self.seed, "lsa") % (2**31))

    def spec(self) -> dict:
        """Constructor kwargs plus ``kind`` (JSON-able)."""
        return {"kind": self.kind, "d": self.d, "features": self.features, "hidden": self.hidden,
                "layers": self.lsa.layers, "heads": self.lsa.heads, "init_std": self.init_std, "seed": self.seed}

    def features_of(self, x: torch.Tensor) -> torch.Tensor:
        """The learned feature map phi: x (..., d) -> (..., features), in x's dtype (computed in the model's)."""
        if x.shape[-1] != self.d:
            raise ShapeError(f"inputs have d={x.shape[-1]} but the model was built with d={self.d}")
        h = torch.nn.functional.gelu(x.to(self.w1.dtype) @ self.w1.T + self.b1)
        return (h @ self.w2.T + self.b2).to(x.dtype)

    def forward_layers(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> torch.Tensor:
        """Prediction read out after every LSA layer: (B,N,d), (B,N), (B,Q,d) -> (L, B, Q)."""
        check_learner_inputs(ctx_x, ctx_y, qry_x)
        return self.lsa.forward_layers(self.features_of(ctx_x), ctx_y, self.features_of(qry_x))

    def forward(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> torch.Tensor:
        """Predictions: (B,N,d), (B,N), (B,Q,d) -> (B, Q)."""
        return self.forward_layers(ctx_x, ctx_y, qry_x)[-1]

    def prefix(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Prediction at t from examples 0..t-1 (``LSA.prefix`` on the features): (B,T,d), (B,T) -> (B, T)."""
        return self.lsa.prefix(self.features_of(xs), ys)
