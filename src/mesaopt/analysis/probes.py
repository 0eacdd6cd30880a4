"""Linear probes of hidden states (Akyürek et al., arXiv 2211.15661, Sec. 4): what does each layer encode?

* ``query_hidden_states(model, ctx_x, ctx_y, qry_x) -> (L+1, B, Q, H)``: the hidden state at every query after
  the embedding and after every layer. GPT (``models.GPT.hidden_states`` on interleaved tokens): the residual
  stream at the query's x-token (each query appended to the context on its own, as in ``GPT.forward``).
  LSA: the query token [x_q; y-slot] of the concat token stream (width d + 1), recomputed from
  ``LSA.matrices()`` with the layer update of ``mesaopt.models.lsa``.
* ``fit_probe`` / ``probe_predict``: closed-form ridge regression with a bias, batched over layers:
  features (L, n, H), targets (n, m) -> W (L, H + 1, m).
* ``probe_r2``: R^2 per layer (and per target coordinate) on a held-out split.
* ``probe_targets``: the task weight vector w, the OLS solution and the 1-step GD solution of each context.
* ``probe_layers``: all of the above for one model and task -> {target: R^2 per layer (L+1,)}.
* ``ProbeReadout`` / ``fit_readout``: per-layer probes *to the label y* as a per-layer read-out of a GPT
  (Fu et al. 2310.17086): a learner with ``forward_layers`` (differentiable in the query) for ``identify``.
"""

from __future__ import annotations

from typing import Any

import torch

from mesaopt.errors import ConfigError, ShapeError
from mesaopt.learner import check_learner_inputs
from mesaopt.models.tokens import fold_queries

__all__ = ["query_hidden_states", "fit_probe", "probe_predict", "r2_score", "probe_r2", "probe_targets",
           "probe_layers", "ProbeReadout", "fit_readout"]


