"""The Learner contract: a learner maps a context (ctx_x, ctx_y) to predictions at query points."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from mesaopt.errors import ShapeError


@runtime_checkable
class Learner(Protocol):
    """ctx_x (B, N, d), ctx_y (B, N), qry_x (B, Q, d) -> predictions (B, Q); queries never see each other."""

    def __call__(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> torch.Tensor: ...


def check_learner_inputs(ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> None:
    """Raise ShapeError unless ctx_x (B, N, d), ctx_y (B, N), qry_x (B, Q, d) fit together."""
    if ctx_x.dim() != 3 or ctx_y.dim() != 2 or qry_x.dim() != 3:
        raise ShapeError(
            f"expected ctx_x (B, N, d), ctx_y (B, N), qry_x (B, Q, d); got {tuple(ctx_x.shape)}, "
            f"{tuple(ctx_y.shape)}, {tuple(qry_x.shape)}"
        )
    b, n, d = ctx_x.shape
    if ctx_y.shape != (b, n) or qry_x.shape[0] != b or qry_x.shape[2] != d:
        raise ShapeError(
            f"shapes do not fit: ctx_x {tuple(ctx_x.shape)}, ctx_y {tuple(ctx_y.shape)} "
            f"(want ({b}, {n})), qry_x {tuple(qry_x.shape)} (want ({b}, Q, {d}))"
        )


def check_prefix_inputs(xs: torch.Tensor, ys: torch.Tensor) -> None:
    """Raise ShapeError unless xs (B, T, d) and ys (B, T) fit together."""
    if xs.dim() != 3 or ys.dim() != 2 or xs.shape[:2] != ys.shape:
        raise ShapeError(f"expected xs (B, T, d) and ys (B, T); got {tuple(xs.shape)}, {tuple(ys.shape)}")


def prefix_by_solves(learner: Learner, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Reference prefix (B, T): prediction at t from examples 0..t-1, one call per t (slow; for tests)."""
    check_prefix_inputs(xs, ys)
    preds = [learner(xs[:, :t], ys[:, :t], xs[:, t : t + 1])[:, 0] for t in range(xs.shape[1])]
    return torch.stack(preds, dim=1)


def predict_prefix(learner: Learner, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Prefix predictions (B, T) via the learner's own ``prefix`` if it has one, else by solves."""
    fn = getattr(learner, "prefix", None)
    if callable(fn):
        return fn(xs, ys)
    return prefix_by_solves(learner, xs, ys)
