"""Energy-based transformer (EBT, Gladstone et al. 2025, arXiv 2507.02092) for in-context regression.

A transformer reads the context tokens ``[x_i; y_i]`` and one candidate token ``[x_q; ŷ]`` per query and
returns a scalar energy ``E(ŷ | context, x_q)``. A prediction is made by gradient descent on ŷ
("System 2 thinking")::

    ŷ_0 = init (zeros or N(0, init_std²)),   ŷ_{s+1} = ŷ_s + ε_s − α · clamp(∂E/∂ŷ (ŷ_s + ε_s))

with a learnable step size α (clamped to [1e-4, alpha_max]), optional Langevin noise ε_s ~ N(0, σ²) and the
optional gradient clamp of the paper's code (``|α·∂E/∂ŷ| <= max_step_change``). Training differentiates
through the unrolled descent (``create_graph=True`` second-order gradients) to the predictions' MSE, with
the paper's stabilisers: a random number of extra steps, a random step size in [α/r, α·r] per query,
Langevin noise, detaching ŷ between steps (the paper's default; ``detach_steps=False`` gives the full
unroll) and an optional replay buffer of earlier final predictions used as initial guesses.
The paper's loss averages the per-step losses (``loss_steps="all"``); ``"final"`` uses the last step only.

Attention layout: context tokens attend to the context only (bidirectionally) and every query token
attends to the context and to itself, so queries never see each other and the context's keys/values are
computed once per prediction and reused at every descent step and for every candidate. No positional
encoding: the model is permutation invariant in the context and accepts any context length.

Self-verification: with ``n_samples=K`` every query starts from K random initial guesses; with
``self_verify=True`` the final candidate of lowest energy is kept, otherwise the K finals are averaged.

``EBTFeedForward`` (kind ``ebt_ff``) is the same backbone read out directly: query token ``[x; 0]``, the
head output is the prediction (the "standard transformer" of equal size used as the baseline).
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from mesaopt.errors import ConfigError, ShapeError
from mesaopt.learner import check_learner_inputs
from mesaopt.models import register
from mesaopt.models.ebt_backbone import _Backbone, hook_names
from mesaopt.models.hooks import HookedMixin, hook_tree
from mesaopt.models.pretrained import PretrainedMixin
from mesaopt.models.tokens import concat_tokens

__all__ = ["EBT", "EBTFeedForward", "EBTOutput", "ReplayBuffer", "hook_names"]

InitKind = Literal["zeros", "noise"]


def _check_size(d: int, dim: int, layers: int, heads: int, mlp_ratio: int) -> None:
    for name, val in (("d", d), ("dim", dim), ("layers", layers), ("heads", heads), ("mlp_ratio", mlp_ratio)):
        if not isinstance(val, int) or val < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {val!r}")


def _tokens(ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Concat tokens split into context (B,N,d+1) and query ``[x; 0]`` (B,Q,d+1) parts."""
    tok = concat_tokens(ctx_x, ctx_y, qry_x)
    n = ctx_x.shape[1]
    return tok[:, :n], tok[:, n:]


class EBTOutput(NamedTuple):
    """Prediction (B,Q); with ``return_trajectory``: ŷ after each step (S+1,B,Q) and their energies (S+1,B,Q)."""

    pred: torch.Tensor
    trajectory: torch.Tensor | None = None
    energies: torch.Tensor | None = None


