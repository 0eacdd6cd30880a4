"""Base classes and registry of the batched reference learners (pure torch, float64 inside).

Every algorithm is a :class:`mesaopt.learner.Learner`: ``alg(ctx_x (B,N,d), ctx_y (B,N), qry_x (B,Q,d)) -> (B,Q)``
with ``prefix(xs (B,T,d), ys (B,T)) -> (B,T)`` (prediction at t from examples 0..t-1), ``name``,
``hparams()`` and ``spec()``; ``mesaopt.algorithms.build(spec)`` rebuilds it from its spec.
Linear learners (:class:`LinearAlgorithm`) also have ``fit(ctx_x, ctx_y) -> w (B, d)``.
Internally everything is computed in float64 and cast back to the input dtype.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from mesaopt.config import check_float, check_int  # noqa: F401 - re-exported for the algorithms
from mesaopt.errors import ConfigError
from mesaopt.learner import check_learner_inputs, check_prefix_inputs
from mesaopt.registry import Registry

REGISTRY: Registry[type[Algorithm]] = Registry("algorithm kind must be one of {names}, got {name!r}")

# Budget (number of float64 elements) of one chunk of the masked prefix expansion (B*T problems of size (T, d)).
PREFIX_CHUNK_ELEMS = 1 << 23


def register(cls: type[Algorithm]) -> type[Algorithm]:
    """Class decorator: make an algorithm buildable from ``{"kind": cls.kind, **hparams}``."""
    return REGISTRY.register(cls)


def build(spec: dict) -> Algorithm:
    """Build an algorithm from ``{"kind": ..., **hparams}`` (e.g. ``{"kind": "gd", "steps": 3, "lr": 0.5}``)."""
    if not isinstance(spec, dict):
        raise ConfigError(f"algorithm spec must be a dict with a 'kind' key, got {type(spec).__name__}")
    try:
        return REGISTRY.build(spec)
    except TypeError as e:
        raise ConfigError(f"bad hyper-parameters for algorithm {spec.get('kind')!r}: {e}") from None


def kinds() -> list[str]:
    """Names of all algorithm kinds."""
    return REGISTRY.names()


# ---------------------------------------------------------------- hyper-parameter checks (one-line ConfigError)
def as_matrix(name: str, value: Any, rows: int | None = None, cols: int | None = None) -> torch.Tensor:
    """A float64 CPU matrix from a tensor / nested list; ConfigError if not 2-D, finite and of the given shape."""
    try:
        t = torch.as_tensor(value, dtype=torch.float64).detach().cpu().clone()
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(f"{name} must be a 2-D array of numbers, got {type(value).__name__}") from None
    if t.dim() != 2 or (rows is not None and t.shape[0] != rows) or (cols is not None and t.shape[1] != cols):
        want = f"({rows if rows is not None else 'M'}, {cols if cols is not None else 'd'})"
        raise ConfigError(f"{name} must have shape {want}, got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ConfigError(f"{name} must contain only finite numbers")
    return t


# ---------------------------------------------------------------- masked prefix expansion
def prefix_problems(xs: torch.Tensor, ys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Expand (B,T,d),(B,T) into B*T zero-padded problems: X (B*T,T,d), Y (B*T,T), counts n (B*T,).

    Problem ``b*T + t`` holds examples 0..t-1 of sequence b (rows >= t are zero) and ``n = t``.
    """
    b, t, d = xs.shape
    mask = torch.tril(torch.ones(t, t, dtype=xs.dtype, device=xs.device), diagonal=-1)  # [t, i] = 1 iff i < t
    xe = (xs.unsqueeze(1) * mask.unsqueeze(0).unsqueeze(-1)).reshape(b * t, t, d)
    ye = (ys.unsqueeze(1) * mask.unsqueeze(0)).reshape(b * t, t)
    n = torch.arange(t, dtype=xs.dtype, device=xs.device).repeat(b)
    return xe, ye, n


