"""Linear self-attention (LSA) on concat tokens, von Oswald et al. (arXiv 2212.07677).

Tokens are ``e = [x; y]`` of width D = d + 1 (context) and ``[x; 0]`` (queries). Every layer updates
every token (context and query) with

    e_j <- e_j + (1/N) * sum_h W_PV^h (sum_{i in context} e_i e_i^T) W_KQ^h e_j

where only the N context tokens are keys/values, so queries never see each other. The layer is
therefore ``e_j <- e_j + M e_j`` with ``M = sum_h W_PV^h S W_KQ^h`` and ``S = (1/N) sum_i e_i e_i^T``
the (D, D) sufficient statistic of the current context tokens: no N x N attention matrix. Since every
context token moves by the same map, the next layer's statistic is ``S' = (I + M) S (I + M)^T``; the
forward pass is one matmul chain on S (O(N D^2) once, then O(H D^3 + Q D^2) per layer), and ``prefix``
gets all T prefix problems from an exclusive running sum of outer products in O(T (D^2 + L H D^3))
(``prefix_quadratic`` / ``forward_layers_reference`` keep the token-by-token forms as tested references).
No softmax, no LayerNorm, no MLP.

Parametrisations: ``"merged"`` learns W_KQ^h, W_PV^h in R^{D x D} directly; ``"separate"`` learns
K, Q, V in R^{k x D} and P in R^{D x k} per head with W_KQ = K^T Q and W_PV = P V.

Read-out: the prediction is ``READOUT_SIGN * (query's y-slot) = -(query's y-slot)`` after the last
layer. The sign is a convention fixed by the GD construction (``mesaopt.constructions.lsa_gd``): a
layer that does one GD step subtracts ``w^T x_j`` from every y-slot, which turns context y-slots into
residuals ``y_i - w^T x_i`` and leaves ``0 - w^T x_q = -y_hat`` in the query's y-slot.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from torch import nn

from mesaopt.config import check_float, check_int
from mesaopt.errors import ConfigError, ShapeError
from mesaopt.learner import check_learner_inputs, check_prefix_inputs
from mesaopt.models import register
from mesaopt.models.hooks import ATTN_ONLY_BLOCK, HookedMixin, hook_tree, stack_hook_names
from mesaopt.models.pretrained import PretrainedMixin
from mesaopt.seeding import generator

__all__ = ["LSA", "READOUT_SIGN", "hook_names"]

READOUT_SIGN = -1.0  # prediction = READOUT_SIGN * y-slot of the query token (the GD construction writes -y_hat there)


def hook_names(layers: int) -> list[str]:
    """LSA hook names: tokens, and per layer the residual stream, per-head q/k/v, linear pattern, z and update."""
    return stack_hook_names(layers, ATTN_ONLY_BLOCK)


@register
class LSA(HookedMixin, PretrainedMixin, nn.Module):
    """Linear self-attention stack on concat tokens; a Learner (B,N,d),(B,N),(B,Q,d) -> (B,Q)."""

    kind: ClassVar[str] = "lsa"

    def __init__(self, d: int, layers: int = 1, heads: int = 1, param: Literal["merged", "separate"] = "merged",
                 key_size: int | None = None, normalize: bool = True, init_std: float = 0.02, seed: int = 0,
                 clip: float = 0.0) -> None:
        super().__init__()
        self.d = check_int("model.d", d, 1)
        self.layers = check_int("model.layers", layers, 1)
        self.heads = check_int("model.heads", heads, 1)
        if param not in ("merged", "separate"):
            raise ConfigError(f"model.param must be one of ['merged', 'separate'], got {param!r}")
        self.param = param
        if key_size is not None:
            if param != "separate":
                raise ConfigError("model.key_size applies only to param='separate'; leave it null for param='merged'")
            check_int("model.key_size", key_size, 1)
        self.key_size = key_size
        if not isinstance(normalize, bool):
            raise ConfigError(f"model.normalize must be true or false, got {normalize!r}")
        self.normalize = normalize
        self.init_std = check_float("model.init_std", init_std, 0.0)
        self.seed = check_int("model.seed", seed, 0)
        self.clip = check_float("model.clip", clip, 0.0)  # > 0: every token clipped to [-clip, clip] after a layer

        D, L, H = d + 1, self.layers, self.heads
        g = generator(self.seed, "lsa-init")

        def init(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.randn(*shape, generator=g) * self.init_std)

        if param == "merged":
            self.kq_weight = init(L, H, D, D)  # W_KQ^h per layer
            self.pv_weight = init(L, H, D, D)  # W_PV^h per layer
        else:
            k = key_size if key_size is not None else D
            self.k_weight = init(L, H, k, D)
            self.q_weight = init(L, H, k, D)
            self.v_weight = init(L, H, k, D)
            self.p_weight = init(L, H, D, k)
        self.hook_points = hook_tree(hook_names(L))

    # ------------------------------------------------------------------ parameters
    def extra_repr(self) -> str:
        return (f"d={self.d}, layers={self.layers}, heads={self.heads}, param={self.param!r}, "
                f"key_size={self.key_size}, normalize={self.normalize}, clip={self.clip}")

    def spec(self) -> dict:
        """JSON-able constructor arguments plus ``"kind"`` (``mesaopt.models.build`` inverts it)."""
        return {"kind": self.kind, "d": self.d, "layers": self.layers, "heads": self.heads, "param": self.param,
                "key_size": self.key_size, "normalize": self.normalize, "init_std": self.init_std, "seed": self.seed,
                "clip": self.clip}

    def matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Effective (W_KQ, W_PV), each (L, H, d+1, d+1); differentiable in the parameters."""
        if self.param == "merged":
            return self.kq_weight, self.pv_weight
        return self.k_weight.transpose(-1, -2) @ self.q_weight, self.p_weight @ self.v_weight

    def _index(self, layer: int, head: int) -> None:
        if not (0 <= layer < self.layers and 0 <= head < self.heads):
            raise ConfigError(f"layer must be in [0, {self.layers - 1}] and head in [0, {self.heads - 1}], "
                              f"got layer={layer}, head={head}")

    def w_kq(self, layer: int = 0, head: int = 0) -> torch.Tensor:
        """Effective key-query matrix W_KQ = K^T Q of one layer and head: (d+1, d+1)."""
        self._index(layer, head)
        return self.matrices()[0][layer, head]

    def w_pv(self, layer: int = 0, head: int = 0) -> torch.Tensor:
        """Effective projection-value matrix W_PV = P V of one layer and head: (d+1, d+1)."""
        self._index(layer, head)
        return self.matrices()[1][layer, head]

    @torch.no_grad()
    def load_matrices(self, w_kq: torch.Tensor, w_pv: torch.Tensor) -> LSA:
        """Set a merged model's (W_KQ, W_PV), each (L, H, d+1, d+1); returns self."""
        if self.param != "merged":
            raise ConfigError("load_matrices needs param='merged' (a separate K,Q,V,P model has no unique "
                              "factorisation); set k_weight/q_weight/v_weight/p_weight instead")
        want = tuple(self.kq_weight.shape)
        if tuple(w_kq.shape) != want or tuple(w_pv.shape) != want:
            raise ShapeError(f"w_kq and w_pv must both be {want}, got {tuple(w_kq.shape)} and {tuple(w_pv.shape)}")
        self.kq_weight.copy_(w_kq)
        self.pv_weight.copy_(w_pv)
        return self

    # ------------------------------------------------------------------ forward
    def _check(self, x: torch.Tensor) -> None:
        if x.shape[-1] != self.d:
            raise ShapeError(f"inputs have d={x.shape[-1]} but the model was built with d={self.d}")
        dt = self.kq_weight.dtype if self.param == "merged" else self.k_weight.dtype
        if x.dtype != dt:
            raise ShapeError(f"inputs are {x.dtype} but the model is {dt}; cast one of them (e.g. model.to({x.dtype}))")

    def _run(self, ctx: torch.Tensor, qry: torch.Tensor, scale: torch.Tensor | float,
             weight: torch.Tensor | None = None, s0: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Propagate ctx (..., N, D) and qry (..., Q, D) through all layers; readouts per layer (..., Q).

        ``weight`` (..., N) masks context tokens out of S; ``s0`` (..., D, D) overrides the first layer's S.
        """
        kq, pv = self.matrices()
        outs = []
        for layer in range(self.layers):
            if layer == 0 and s0 is not None:
                s = s0
            else:
                cw = ctx if weight is None else ctx * weight.unsqueeze(-1)
                s = (cw.transpose(-1, -2) @ ctx) * scale  # (..., D, D)
            m = torch.einsum("hij,...jk,hkl->...il", pv[layer], s, kq[layer])  # sum_h W_PV^h S W_KQ^h
            qry = self._clip(qry + qry @ m.transpose(-1, -2))
            if layer + 1 < self.layers:  # the last layer's context update cannot reach any readout
                ctx = self._clip(ctx + ctx @ m.transpose(-1, -2))
            outs.append(READOUT_SIGN * qry[..., -1])
        return outs

    def _run_stats(self, s: torch.Tensor, qry: torch.Tensor) -> list[torch.Tensor]:
        """Matmul-chain form of ``_run``: S (..., D, D) of the context, qry (..., Q, D) -> readouts per layer (..., Q).

        Every context token moves by the same map e <- (I + M) e, so the next layer's statistic is
        S' = (I + M) S (I + M)^T: the context tokens themselves are never materialised and a layer costs
        O(H D^3 + Q D^2) per problem, independent of the context length N.
        """
        kq, pv = self.matrices()
        outs = []
        for layer in range(self.layers):
            m = torch.einsum("hij,...jk,hkl->...il", pv[layer], s, kq[layer])  # sum_h W_PV^h S W_KQ^h
            qry = qry + qry @ m.transpose(-1, -2)
            if layer + 1 < self.layers:
                sm = s @ m.transpose(-1, -2)  # S (I + M)^T = S + S M^T
                s = s + sm + m @ s + m @ sm
            outs.append(READOUT_SIGN * qry[..., -1])
        return outs

    def _run_hooked(self, tokens: torch.Tensor, n: int, scale: torch.Tensor | float,
                    weight: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Token-by-token layers calling every hook point: tokens (B, S, D) with the first n the context.

        Per head, q_j = W_KQ e_j, k_i = e_i, v_i = W_PV e_i (merged) or q = Q e, k = K e, v = V e (separate);
        pattern (B,H,S,N) = scale * k_i . q_j (linear: no softmax; ``weight`` (B, N) masks keys); z = pattern @ v;
        the update is sum_h z (merged) or sum_h P z (separate). Returns the readouts per layer [(B, S-n)].
        """
        kq, pv = (self.kq_weight, self.pv_weight) if self.param == "merged" else (self.q_weight, self.v_weight)
        tokens = self.hook("hook_embed")(tokens)
        outs = []
        for layer in range(self.layers):
            lh = self.layer_hooks(layer)
            e = lh.hook_resid_pre(tokens)
            ctx = e[:, :n]
            if self.param == "merged":
                q = torch.einsum("hij,bsj->bhsi", kq[layer], e)
                k = ctx.unsqueeze(1).expand(-1, self.heads, -1, -1)
            else:
                q = torch.einsum("hkD,bsD->bhsk", kq[layer], e)
                k = torch.einsum("hkD,bnD->bhnk", self.k_weight[layer], ctx)
            q, k = lh.attn.hook_q(q), lh.attn.hook_k(k)
            v = lh.attn.hook_v(torch.einsum("hij,bnj->bhni", pv[layer], ctx))
            pattern = (q @ k.transpose(-1, -2)) * scale
            if weight is not None:
                pattern = pattern * weight[:, None, None, :]
            z = lh.attn.hook_z(lh.attn.hook_pattern(pattern) @ v)
            out = z.sum(1) if self.param == "merged" else torch.einsum("hDk,bhsk->bsD", self.p_weight[layer], z)
            tokens = lh.hook_resid_post(self._clip(e + lh.hook_attn_out(out)))
            outs.append(READOUT_SIGN * tokens[:, n:, -1])
        return outs

    def _prefix_hooked(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """``prefix_layers`` through the hooked path: the T problems folded into the batch (B*T, T+1, D) -> (L,B,T)."""
        b, t, _ = xs.shape
        e, qry, scale, _ = self._prefix_s0(xs, ys)
        dim = e.shape[-1]
        ctx = e.unsqueeze(1).expand(b, t, t, dim).reshape(b * t, t, dim)  # problem t = row b*T + t
        idx = torch.arange(t, device=xs.device)
        weight = (idx[None, :] < idx[:, None]).to(xs.dtype).repeat(b, 1)  # (B*T, T): key j of problem t iff j < t
        tokens = torch.cat([ctx, qry.reshape(b * t, 1, dim)], dim=1)
        outs = self._run_hooked(tokens, t, scale.repeat(b)[:, None, None, None], weight)
        return torch.stack(outs).reshape(self.layers, b, t)

    def _clip(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens (..., D) clipped entrywise to [-clip, clip] (von Oswald et al.'s deep models); clip = 0: unchanged."""
        return tokens.clamp(-self.clip, self.clip) if self.clip > 0 else tokens

    def _scale(self, n: int) -> float:
        return 1.0 / max(n, 1) if self.normalize else 1.0

    def forward_layers(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> torch.Tensor:
        """Prediction read out after every layer: (B,N,d), (B,N), (B,Q,d) -> (L, B, Q)."""
        check_learner_inputs(ctx_x, ctx_y, qry_x)
        self._check(ctx_x)
        ctx = torch.cat([ctx_x, ctx_y.unsqueeze(-1)], dim=-1)
        qry = torch.cat([qry_x, qry_x.new_zeros(qry_x.shape[:-1] + (1,))], dim=-1)
        if self.hooks_active:
            return torch.stack(self._run_hooked(torch.cat([ctx, qry], dim=1), ctx.shape[1],
                                                self._scale(ctx_x.shape[1])))
        if self.clip > 0:  # clipped tokens do not move by one shared map: no matmul chain on S
            return torch.stack(self._run(ctx, qry, self._scale(ctx_x.shape[1])))
        s0 = (ctx.transpose(-1, -2) @ ctx) * self._scale(ctx_x.shape[1])  # (B, D, D): the only O(N) step
        return torch.stack(self._run_stats(s0, qry))

    def forward_layers_reference(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> torch.Tensor:
        """Slow reference of ``forward_layers`` updating every context token: (B,N,d),(B,N),(B,Q,d) -> (L,B,Q)."""
        check_learner_inputs(ctx_x, ctx_y, qry_x)
        self._check(ctx_x)
        ctx = torch.cat([ctx_x, ctx_y.unsqueeze(-1)], dim=-1)
        qry = torch.cat([qry_x, qry_x.new_zeros(qry_x.shape[:-1] + (1,))], dim=-1)
        return torch.stack(self._run(ctx, qry, self._scale(ctx_x.shape[1])))

    def forward(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> torch.Tensor:
        """Predictions after the last layer: (B,N,d), (B,N), (B,Q,d) -> (B, Q)."""
        return self.forward_layers(ctx_x, ctx_y, qry_x)[-1]

    def _prefix_s0(self, xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                      torch.Tensor]:
        """Tokens e (B,T,D), queries (B,T,1,D), per-problem scale (T,) and S_t of tokens 0..t-1 (B,T,D,D)."""
        b, t, _ = xs.shape
        e = torch.cat([xs, ys.unsqueeze(-1)], dim=-1)  # (B, T, D)
        qry = torch.cat([xs, xs.new_zeros(b, t, 1)], dim=-1).unsqueeze(2)  # (B, T, 1, D): problem t's query
        counts = torch.arange(t, device=xs.device)
        scale = (1.0 / counts.clamp(min=1).to(xs.dtype)) if self.normalize else torch.ones(t, dtype=xs.dtype,
                                                                                          device=xs.device)
        outer = e.unsqueeze(-1) * e.unsqueeze(-2)  # (B, T, D, D)
        s0 = torch.cat([torch.zeros_like(outer[:, :1]), outer.cumsum(dim=1)[:, :-1]], dim=1)
        return e, qry, scale, s0 * scale[:, None, None]

    def prefix(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Prediction at t from examples 0..t-1 (exact, batched; t=0 predicts 0): (B,T,d), (B,T) -> (B, T).

        Linear time in T: S_t (the statistic of tokens 0..t-1, normalised by 1/t) is an exclusive running sum
        of outer products, and every deeper layer maps it by S_t <- (I + M_t) S_t (I + M_t)^T (``_run_stats``),
        O(T (D^2 + L H D^3)) per sequence. ``prefix_quadratic`` is the O(T^2 D^2)-per-layer reference.
        """
        check_prefix_inputs(xs, ys)
        self._check(xs)
        if self.hooks_active:
            return self._prefix_hooked(xs, ys)[-1]
        if self.clip > 0:
            return self._prefix_tokens(xs, ys)[-1][..., 0]
        _, qry, _, s0 = self._prefix_s0(xs, ys)
        return self._run_stats(s0, qry)[-1][..., 0]

    def prefix_layers(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Prefix prediction read out after every layer (linear time): (B,T,d), (B,T) -> (L, B, T)."""
        check_prefix_inputs(xs, ys)
        self._check(xs)
        if self.hooks_active:
            return self._prefix_hooked(xs, ys)
        if self.clip > 0:
            return torch.stack(self._prefix_tokens(xs, ys))[..., 0]
        _, qry, _, s0 = self._prefix_s0(xs, ys)
        return torch.stack(self._run_stats(s0, qry))[..., 0]

    def prefix_quadratic(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Reference ``prefix`` holding every problem's context tokens: (B,T,d), (B,T) -> (B, T), O(T^2 D^2) per layer.

        The first layer's S_t is an exclusive cumulative sum; deeper layers need every problem's own updated
        context, held as a masked (B, T, T, D) tensor.
        """
        check_prefix_inputs(xs, ys)
        self._check(xs)
        return self._prefix_tokens(xs, ys)[-1][..., 0]

    def _prefix_tokens(self, xs: torch.Tensor, ys: torch.Tensor) -> list[torch.Tensor]:
        """Token-by-token prefix problems (``prefix_quadratic``): readouts per layer, each (B, T, 1)."""
        b, t, _ = xs.shape
        e, qry, scale, s0 = self._prefix_s0(xs, ys)
        counts = torch.arange(t, device=xs.device)
        if self.layers == 1:
            ctx, weight = e.unsqueeze(1)[:, :, :0], None  # unused: the only layer takes S from s0
        else:
            ctx = e.unsqueeze(1).expand(b, t, t, e.shape[-1])  # problem t, token i
            weight = (counts[None, :] < counts[:, None]).to(xs.dtype)  # (T, T): token i is context of problem t
        return self._run(ctx, qry, scale[:, None, None], weight=weight, s0=s0)
