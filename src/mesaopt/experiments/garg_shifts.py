"""Garg et al. (arXiv 2208.01066) Sec. 4 distribution shifts of noiseless linear regression, as batched samplers.

Every sampler draws ``b`` sequences of ``t`` points in dimension ``d`` with w ~ N(0, I_d) and returns a
``ShiftBatch``: prompts ``xs (R, T, d)``, labels ``ys (R, T)`` and a mask ``scored (R, T)`` of the positions whose
prefix prediction (from examples 0..N-1 of its row) is scored against ``ys``. Shifts of the whole prompt (covariance,
scale, noise) score every position of the ``b`` sequences (R = b). Shifts of the **query** only follow the paper's
evaluation: for each scored N a copy of the sequence keeps context points 0..N-1 and puts the shifted query at
position N (``splice``), so R = b x (number of N) and each row scores one position.

Shift definitions (the paper's Sec. 4 / App. evaluation; names are the metric-key names):

* ``skewed``: x ~ N(0, Sigma), Sigma = U diag(lam) U^T with a random orthogonal U and eigenvalues lam_i
  proportional to 1 / i^2 (i = 1..d), scaled so that trace(Sigma) = d (same E||x||^2 as training).
* ``half_subspace``: x ~ N(0, Sigma) with Sigma of rank d/2 (a random d/2-dim subspace), trace(Sigma) = d.
* ``noisy``: y = w^T x + noise_std * eps, rescaled by sqrt(d / (d + noise_std^2)) so E[y^2] = d as in training.
* ``orthant``: the context points lie in one random orthant (x_i = |z_i| * s, one sign vector s per sequence);
  the query is an unconstrained Gaussian point (the paper's "prompts in a different orthant than the query").
* ``opposite_orthant``: as ``orthant`` but the query lies in the opposite orthant (x_q = -|z| * s).
* ``orthogonal``: the query is orthogonal to the span of the N context points (N < d), with the norm of the
  Gaussian point it was projected from.
* ``same_point``: the query equals one of the N >= 1 context points, chosen uniformly.
* ``scale_x``: every x (context and query) multiplied by a factor c.
* ``scale_y``: every y multiplied by c (equivalently w ~ N(0, c^2 I)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

DTYPE = torch.float32


@dataclass(frozen=True)
class ShiftBatch:
    """Prompts ``xs (R, T, d)``, labels ``ys (R, T)``, ``scored (R, T)`` bool: positions whose prediction counts."""

    xs: torch.Tensor
    ys: torch.Tensor
    scored: torch.Tensor


def _gauss(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64)


def labels(xs: torch.Tensor, w: torch.Tensor, y_scale: float = 1.0) -> torch.Tensor:
    """y = y_scale * <w, x>: xs (R, T, d), w (R, d) -> (R, T)."""
    return y_scale * torch.einsum("rtd,rd->rt", xs, w)


def _whole(xs: torch.Tensor, ys: torch.Tensor) -> ShiftBatch:
    return ShiftBatch(xs.to(DTYPE), ys.to(DTYPE), torch.ones(ys.shape, dtype=torch.bool))


def standard(b: int, t: int, d: int, gen: torch.Generator) -> ShiftBatch:
    """The training distribution (no shift): x ~ N(0, I_d), w ~ N(0, I_d), y = w^T x, every position scored."""
    xs = _gauss(gen, b, t, d)
    return _whole(xs, labels(xs, _gauss(gen, b, d)))


def covariance_transform(eigenvalues: torch.Tensor, gen: torch.Generator, normalize: bool = True) -> torch.Tensor:
    """M = U diag(eigenvalues) U^T (d, d) with U a random orthogonal matrix; x = z M has Cov U diag(e^2) U^T.

    ``normalize``: scale M so that trace(Cov) = d, i.e. multiply by sqrt(d / sum(e^2)).
    """
    d = eigenvalues.shape[0]
    u, _, _ = torch.linalg.svd(_gauss(gen, d, d))
    m = u @ torch.diag(eigenvalues.to(torch.float64)) @ u.T
    if normalize:
        m = m * math.sqrt(d / float((eigenvalues.to(torch.float64) ** 2).sum()))
    return m


def skewed_eigenvalues(d: int) -> torch.Tensor:
    """Square roots (d,) of the skewed covariance's eigenvalue profile: 1 / i, i = 1..d (Cov eigenvalues ~ 1/i^2)."""
    return 1.0 / torch.arange(1, d + 1, dtype=torch.float64)