def _lsa_query_states(model: Any, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> torch.Tensor:
    """LSA query tokens after the embedding and every layer: -> (L+1, B, Q, d+1)."""
    kq, pv = model.matrices()
    ctx = torch.cat([ctx_x, ctx_y.unsqueeze(-1)], dim=-1)
    qry = torch.cat([qry_x, qry_x.new_zeros(qry_x.shape[:-1] + (1,))], dim=-1)
    scale = 1.0 / max(ctx.shape[1], 1) if getattr(model, "normalize", True) else 1.0
    out = [qry]
    for layer in range(model.layers):
        s = (ctx.transpose(-1, -2) @ ctx) * scale
        m = torch.einsum("hij,bjk,hkl->bil", pv[layer], s, kq[layer])
        qry = qry + qry @ m.transpose(-1, -2)
        ctx = ctx + ctx @ m.transpose(-1, -2)
        out.append(qry)
    return torch.stack(out)


def query_hidden_states(model: Any, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> torch.Tensor:
    """Hidden state at every query after the embedding and every layer: (B,N,d),(B,N),(B,Q,d) -> (L+1, B, Q, H)."""
    check_learner_inputs(ctx_x, ctx_y, qry_x)
    b, n, _ = ctx_x.shape
    q = qry_x.shape[1]
    with torch.no_grad():
        if hasattr(model, "matrices") and hasattr(model, "layers") and not hasattr(model, "hidden_states"):
            return _lsa_query_states(model, ctx_x, ctx_y, qry_x)
        if not hasattr(model, "hidden_states"):
            raise ConfigError(f"{type(model).__name__} exposes no hidden states (needs hidden_states or LSA matrices)")
        hs = model.hidden_states(*fold_queries(ctx_x, ctx_y, qry_x))  # (L+1, B*Q, 2(N+1), H); query x-token at 2N
        h = hs[:, :, 2 * n]
    return h.reshape(h.shape[0], b, q, h.shape[-1])


def fit_probe(features: torch.Tensor, targets: torch.Tensor, lam: float = 1e-3) -> torch.Tensor:
    """Ridge probe with bias per layer: features (L, n, H), targets (n, m) -> W (L, H+1, m) (float64).

    Minimises ||[F, 1] W - T||^2 + lam * n * ||W[:H]||^2 (the bias is not penalised) in closed form.
    """
    if features.dim() != 3 or targets.dim() != 2 or features.shape[1] != targets.shape[0]:
        raise ShapeError(f"need features (L, n, H) and targets (n, m); got {tuple(features.shape)}, "
                         f"{tuple(targets.shape)}")
    if not lam >= 0:
        raise ConfigError(f"lam must be >= 0, got {lam!r}")
    f = features.to(torch.float64)
    n, h = f.shape[1], f.shape[2]
    fb = torch.cat([f, f.new_ones(f.shape[0], n, 1)], dim=-1)
    a = fb.transpose(1, 2) @ fb
    reg = torch.eye(h + 1, dtype=torch.float64) * lam * n
    reg[h, h] = 0.0
    rhs = fb.transpose(1, 2) @ targets.to(torch.float64).unsqueeze(0)
    return torch.linalg.lstsq(a + reg, rhs).solution


def probe_predict(features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Probe outputs: features (L, n, H), W (L, H+1, m) -> (L, n, m)."""
    f = features.to(torch.float64)
    return f @ weights[:, :-1] + weights[:, -1:].expand(-1, 1, -1)


def r2_score(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Coefficient of determination per output: pred (..., n, m), target (n, m) -> (..., m)."""
    t = target.to(torch.float64)
    ss_res = ((pred.to(torch.float64) - t) ** 2).sum(-2)
    ss_tot = ((t - t.mean(0)) ** 2).sum(0).clamp_min(1e-30)
    return 1.0 - ss_res / ss_tot


def probe_r2(features: torch.Tensor, targets: torch.Tensor, train_frac: float = 0.7, lam: float = 1e-3,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Held-out R^2 of a ridge probe per layer and target coordinate: (L, n, H), (n, m) -> (L, m)."""
    n = features.shape[1]
    if not 0.0 < train_frac < 1.0 or int(n * train_frac) < 2 or n - int(n * train_frac) < 2:
        raise ConfigError(f"train_frac must split the {n} examples into two parts of >= 2, got {train_frac}")
    perm = torch.randperm(n, generator=generator)
    tr, te = perm[: int(n * train_frac)], perm[int(n * train_frac):]
    w = fit_probe(features[:, tr], targets[tr], lam)
    return r2_score(probe_predict(features[:, te], w), targets[te])


def probe_targets(ctx_x: torch.Tensor, ctx_y: torch.Tensor, w: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Targets (B, d) to probe for: the task's w (if given), the OLS solution, the 1-step GD (lr 1) solution."""
    from mesaopt.algorithms import GD, OLS

    out = {}
    if w is not None:
        out["w"] = w.to(torch.float64)
    out["ols"] = OLS().fit(ctx_x.double(), ctx_y.double())
    out["gd1"] = GD(steps=1, lr=1.0).fit(ctx_x.double(), ctx_y.double())
    return out


def probe_layers(model: Any, task: Any, n_context: int, batch_size: int = 2048, seed: int = 0,
                 train_frac: float = 0.7, lam: float = 1e-3) -> dict[str, list[float]]:
    """Mean held-out R^2 per layer (embedding first: L+1 values) of probes for w, OLS and GD-1 weights."""
    from mesaopt.seeding import generator

    b = task.sample(batch_size, n_context + 1, generator(seed, "probe-data"))
    cx, cy, qx, _ = b.split(n_context)
    try:
        dtype = next(model.parameters()).dtype
    except (AttributeError, StopIteration):
        dtype = torch.float32
    hs = query_hidden_states(model, cx.to(dtype), cy.to(dtype), qx.to(dtype))[:, :, 0]  # (L+1, B, H)
    out = {}
    for name, t in probe_targets(cx, cy, b.params.get("w")).items():
        r2 = probe_r2(hs, t, train_frac, lam, generator(seed, "probe-split", name))
        out[name] = r2.mean(-1).tolist()
    return out


class ProbeReadout(torch.nn.Module):
    """Per-layer probe outputs on a model's query hidden states (``hidden_states``): a Learner with forward_layers."""

    def __init__(self, model: Any, weights: torch.Tensor) -> None:
        super().__init__()
        if not callable(getattr(model, "hidden_states", None)):
            raise ConfigError(f"readout 'probe' needs a model with hidden_states (e.g. GPT); "
                              f"{type(model).__name__} has none (use readout 'model')")
        self.model, self.weights = model, weights  # weights (L, H+1, 1): probes of layers 1..L

    def forward_layers(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> torch.Tensor:
        """(B,N,d),(B,N),(B,Q,d) -> (L, B, Q) probe outputs after every layer (differentiable in qry_x)."""
        check_learner_inputs(ctx_x, ctx_y, qry_x)
        b, n, _ = ctx_x.shape
        q = qry_x.shape[1]
        h = self.model.hidden_states(*fold_queries(ctx_x, ctx_y, qry_x))[1:, :, 2 * n]  # (L, B*Q, H): query x-token
        w = self.weights.to(h.dtype)
        out = h @ w[:, :-1] + w[:, -1:]
        return out[..., 0].reshape(out.shape[0], b, q)

    def forward(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> torch.Tensor:
        """Prediction of the last layer's probe: (B, Q)."""
        return self.forward_layers(ctx_x, ctx_y, qry_x)[-1]


def fit_readout(model: Any, task: Any, n_context: int, batch_size: int = 4096, seed: int = 0,
                lam: float = 1e-4) -> ProbeReadout:
    """Fit one ridge probe per layer from the query hidden state to y on ``batch_size`` fresh sequences."""
    from mesaopt.seeding import generator

    if not callable(getattr(model, "hidden_states", None)):
        raise ConfigError(f"readout 'probe' needs a model with hidden_states (e.g. GPT); "
                          f"{type(model).__name__} has none (use readout 'model')")
    if batch_size < 2:
        raise ConfigError(f"probe batch_size must be >= 2, got {batch_size}")
    try:
        dtype = next(model.parameters()).dtype
    except (AttributeError, StopIteration):
        dtype = torch.float32
    b = task.sample(batch_size, n_context + 1, generator(seed, "readout-probe"), dtype=dtype)
    cx, cy, qx, qy = b.split(n_context)
    hs = query_hidden_states(model, cx, cy, qx)[1:, :, 0]  # (L, B, H)
    return ProbeReadout(model, fit_probe(hs, qy, lam=lam).to(dtype))
