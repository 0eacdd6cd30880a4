"""Token-selection data for attention-as-SVM (Tarzanagh et al. 2023): sequences X, queries z, labels, head v.

A problem holds n sequences X_i (T tokens in R^d), a query z_i per sequence, a label y_i in {-1, +1} and a
fixed linear head v. The one-layer attention model f(X_i) = vᵀ X_iᵀ softmax(X_i W z_i) selects tokens; the
*score* of token t is gamma_it = y_i · vᵀ x_it and the globally optimal token of sequence i is argmax_t gamma_it.
Every tensor may carry extra leading batch dimensions (independent problems): X (..., n, T, d).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from pydantic import Field

from mesaopt.errors import ConfigError, ShapeError
from mesaopt.tasks.base import Task, TaskBatch, check_sample_args

TokenDist = Literal["sphere", "gaussian"]


@dataclass
class SelectionProblem:
    """X (..., n, T, d) tokens, Z (..., n, d) queries, y (..., n) labels ±1, v (..., d) head."""

    X: torch.Tensor
    Z: torch.Tensor
    y: torch.Tensor
    v: torch.Tensor

    def __post_init__(self) -> None:
        X, Z, y, v = self.X, self.Z, self.y, self.v
        if X.dim() < 3:
            raise ShapeError(f"SelectionProblem.X must be (..., n, T, d), got {tuple(X.shape)}")
        batch, (n, _, d) = X.shape[:-3], X.shape[-3:]
        if Z.shape != (*batch, n, d) or y.shape != (*batch, n) or v.shape != (*batch, d):
            raise ShapeError(f"SelectionProblem needs X (..., n, T, d), Z (..., n, d), y (..., n), v (..., d); got "
                             f"X {tuple(X.shape)}, Z {tuple(Z.shape)}, y {tuple(y.shape)}, v {tuple(v.shape)}")

    @property
    def n(self) -> int:
        return self.X.shape[-3]

    @property
    def T(self) -> int:
        return self.X.shape[-2]

    @property
    def d(self) -> int:
        return self.X.shape[-1]

    @property
    def batch_shape(self) -> torch.Size:
        return self.X.shape[:-3]

    def head_values(self) -> torch.Tensor:
        """vᵀ x_it without the label: (..., n, T)."""
        return torch.einsum("...ntd,...d->...nt", self.X, self.v)

    def scores(self) -> torch.Tensor:
        """Token scores gamma_it = y_i · vᵀ x_it: (..., n, T)."""
        return self.y.unsqueeze(-1) * self.head_values()

    def optimal_tokens(self) -> torch.Tensor:
        """Globally optimal token per sequence, argmax_t gamma_it: (..., n) int64."""
        return self.scores().argmax(dim=-1)

    def __getitem__(self, idx: int | slice | torch.Tensor) -> SelectionProblem:
        """Index the leading batch dimension: problem[k] is problem k of a batch."""
        if not self.batch_shape:
            raise ShapeError("SelectionProblem has no batch dimension to index")
        return SelectionProblem(self.X[idx], self.Z[idx], self.y[idx], self.v[idx])

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> SelectionProblem:
        """Cast / move every tensor (labels included)."""
        return SelectionProblem(*(t.to(device=device, dtype=dtype) for t in (self.X, self.Z, self.y, self.v)))


def _draw(shape: tuple[int, ...], dist: str, generator: torch.Generator | None, dtype: torch.dtype) -> torch.Tensor:
    x = torch.randn(shape, generator=generator, dtype=torch.float64)
    if dist == "sphere":
        x = x / x.norm(dim=-1, keepdim=True)
    return x.to(dtype)


def sample_selection(n: int, T: int, d: int, generator: torch.Generator | None = None, batch: int | None = None,
                     dist: TokenDist = "sphere", dtype: torch.dtype = torch.float64) -> SelectionProblem:
    """The papers' generator: x_it, z_i, v ~ N(0, I) (unit-normalised if dist='sphere'), y_i uniform ±1.

    Returns a SelectionProblem with X (n, T, d), or (batch, n, T, d) if ``batch`` is given.
    """
    for name, val in (("n", n), ("T", T), ("d", d)):
        if not isinstance(val, int) or val < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {val!r}")
    if T < 2:
        raise ConfigError(f"T must be >= 2 (a selection needs competing tokens), got {T}")
    if dist not in ("sphere", "gaussian"):
        raise ConfigError(f"dist must be one of ['sphere', 'gaussian'], got {dist!r}")
    if batch is not None and (not isinstance(batch, int) or batch < 1):
        raise ConfigError(f"batch must be None or an integer >= 1, got {batch!r}")
    lead = () if batch is None else (batch,)
    v = _draw((*lead, d), dist, generator, dtype)
    y = (torch.randint(0, 2, (*lead, n), generator=generator) * 2 - 1).to(dtype)
    X = _draw((*lead, n, T, d), dist, generator, dtype)
    Z = _draw((*lead, n, d), dist, generator, dtype)
    return SelectionProblem(X, Z, y, v)


class TokenSelection(Task):
    """Token-selection task family: ``sample(batch_size=n, n_points=T)`` gives xs (n, T, d), ys = scores (n, T).

    ``params`` holds z (n, d), labels (n,), v (d,), opt (n,) and the SelectionProblem under "problem".
    """

    kind: ClassVar[str] = "selection"
    d: int = Field(10, ge=1, description="token dimension")
    dist: TokenDist = Field("sphere", description="token distribution: unit sphere or standard Gaussian")

    def sample(self, batch_size: int, n_points: int, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> TaskBatch:
        """Draw one problem of batch_size sequences with n_points tokens each: xs (B, T, d), ys (B, T)."""
        check_sample_args(batch_size, n_points)
        p = sample_selection(batch_size, n_points, self.d, generator=generator, dist=self.dist, dtype=dtype)
        p = p.to(device=device)
        return TaskBatch(p.X, p.scores(), {"z": p.Z, "labels": p.y, "v": p.v, "opt": p.optimal_tokens(),
                                           "problem": p})


def _register() -> None:
    from mesaopt.tasks import register

    register(TokenSelection)


_register()


def stack_problems(problems: list[SelectionProblem]) -> SelectionProblem:
    """Stack single problems of equal (n, T, d) into one batch: X (len, n, T, d)."""
    if not problems:
        raise ConfigError("stack_problems needs at least one problem")
    shapes = {tuple(p.X.shape) for p in problems}
    if len(shapes) != 1:
        raise ShapeError(f"stack_problems needs problems of one shape, got {sorted(shapes)}")
    return SelectionProblem(*(torch.stack([getattr(p, k) for p in problems]) for k in ("X", "Z", "y", "v")))


def sample_seeded(n: int, T: int, d: int, seed: int, runs: int, dist: TokenDist = "sphere",
                  dtype: torch.dtype = torch.float64) -> SelectionProblem:
    """``runs`` independent problems, problem k drawn from generator(seed, "selection", n, T, d, k): (runs, n, T, d).

    Problem k does not depend on ``runs``, so a smaller run reproduces the first problems of a bigger one.
    """
    from mesaopt.seeding import generator

    return stack_problems([sample_selection(n, T, d, generator(seed, "selection", n, T, d, k), dist=dist, dtype=dtype)
                           for k in range(runs)])