def half_subspace_eigenvalues(d: int) -> torch.Tensor:
    """(d,): 1 on the first d // 2 directions, 0 elsewhere (x confined to a random d/2-dim subspace)."""
    e = torch.zeros(d, dtype=torch.float64)
    e[: d // 2] = 1.0
    return e


def covariance_shift(b: int, t: int, d: int, gen: torch.Generator, transform: torch.Tensor) -> ShiftBatch:
    """x = z M with z ~ N(0, I_d) and a fixed ``transform`` M (d, d) for context and query; y = w^T x."""
    xs = _gauss(gen, b, t, d) @ transform
    return _whole(xs, labels(xs, _gauss(gen, b, d)))


def scale_x(b: int, t: int, d: int, gen: torch.Generator, factor: float) -> ShiftBatch:
    """Every input scaled: x = factor * z, z ~ N(0, I_d); y = w^T x."""
    return covariance_shift(b, t, d, gen, factor * torch.eye(d, dtype=torch.float64))


def scale_y(b: int, t: int, d: int, gen: torch.Generator, factor: float) -> ShiftBatch:
    """Every label scaled: y = factor * w^T x (w ~ N(0, factor^2 I) in distribution)."""
    xs = _gauss(gen, b, t, d)
    return _whole(xs, labels(xs, _gauss(gen, b, d), factor))


def noisy(b: int, t: int, d: int, gen: torch.Generator, noise_std: float) -> ShiftBatch:
    """y = (w^T x + noise_std * eps) * sqrt(d / (d + noise_std^2)) (label noise, E[y^2] = d kept); x ~ N(0, I)."""
    xs, w = _gauss(gen, b, t, d), _gauss(gen, b, d)
    ys = (labels(xs, w) + noise_std * _gauss(gen, b, t)) * math.sqrt(d / (d + noise_std**2))
    return _whole(xs, ys)


def splice(ctx: torch.Tensor, qry: torch.Tensor, w: torch.Tensor, ns: list[int]) -> ShiftBatch:
    """Rows (K*B): copy k of sequence b has ctx[b, :N_k] then qry[b, N_k:] (N_k = ns[k]); scored at N_k only.

    ctx, qry (B, T, d), w (B, d); the labels of every row are y = w_b^T x.
    """
    b, t, d = ctx.shape
    n = torch.tensor(ns, dtype=torch.long)
    pos = torch.arange(t)
    before = (pos[None, :] < n[:, None])[:, None, :, None]  # (K, 1, T, 1)
    xs = torch.where(before, ctx[None], qry[None]).reshape(len(ns) * b, t, d)
    ws = w[None].expand(len(ns), b, d).reshape(len(ns) * b, d)
    scored = (pos[None, :] == n[:, None])[:, None, :].expand(len(ns), b, t).reshape(len(ns) * b, t)
    return ShiftBatch(xs.to(DTYPE), labels(xs, ws).to(DTYPE), scored.clone())


def orthant(b: int, t: int, d: int, gen: torch.Generator, opposite: bool = False) -> ShiftBatch:
    """Context x_i = |z_i| * s (one random sign vector s (B, 1, d) per sequence: a random orthant).

    Query at N: the unconstrained Gaussian z_N (``opposite=False``, the paper's setting) or -|z_N| * s, the
    opposite orthant. Scored at every N = 0..t-1.
    """
    z = _gauss(gen, b, t, d)
    s = torch.where(torch.rand(b, 1, d, generator=gen, dtype=torch.float64) < 0.5, -1.0, 1.0).to(torch.float64)
    ctx = z.abs() * s
    return splice(ctx, -ctx if opposite else z, _gauss(gen, b, d), list(range(t)))


def orthogonal_queries(xs: torch.Tensor) -> torch.Tensor:
    """(B, K, d) for xs (B, T, d), K = min(T, d): query k is x_k minus its projection on span(x_0..x_{k-1}),
    rescaled to |x_k|. Batched via QR: the first k columns of Q span the first k points (full rank)."""
    k = min(xs.shape[1], xs.shape[2])
    pts = xs[:, :k]
    q, _ = torch.linalg.qr(pts.transpose(1, 2))  # (B, d, k), nested spans
    coef = torch.einsum("bdj,bnd->bnj", q, pts)  # <q_j, x_n>
    below = torch.tril(torch.ones(k, k, dtype=torch.bool), diagonal=-1)  # j < n
    resid = pts - torch.einsum("bnj,bdj->bnd", coef * below, q)
    return resid * pts.norm(dim=-1, keepdim=True) / resid.norm(dim=-1, keepdim=True)


def orthogonal(b: int, t: int, d: int, gen: torch.Generator) -> ShiftBatch:
    """Query at N orthogonal to the N context points (N = 0..min(t, d)-1), norm of the Gaussian point x_N."""
    z = _gauss(gen, b, t, d)
    qry = z.clone()
    k = min(t, d)
    qry[:, :k] = orthogonal_queries(z)
    return splice(z, qry, _gauss(gen, b, d), list(range(k)))


def same_point(b: int, t: int, d: int, gen: torch.Generator) -> ShiftBatch:
    """Query at N (N = 1..t-1) equal to context point j, j uniform in {0..N-1} per sequence and N."""
    z = _gauss(gen, b, t, d)
    n = torch.arange(t)
    j = (torch.rand(b, t, generator=gen, dtype=torch.float64) * n.clamp_min(1)).long()  # (B, T), j < max(N, 1)
    qry = torch.gather(z, 1, j[..., None].expand(b, t, d))
    return splice(z, qry, _gauss(gen, b, d), list(range(1, t)))