@register
class EBT(HookedMixin, PretrainedMixin, nn.Module):
    """Energy-based transformer learner: (B,N,d), (B,N), (B,Q,d) -> (B,Q) by S steps of descent on E(ŷ)."""

    kind: ClassVar[str] = "ebt"

    def __init__(self, d: int, dim: int = 64, layers: int = 2, heads: int = 4, mlp_ratio: int = 4,
                 steps: int = 4, alpha_init: float = 0.5, alpha_learnable: bool = True, alpha_max: float = 10.0,
                 init: InitKind = "noise", init_std: float = 1.0, langevin_std: float = 0.0,
                 rand_steps: int = 0, rand_alpha_scale: float = 1.0, max_step_change: float | None = None,
                 detach_steps: bool = True, loss_steps: Literal["all", "final"] = "all") -> None:
        super().__init__()
        _check_size(d, dim, layers, heads, mlp_ratio)
        if not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"steps must be an integer >= 1, got {steps!r}")
        if not isinstance(rand_steps, int) or rand_steps < 0:
            raise ConfigError(f"rand_steps must be an integer >= 0, got {rand_steps!r}")
        if not (math.isfinite(alpha_init) and 1e-4 <= alpha_init <= alpha_max):
            raise ConfigError(f"alpha_init must be in [1e-4, alpha_max={alpha_max}], got {alpha_init!r}")
        if init not in ("zeros", "noise"):
            raise ConfigError(f"init must be one of zeros, noise; got {init!r}")
        if loss_steps not in ("all", "final"):
            raise ConfigError(f"loss_steps must be one of all, final; got {loss_steps!r}")
        for name, val in (("init_std", init_std), ("langevin_std", langevin_std)):
            if not (math.isfinite(val) and val >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0, got {val!r}")
        if not (math.isfinite(rand_alpha_scale) and rand_alpha_scale >= 1):
            raise ConfigError(f"rand_alpha_scale must be >= 1 (1 = no randomisation), got {rand_alpha_scale!r}")
        if max_step_change is not None and not (math.isfinite(max_step_change) and max_step_change > 0):
            raise ConfigError(f"max_step_change must be > 0 or None, got {max_step_change!r}")
        self._spec = {"kind": self.kind, "d": d, "dim": dim, "layers": layers, "heads": heads,
                      "mlp_ratio": mlp_ratio, "steps": steps, "alpha_init": float(alpha_init),
                      "alpha_learnable": bool(alpha_learnable), "alpha_max": float(alpha_max), "init": init,
                      "init_std": float(init_std), "langevin_std": float(langevin_std), "rand_steps": rand_steps,
                      "rand_alpha_scale": float(rand_alpha_scale),
                      "max_step_change": None if max_step_change is None else float(max_step_change),
                      "detach_steps": bool(detach_steps), "loss_steps": loss_steps}
        self.d, self.steps, self.init, self.init_std = d, steps, init, float(init_std)
        self.langevin_std, self.rand_steps, self.rand_alpha_scale = float(langevin_std), rand_steps, rand_alpha_scale
        self.alpha_max, self.max_step_change = float(alpha_max), max_step_change
        self.detach_steps, self.loss_steps = bool(detach_steps), loss_steps
        self.backbone = _Backbone(d, dim, layers, heads, mlp_ratio)
        self.hook_points = hook_tree(hook_names(layers))
        self.alpha_raw = nn.Parameter(torch.tensor(float(alpha_init)), requires_grad=bool(alpha_learnable))

    def spec(self) -> dict:
        """JSON-able constructor arguments plus ``"kind"``."""
        return dict(self._spec)

    @property
    def alpha(self) -> torch.Tensor:
        """The step size α, clamped to [1e-4, alpha_max] (scalar tensor)."""
        return self.alpha_raw.clamp(1e-4, self.alpha_max)

    # ----------------------------------------------------------------------------------------------- energy
    def _check(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> None:
        check_learner_inputs(ctx_x, ctx_y, qry_x)
        if ctx_x.shape[2] != self.d:
            raise ShapeError(f"ctx_x has d={ctx_x.shape[2]} but the model was built with d={self.d}")

    def _energy(self, cache: list, qry_tok: torch.Tensor, yhat: torch.Tensor) -> torch.Tensor:
        """Energies (B,Q) of candidates ``yhat`` (B,Q) put into the y-slot of the query tokens."""
        tok = qry_tok + F.pad(yhat.unsqueeze(-1), (qry_tok.shape[-1] - 1, 0))
        return self.backbone.read_queries(cache, tok, self._tree())

    def energy(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor,
               yhat: torch.Tensor) -> torch.Tensor:
        """E(ŷ | context, x_q): (B,N,d), (B,N), (B,Q,d), ŷ (B,Q) -> energies (B,Q)."""
        self._check(ctx_x, ctx_y, qry_x)
        if yhat.shape != qry_x.shape[:2]:
            raise ShapeError(f"yhat must have shape {tuple(qry_x.shape[:2])} (B, Q), got {tuple(yhat.shape)}")
        ctx_tok, qry_tok = _tokens(ctx_x, ctx_y, qry_x)
        return self._energy(self.backbone.encode_context(ctx_tok, self._tree()), qry_tok, yhat)

    def energy_grad(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor, yhat: torch.Tensor,
                    create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(E (B,Q), ∂E/∂ŷ (B,Q)) at candidates ŷ (B,Q); queries are independent so one backward suffices."""
        with torch.enable_grad():
            y = yhat if yhat.requires_grad else yhat.detach().requires_grad_(True)
            e = self.energy(ctx_x, ctx_y, qry_x, y)
            (g,) = torch.autograd.grad(e.sum(), y, create_graph=create_graph)
        return e, g

    # ---------------------------------------------------------------------------------------------- descent
    def _descend(self, cache: list, qry_tok: torch.Tensor, y0: torch.Tensor, steps: int, alpha: torch.Tensor,
                 noise_std: float, generator: torch.Generator | None, create_graph: bool, detach_steps: bool,
                 final_energy: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Run ``steps`` descent steps from y0 (B,Q); return all iterates [S+1 × (B,Q)] and energies at them."""
        ys, es = [y0], []
        y = y0
        for _ in range(steps):
            if detach_steps or not y.requires_grad:
                y = y.detach().requires_grad_(True)
            if noise_std > 0:
                y = y + noise_std * torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
            e = self._energy(cache, qry_tok, y)
            (g,) = torch.autograd.grad(e.sum(), y, create_graph=create_graph)
            step = alpha * g
            if self.max_step_change is not None:
                step = step.clamp(-self.max_step_change, self.max_step_change)
            y = y - step
            es.append(e if create_graph else e.detach())
            ys.append(y if create_graph else y.detach())
        if final_energy:
            e = self._energy(cache, qry_tok, ys[-1])
            es.append(e if create_graph else e.detach())
        return ys, es

    def initial_guess(self, shape: tuple[int, ...], like: torch.Tensor, init: InitKind | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """Initial candidates of ``shape``: zeros, or N(0, init_std²) drawn from ``generator``."""
        kind = init or self.init
        if kind == "zeros":
            return like.new_zeros(shape)
        if kind == "noise":
            return self.init_std * torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)
        raise ConfigError(f"init must be one of zeros, noise; got {kind!r}")

    def predict(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor, steps: int | None = None,
                n_samples: int = 1, self_verify: bool = True, init: InitKind | torch.Tensor | None = None,
                noise_std: float = 0.0, generator: torch.Generator | None = None,
                return_trajectory: bool = False, create_graph: bool = False) -> torch.Tensor | EBTOutput:
        """System-2 inference: (B,N,d), (B,N), (B,Q,d) -> ŷ (B,Q) after ``steps`` (default: trained) steps.

        ``init``: "zeros" | "noise" | a tensor (B,Q) of initial guesses (then ``n_samples`` must be 1).
        ``n_samples`` K > 1: K initial guesses per query (init "noise" unless given); ``self_verify`` keeps the
        final candidate of lowest energy, otherwise the K finals are averaged. ``noise_std``: Langevin noise.
        ``return_trajectory``: an EBTOutput with the (selected) iterates (S+1,B,Q) and their energies (S+1,B,Q).
        ``create_graph``: keep the whole descent differentiable w.r.t. the inputs and weights (e.g. for the
        sensitivity dŷ/dx_q of ``mesaopt.analysis.metrics``); by default everything returned is detached.
        """
        self._check(ctx_x, ctx_y, qry_x)
        s = self.steps if steps is None else steps
        if not isinstance(s, int) or s < 0:
            raise ConfigError(f"steps must be an integer >= 0, got {steps!r}")
        if not isinstance(n_samples, int) or n_samples < 1:
            raise ConfigError(f"n_samples must be an integer >= 1, got {n_samples!r}")
        if not (math.isfinite(noise_std) and noise_std >= 0):
            raise ConfigError(f"noise_std must be a finite number >= 0, got {noise_std!r}")
        b, q = qry_x.shape[:2]
        k = n_samples
        if isinstance(init, torch.Tensor):
            if init.shape != (b, q):
                raise ShapeError(f"init must have shape {(b, q)} (B, Q), got {tuple(init.shape)}")
            if k != 1:
                raise ConfigError("n_samples must be 1 when init is a tensor of initial guesses")
            y0 = init.to(ctx_x.dtype).detach()
        else:
            kind = init if init is not None else ("noise" if k > 1 else self.init)
            y0 = self.initial_guess((b, k * q), ctx_x, kind, generator)
        with torch.enable_grad():
            ctx_tok, qry_tok = _tokens(ctx_x, ctx_y, qry_x)
            with torch.set_grad_enabled(create_graph):
                cache = self.backbone.encode_context(ctx_tok, self._tree())
            qry_rep = qry_tok.repeat(1, k, 1)  # (B, K*Q, d+1); sample j of query i sits at j*Q + i
            alpha = self.alpha if create_graph else self.alpha.detach()
            ys, es = self._descend(cache, qry_rep, y0, s, alpha, noise_std, generator,
                                   create_graph=create_graph, detach_steps=not create_graph,
                                   final_energy=return_trajectory or (k > 1 and self_verify))
        traj = torch.stack(ys).view(s + 1, b, k, q)
        if k == 1:
            sel = traj[:, :, 0]
            e_sel = torch.stack(es).view(s + 1, b, q) if return_trajectory else None
        elif self_verify:
            e_all = torch.stack(es).view(s + 1, b, k, q)
            best = e_all[-1].argmin(dim=1, keepdim=True)  # (B, 1, Q)
            sel = traj.gather(2, best.unsqueeze(0).expand(s + 1, b, 1, q)).squeeze(2)
            e_sel = e_all.gather(2, best.unsqueeze(0).expand(s + 1, b, 1, q)).squeeze(2)
        else:
            sel = traj.mean(dim=2)
            e_sel = torch.stack(es).view(s + 1, b, k, q).mean(dim=2) if return_trajectory else None
        if return_trajectory:
            return EBTOutput(sel[-1], sel, e_sel)
        return sel[-1]

    # --------------------------------------------------------------------------------------------- training
    def unroll(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor,
               init: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Training unroll with the paper's randomisation: iterates [S+1 × (B,Q)] and energies, differentiable.

        S = steps + U{0..rand_steps}; α per query ~ U[α/r, α·r] (r = rand_alpha_scale); Langevin noise
        langevin_std before each step; ŷ detached between steps if ``detach_steps``; ``init`` (B,Q) overrides
        the initial guesses (e.g. from a replay buffer). Draws come from ``generator`` (global RNG if None).
        """
        self._check(ctx_x, ctx_y, qry_x)
        b, q = qry_x.shape[:2]
        if init is not None and init.shape != (b, q):
            raise ShapeError(f"init must have shape {(b, q)} (B, Q), got {tuple(init.shape)}")
        s = self.steps
        if self.rand_steps > 0:
            s += int(torch.randint(0, self.rand_steps + 1, (1,), generator=generator).item())
        alpha = self.alpha
        if self.rand_alpha_scale != 1.0:
            r = self.rand_alpha_scale
            u = torch.rand((b, 1), generator=generator, device=ctx_x.device, dtype=ctx_x.dtype)
            alpha = alpha / r + u * (alpha * r - alpha / r)
        y0 = init.detach().to(ctx_x.dtype) if init is not None else self.initial_guess((b, q), ctx_x, None, generator)
        with torch.enable_grad():
            ctx_tok, qry_tok = _tokens(ctx_x, ctx_y, qry_x)
            cache = self.backbone.encode_context(ctx_tok, self._tree())
            return self._descend(cache, qry_tok, y0, s, alpha, self.langevin_std, generator, create_graph=True,
                                 detach_steps=self.detach_steps, final_energy=False)

    def loss(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor, qry_y: torch.Tensor,
             init: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Training loss (MSE of the iterates vs qry_y (B,Q), averaged over steps or final only) and info.

        info: ``final`` (B,Q) detached final predictions, ``first_mse``/``final_mse`` (detached), ``steps``.
        """
        if qry_y.shape != qry_x.shape[:2]:
            raise ShapeError(f"qry_y must have shape {tuple(qry_x.shape[:2])} (B, Q), got {tuple(qry_y.shape)}")
        ys, _ = self.unroll(ctx_x, ctx_y, qry_x, init, generator)
        mses = [F.mse_loss(y, qry_y) for y in ys[1:]]
        loss = mses[-1] if self.loss_steps == "final" else torch.stack(mses).mean()
        info = {"final": ys[-1].detach(), "first_mse": mses[0].detach(), "final_mse": mses[-1].detach(),
                "steps": torch.tensor(len(mses))}
        return loss, info

    def forward(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> torch.Tensor:
        """(B,N,d), (B,N), (B,Q,d) -> (B,Q): training mode = randomised differentiable unroll, else ``predict``."""
        if self.training:
            return self.unroll(ctx_x, ctx_y, qry_x)[0][-1]
        return self.predict(ctx_x, ctx_y, qry_x)


@register
class EBTFeedForward(HookedMixin, PretrainedMixin, nn.Module):
    """The EBT backbone read out directly (a standard transformer): (B,N,d), (B,N), (B,Q,d) -> (B,Q)."""

    kind: ClassVar[str] = "ebt_ff"

    def __init__(self, d: int, dim: int = 64, layers: int = 2, heads: int = 4, mlp_ratio: int = 4) -> None:
        super().__init__()
        _check_size(d, dim, layers, heads, mlp_ratio)
        self._spec = {"kind": self.kind, "d": d, "dim": dim, "layers": layers, "heads": heads,
                      "mlp_ratio": mlp_ratio}
        self.d = d
        self.backbone = _Backbone(d, dim, layers, heads, mlp_ratio)
        self.hook_points = hook_tree(hook_names(layers))

    def spec(self) -> dict:
        """JSON-able constructor arguments plus ``"kind"``."""
        return dict(self._spec)

    def forward(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> torch.Tensor:
        """Prediction = head output at the query token ``[x; 0]``: (B,N,d), (B,N), (B,Q,d) -> (B,Q)."""
        check_learner_inputs(ctx_x, ctx_y, qry_x)
        if ctx_x.shape[2] != self.d:
            raise ShapeError(f"ctx_x has d={ctx_x.shape[2]} but the model was built with d={self.d}")
        ctx_tok, qry_tok = _tokens(ctx_x, ctx_y, qry_x)
        tree = self._tree()
        return self.backbone.read_queries(self.backbone.encode_context(ctx_tok, tree), qry_tok, tree)


class ReplayBuffer:
    """FIFO buffer of earlier tasks and the EBT's final predictions, reused as initial guesses (paper §C).

    Stores ctx_x (M,N,d), ctx_y (M,N), qry_x (M,Q,d), qry_y (M,Q), final ŷ (M,Q); all batches must share N, Q.
    """

    def __init__(self, max_size: int) -> None:
        if not isinstance(max_size, int) or max_size < 1:
            raise ConfigError(f"replay buffer max_size must be an integer >= 1, got {max_size!r}")
        self.max_size = max_size
        self.data: tuple[torch.Tensor, ...] | None = None

    def __len__(self) -> int:
        return 0 if self.data is None else self.data[0].shape[0]

    def add(self, *tensors: torch.Tensor) -> None:
        """Append (ctx_x, ctx_y, qry_x, qry_y, yhat_final) batches (detached), keeping the newest max_size."""
        new = tuple(t.detach() for t in tensors)
        if self.data is not None and any(a.shape[1:] != b.shape[1:] for a, b in zip(self.data, new, strict=True)):
            raise ShapeError("replay buffer batches must share their context and query sizes")
        cat = new if self.data is None else tuple(torch.cat([a, b]) for a, b in zip(self.data, new, strict=True))
        self.data = tuple(t[-self.max_size:] for t in cat)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """``n`` stored rows drawn uniformly with replacement: (ctx_x, ctx_y, qry_x, qry_y, yhat_final)."""
        if self.data is None:
            raise ConfigError("replay buffer is empty; add a batch before sampling")
        idx = torch.randint(0, len(self), (n,), generator=generator)
        return tuple(t[idx.to(t.device)] for t in self.data)