def chunked_prefix(fn, xs: torch.Tensor, ys: torch.Tensor, budget: int = PREFIX_CHUNK_ELEMS) -> torch.Tensor:
    """Run ``fn(X (b*T,T,d), Y (b*T,T), n (b*T,)) -> (b*T, ...)`` on all prefixes, chunked over B -> (B, T, ...)."""
    b, t, d = xs.shape
    per_seq = max(1, t * t * max(d, 1))
    chunk = max(1, budget // per_seq)
    outs = []
    for s in range(0, b, chunk):
        xe, ye, n = prefix_problems(xs[s : s + chunk], ys[s : s + chunk])
        out = fn(xe, ye, n)
        outs.append(out.reshape(xe.shape[0] // t, t, *out.shape[1:]))
    return torch.cat(outs, dim=0)


def full_counts(x: torch.Tensor) -> torch.Tensor:
    """Counts n (B,) = N for an unmasked context x (B, N, d)."""
    return torch.full((x.shape[0],), float(x.shape[1]), dtype=x.dtype, device=x.device)


def check_fit_inputs(ctx_x: torch.Tensor, ctx_y: torch.Tensor) -> None:
    """Raise ShapeError unless ctx_x (B, N, d) and ctx_y (B, N) fit together."""
    check_learner_inputs(ctx_x, ctx_y, ctx_x[:, :0] if ctx_x.dim() == 3 else ctx_x)


def _f64(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float64)


# ---------------------------------------------------------------- base classes
class Algorithm:
    """Base of every reference learner: ``__call__``, ``prefix``, ``name``, ``hparams()``, ``spec()``."""

    kind: ClassVar[str] = "base"

    @property
    def name(self) -> str:
        """Short stable name used in metric keys (e.g. ``ols``, ``gd``)."""
        return self.kind

    def hparams(self) -> dict:
        """JSON-able constructor arguments."""
        return {}

    def spec(self) -> dict:
        """``{"kind": ..., **hparams()}``; ``mesaopt.algorithms.build(spec)`` rebuilds this algorithm."""
        return {"kind": self.kind, **self.hparams()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hparams().items())
        return f"{type(self).__name__}({args})"

    def __call__(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> torch.Tensor:
        """ctx_x (B, N, d), ctx_y (B, N), qry_x (B, Q, d) -> predictions (B, Q)."""
        check_learner_inputs(ctx_x, ctx_y, qry_x)
        self._check_ready()
        out = self._predict(_f64(ctx_x), _f64(ctx_y), _f64(qry_x))
        return out.to(qry_x.dtype)

    def prefix(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """xs (B, T, d), ys (B, T) -> (B, T): prediction at t from examples 0..t-1 (one batched pass)."""
        check_prefix_inputs(xs, ys)
        self._check_ready()
        return self._prefix(_f64(xs), _f64(ys)).to(xs.dtype)

    # subclasses implement these on float64 tensors
    def _predict(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _prefix(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _check_ready(self) -> None:
        """Raise ConfigError if hyper-parameters still need fitting."""


class LinearAlgorithm(Algorithm):
    """A learner that fits a weight vector w (B, d) and predicts w^T x_q.

    Subclasses implement ``_fit_masked(X (B,N,d), Y (B,N), n (B,)) -> w (B,d)`` in float64 for zero-padded
    contexts with ``n`` valid rows (the default ``prefix`` runs it on all B*T prefixes at once), and may
    override ``_prefix_weights`` with a faster recursion.
    """

    def fit(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor) -> torch.Tensor:
        """ctx_x (B, N, d), ctx_y (B, N) -> fitted weights w (B, d)."""
        check_fit_inputs(ctx_x, ctx_y)
        self._check_ready()
        return self._fit(_f64(ctx_x), _f64(ctx_y)).to(ctx_x.dtype)

    def prefix_weights(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """xs (B, T, d), ys (B, T) -> W (B, T, d): weights fitted on examples 0..t-1 (row t)."""
        check_prefix_inputs(xs, ys)
        self._check_ready()
        return self._prefix_weights(_f64(xs), _f64(ys)).to(xs.dtype)

    def _fit(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self._fit_masked(x, y, full_counts(x))

    def _fit_masked(self, x: torch.Tensor, y: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _prefix_weights(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        return chunked_prefix(self._fit_masked, xs, ys)

    def _predict(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> torch.Tensor:
        return (qry_x * self._fit(ctx_x, ctx_y).unsqueeze(1)).sum(-1)  # elementwise: no per-task GEMM calls

    def _prefix(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        return torch.einsum("btd,btd->bt", xs, self._prefix_weights(xs, ys))
