"""Baselines of Garg et al. (k-nearest neighbours, averaging) and the finite-pool posterior mean (dMMSE).

* ``KNN(k)``: mean y of the k nearest context points (Euclidean, k capped at N; empty context -> 0).
  Prefix: one (B, T, T) masked distance matrix and a top-k, O(B T^2 d).
* ``Averaging()``: w = (1/N) sum_i y_i x_i (Garg's "averaging"; = one GD step with lr = 1). Prefix by
  cumulative sums, O(B T d).
* ``DMMSE(pool, noise_std)`` (Raventos et al. 2023): posterior mean of w over a uniform prior on the M
  pool vectors, weights softmax_m(-(1/(2 sigma^2)) sum_j (y_j - w_m^T x_j)^2) (logsumexp-stable);
  sigma = 0: uniform over the minimisers of the squared error (hard argmin). With an empty context it
  predicts with the pool mean (the prior mean), not 0. Prefix by cumulative sums of per-example squared
  errors, O(B T M d) time, chunked over the batch.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from mesaopt.algorithms.base import (
    PREFIX_CHUNK_ELEMS,
    Algorithm,
    LinearAlgorithm,
    as_matrix,
    check_float,
    check_int,
    register,
)
from mesaopt.errors import ConfigError, ShapeError


def exclusive_cumsum(v: torch.Tensor, dim: int) -> torch.Tensor:
    """out[t] = sum_{s < t} v[s] along ``dim`` (out[0] = 0)."""
    c = torch.cumsum(v, dim=dim)
    return torch.cat([torch.zeros_like(c.narrow(dim, 0, 1)), c.narrow(dim, 0, c.shape[dim] - 1)], dim=dim)


@register
class KNN(Algorithm):
    """Mean label of the k nearest context inputs (Euclidean; k capped at N; empty context -> 0)."""

    kind: ClassVar[str] = "knn"

    def __init__(self, k: int = 3) -> None:
        self.k = check_int("k", k, 1)

    def hparams(self) -> dict:
        return {"k": self.k}

    def _predict(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> torch.Tensor:
        b, n, _ = ctx_x.shape
        if n == 0:
            return qry_x.new_zeros(b, qry_x.shape[1])
        dist = torch.cdist(qry_x, ctx_x)  # (B, Q, N)
        idx = dist.topk(min(self.k, n), dim=-1, largest=False).indices
        yy = ctx_y.unsqueeze(1).expand(-1, qry_x.shape[1], -1)
        return torch.gather(yy, 2, idx).mean(-1)

    def _prefix(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        b, t, _ = xs.shape
        dist = torch.cdist(xs, xs)  # [b, s, i]: query s, context i
        valid = torch.tril(torch.ones(t, t, dtype=torch.bool, device=xs.device), diagonal=-1)
        dist = dist.masked_fill(~valid, float("inf"))
        k = min(self.k, t)
        top = dist.topk(k, dim=-1, largest=False)
        ok = torch.isfinite(top.values)
        yy = torch.gather(ys.unsqueeze(1).expand(-1, t, -1), 2, top.indices) * ok
        count = ok.sum(-1)
        return yy.sum(-1) / count.clamp_min(1)


@register
class Averaging(LinearAlgorithm):
    """w = (1/N) sum_i y_i x_i, prediction w^T x_q (Garg et al.'s averaging baseline; empty context -> 0)."""

    kind: ClassVar[str] = "averaging"

    def _fit_masked(self, x: torch.Tensor, y: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bnd,bn->bd", x, y) / n.clamp_min(1.0).unsqueeze(-1)

    def _prefix_weights(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        t = xs.shape[1]
        s = exclusive_cumsum(xs * ys.unsqueeze(-1), dim=1)
        cnt = torch.arange(t, dtype=xs.dtype, device=xs.device).clamp_min(1.0)
        return s / cnt[None, :, None]


def _posterior_weights(err: torch.Tensor, noise_std: float) -> torch.Tensor:
    """Pool weights (..., M) from summed squared errors (..., M): softmax(-err / (2 sigma^2)), or hard argmin."""
    if noise_std > 0:
        return torch.softmax(-err / (2.0 * noise_std**2), dim=-1)
    hit = (err <= err.amin(dim=-1, keepdim=True)).to(err.dtype)
    return hit / hit.sum(-1, keepdim=True)


@register
class DMMSE(LinearAlgorithm):
    """Posterior mean of w over a finite pool (M, d) with Gaussian label noise ``noise_std`` (Raventos et al.)."""

    kind: ClassVar[str] = "dmmse"

    def __init__(self, pool: Any = None, noise_std: float = 0.0) -> None:
        if pool is None:
            raise ConfigError("pool must be an (M, d) matrix of task vectors, got None")
        self.pool = as_matrix("pool", pool)
        if self.pool.shape[0] < 1:
            raise ConfigError("pool must hold at least one task vector (M >= 1)")
        self.noise_std = check_float("noise_std", noise_std, 0.0)

    @classmethod
    def for_task(cls, task) -> DMMSE:
        """The Bayes-optimal learner of a finite-pool ``tasks.LinearRegression`` (its pool and noise_std)."""
        pool = getattr(task, "pool", None)
        if pool is None:
            raise ConfigError("DMMSE.for_task needs a task with a finite pool (task.n_tasks must be set)")
        return cls(pool=pool, noise_std=float(task.noise_std))

    def hparams(self) -> dict:
        return {"pool": self.pool.tolist(), "noise_std": self.noise_std}

    def __repr__(self) -> str:
        return f"DMMSE(pool=<{self.pool.shape[0]}x{self.pool.shape[1]}>, noise_std={self.noise_std!r})"

    def _pool_for(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.pool.shape[1]:
            raise ShapeError(f"pool has d={self.pool.shape[1]} but inputs have d={x.shape[-1]}")
        return self.pool.to(device=x.device, dtype=x.dtype)

    def _fit(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        pool = self._pool_for(x)
        b, n, _ = x.shape
        chunk = max(1, PREFIX_CHUNK_ELEMS // max(1, n * pool.shape[0]))  # bounds the (b, N, M) residuals
        outs = []
        for s in range(0, b, chunk):
            res = y[s : s + chunk].unsqueeze(-1) - torch.einsum("bnd,md->bnm", x[s : s + chunk], pool)
            outs.append(_posterior_weights((res * res).sum(1), self.noise_std) @ pool)
        return torch.cat(outs, dim=0)

    def _fit_masked(self, x: torch.Tensor, y: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        return self._fit(x, y)  # zero rows add zero squared error

    def _prefix_weights(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        pool = self._pool_for(xs)
        b, t, d = xs.shape
        m = pool.shape[0]
        # chunks of <= 2^20 (b, T, M) elements stay cache-sized: the passes below are memory-bound
        chunk = max(1, min(PREFIX_CHUNK_ELEMS, 1 << 20) // max(1, t * m))
        out = xs.new_empty(b, t, d)
        out[:, 0] = pool.mean(0)  # empty context: uniform posterior = the pool mean (also for sigma = 0)
        for s in range(0, b, chunk):
            x, y = xs[s : s + chunk, : t - 1], ys[s : s + chunk, : t - 1]  # example t-1 never enters a prefix
            n = x.shape[0]
            if t == 1:
                break
            e = torch.addmm(y.reshape(-1, 1), x.reshape(-1, d), pool.T, alpha=-1.0).square_()  # (n*(T-1), M)
            err = torch.cumsum(e.view(n, t - 1, m), dim=1)  # row j: examples 0..j = the prefix of position j + 1
            out[s : s + chunk, 1:] = _posterior_weights(err, self.noise_std) @ pool
        return out
