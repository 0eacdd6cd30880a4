"""Batched small dense linear algebra with the batch as the innermost (SIMD) dimension ("batch-last").

For many tiny problems (d ~ 20) torch's batched LAPACK routines call one small factorisation per matrix (a few
microseconds each), and float64 copies of a whole 10,000-task batch pay page faults on first touch. These kernels
instead hold a chunk of tasks as (d, d, c) tensors, loop over the d pivots or T time steps (never over tasks),
and update whole (rows, cols, c) blocks with one in-place vectorised op per step. Callers process the batch in
chunks of :func:`task_chunk` tasks so the working set stays in cache.
"""

from __future__ import annotations

import numpy as np
import torch

# float64 elements of one chunk's working set (about 16 MB): big enough to amortise the per-op overhead of the
# loops over pivots / time steps, small enough for the last-level cache (tuned at d=20, N=40 on a 2-core EPYC).
CHUNK_ELEMS = 1 << 21


# gram_solve(refine=True) refines tasks whose smallest squared Cholesky pivot is below this fraction of max diag.
REFINE_BELOW = 1e-4


def task_chunk(per_task: int, budget: int | None = None) -> int:
    """Number of tasks per chunk for a per-task working set of ``per_task`` float64 elements (budget: CHUNK_ELEMS)."""
    return max(1, (CHUNK_ELEMS if budget is None else budget) // max(int(per_task), 1))


def bmm_into(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """out (c, m, p) <- a (c, m, k) @ b (c, k, p); on CPU through NumPy's stacked matmul (about 2x faster than
    torch.bmm for tiny float64 matrices, whose cost is per-matrix call overhead), sharing memory (no copies)."""
    if out.device.type == "cpu" and out.is_contiguous() and not (a.requires_grad or b.requires_grad):
        np.matmul(a.numpy(), b.numpy(), out=out.numpy())
        return out
    return torch.matmul(a, b, out=out)


def to_batch_last(a: torch.Tensor) -> torch.Tensor:
    """(c, ...) -> contiguous (..., c)."""
    return a.permute(*range(1, a.dim()), 0).contiguous()


def from_batch_last(a: torch.Tensor) -> torch.Tensor:
    """(..., c) -> (c, ...) view."""
    return a.permute(a.dim() - 1, *range(a.dim() - 1))


def cholesky_solve_bl(m: torch.Tensor, d: int, rtol: float = 0.0) -> torch.Tensor:
    """In place: m (d, d + k, c) = [A | R] with A symmetric positive definite -> m[:, d:] = A^{-1} R; ok (c,).

    Right-looking Cholesky A = U^T U carried along the right-hand sides (m[:, d:] becomes U^{-T} R), then back
    substitution. ``ok`` is False for a task whose pivot U_jj^2 is not > rtol * max_i A_ii (not positive
    definite, or numerically singular at that relative level); its solution is garbage (NaN or huge).
    """
    c = m.shape[-1]
    if d == 0:
        return torch.ones(c, dtype=torch.bool, device=m.device)
    scale = m[:, :d].diagonal(0, 0, 1).amax(-1)  # (c,)
    for j in range(d):
        row = m[j, j:]  # (d + k - j, c)
        row.mul_(m[j, j].rsqrt())  # NaN for a non-positive pivot: stays inside its task
        if j + 1 < d:
            m[j + 1 : d, j + 1 :].addcmul_(row[1 : d - j].unsqueeze(1), row[1:].unsqueeze(0), value=-1.0)
    diag = m[:, :d].diagonal(0, 0, 1)  # (c, d): U_jj
    ok = (diag * diag > rtol * scale.unsqueeze(-1)).all(-1)
    for j in range(d - 1, -1, -1):
        m[j, d:].div_(m[j, j])
        if j > 0:
            m[:j, d:].addcmul_(m[:j, j].unsqueeze(1), m[j, d:].unsqueeze(0), value=-1.0)
    return ok & torch.isfinite(m[:, d:]).all(0).all(0)


def cholesky_resolve_bl(m: torch.Tensor, d: int, r: torch.Tensor) -> torch.Tensor:
    """In place: r (d, c) <- A^{-1} r with the factor U left in m[:, :d] by :func:`cholesky_solve_bl`."""
    for j in range(d):  # U^T z = r
        r[j].div_(m[j, j])
        if j + 1 < d:
            r[j + 1 :].addcmul_(m[j, j + 1 : d], r[j].unsqueeze(0), value=-1.0)
    for j in range(d - 1, -1, -1):  # U x = z
        r[j].div_(m[j, j])
        if j > 0:
            r[:j].addcmul_(m[:j, j], r[j].unsqueeze(0), value=-1.0)
    return r


def sym_mv_bl(a: torch.Tensor, x: torch.Tensor, tmp: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Symmetric matrix-vector products a x: a (d, d, c), x (d, c) -> out (d, c), using tmp (d, d, c)."""
    torch.mul(a, x.unsqueeze(1), out=tmp)
    return torch.sum(tmp, 0, out=out)


def _chunks(b: int, chunk: int):
    for s in range(0, b, max(chunk, 1)):
        yield s, min(chunk, b - s)


def gram_solve(x: torch.Tensor, y: torch.Tensor, shift: float, rtol: float, chunk: int,
               refine: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(X^T X + shift I)^{-1} X^T y: x (B, N, d), y (B, N) (any float dtype) -> (w (B, d) float64, ok (B,)).

    Per chunk: one Gram product [X y]^T [X y] and a batch-last Cholesky (:func:`cholesky_solve_bl`); buffers are
    allocated once and reused across chunks. ``ok`` as in :func:`cholesky_solve_bl`. ``refine``: for tasks whose
    smallest pivot is below REFINE_BELOW (relative), one step of iterative refinement w += (X^T X)^{-1} X^T (y - X w)
    with the same factor (corrected semi-normal equations: the accuracy of a QR least-squares solve for cond(X) up
    to ~1e7, instead of eps * cond(X)^2); better-conditioned tasks already have error ~ eps / REFINE_BELOW.
    """
    b, n, d = x.shape
    f64 = dict(dtype=torch.float64, device=x.device)
    c = max(1, min(chunk, b))
    xy = torch.empty(c, n, d + 1, **f64)
    aug = torch.empty(c, d + 1, d + 1, **f64)
    m = torch.empty(d, d + 1, c, **f64)
    w = torch.empty(b, d, **f64)
    ok = torch.empty(b, dtype=torch.bool, device=x.device)
    for s, k in _chunks(b, c):
        xyk, augk, mk = xy[:k], aug[:k], m[..., :k]
        xyk[..., :d].copy_(x[s : s + k])
        xyk[..., d].copy_(y[s : s + k])
        bmm_into(xyk.transpose(1, 2), xyk, augk)
        mk.view(d * (d + 1), k).copy_(augk[:, :d].reshape(k, d * (d + 1)).transpose(0, 1))  # 2-D: faster
        if shift:
            mk.diagonal(0, 0, 1).add_(shift)
        if refine:
            scale = augk[:, :d, :d].diagonal(0, 1, 2).amax(-1) + shift  # (k,)
        okk = ok[s : s + k]
        okk.copy_(cholesky_solve_bl(mk, d, rtol))
        w[s : s + k] = mk[:, d].transpose(0, 1)
        if refine:  # only tasks whose smallest pivot says cond(Gram) may exceed ~1 / REFINE_BELOW
            piv = mk[:, :d].diagonal(0, 0, 1)  # (k, d)
            idx = torch.nonzero(okk & ((piv * piv).amin(-1) < REFINE_BELOW * scale)).squeeze(-1)
            if idx.numel():
                xi, wi, fac = xyk[idx, :, :d], w[s + idx], mk[..., idx]
                res = xyk[idx, :, d] - (xi * wi.unsqueeze(1)).sum(-1)  # (r, N)
                r = (xi * res.unsqueeze(-1)).sum(1) - shift * wi  # (r, d)
                w[s + idx] = wi + from_batch_last(cholesky_resolve_bl(fac, d, to_batch_last(r)))
    return w, ok


def gram_aug(x: torch.Tensor, y: torch.Tensor, chunk: int) -> torch.Tensor:
    """[X y]^T [X y]: x (B, N, d), y (B, N) (any float dtype) -> float64 (B, d+1, d+1), chunked (one reused buffer)."""
    b, n, d = x.shape
    f64 = dict(dtype=torch.float64, device=x.device)
    c = max(1, min(chunk, b))
    xy = torch.empty(c, n, d + 1, **f64)
    aug = torch.empty(b, d + 1, d + 1, **f64)
    for s, k in _chunks(b, c):
        xyk = xy[:k]
        xyk[..., :d].copy_(x[s : s + k])
        xyk[..., d].copy_(y[s : s + k])
        bmm_into(xyk.transpose(1, 2), xyk, aug[s : s + k])
    return aug


def dual_solve(x: torch.Tensor, y: torch.Tensor, rtol: float, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """X^T (X X^T)^{-1} y: x (B, N, d), y (B, N) (any float dtype) -> (w (B, d) float64, ok (B,)); for N < d."""
    b, n, d = x.shape
    f64 = dict(dtype=torch.float64, device=x.device)
    c = max(1, min(chunk, b))
    xb = torch.empty(c, n, d, **f64)
    kern = torch.empty(c, n, n, **f64)
    m = torch.empty(n, n + 1, c, **f64)
    w = torch.empty(b, d, **f64)
    ok = torch.empty(b, dtype=torch.bool, device=x.device)
    for s, k in _chunks(b, c):
        xk, kk, mk = xb[:k], kern[:k], m[..., :k]
        xk.copy_(x[s : s + k])
        bmm_into(xk, xk.transpose(1, 2), kk)
        mk[:, :n].copy_(kk.permute(1, 2, 0))
        mk[:, n].copy_(y[s : s + k].transpose(0, 1))
        ok[s : s + k] = cholesky_solve_bl(mk, n, rtol)
        w[s : s + k] = (xk * from_batch_last(mk[:, n]).unsqueeze(-1)).sum(1)
    return w, ok


def _prefix_driver(step_kernel, xs: torch.Tensor, ys: torch.Tensor, weights: bool, chunk: int, **kw) -> torch.Tensor:
    b, t, d = xs.shape
    f64 = dict(dtype=torch.float64, device=xs.device)
    c = max(1, min(chunk, b))
    xt = torch.empty(t, d, c, **f64)
    yt = torch.empty(t, c, **f64)
    ws = [torch.empty(d, d, c, **f64) for _ in range(3)]
    out = torch.empty((b, t, d) if weights else (b, t), **f64)
    for s, k in _chunks(b, c):
        xk, yk = xt[..., :k], yt[:, :k]
        xk.copy_(xs[s : s + k].permute(1, 2, 0))
        yk.copy_(ys[s : s + k].transpose(0, 1))
        res = step_kernel(xk, yk, weights=weights, ws=[a[..., :k] for a in ws], **kw)
        out[s : s + k] = from_batch_last(res)
    return out


def rls_prefix(xs: torch.Tensor, ys: torch.Tensor, lam: float, weights: bool = True,
               chunk: int = 512) -> torch.Tensor:
    """Ridge fits of every prefix, (B, T, d), (B, T) (any float dtype) -> float64 weights (B, T, d) or predictions
    (B, T) (``weights=False``); chunked over tasks, see :func:`rls_prefix_bl`."""
    return _prefix_driver(rls_prefix_bl, xs, ys, weights, chunk, lam=lam)


def greville_prefix(xs: torch.Tensor, ys: torch.Tensor, tol: float, weights: bool = True,
                    chunk: int = 512) -> torch.Tensor:
    """Min-norm least-squares fits of every prefix, (B, T, d), (B, T) -> float64 (B, T, d) or (B, T); chunked
    over tasks, see :func:`greville_prefix_bl`."""
    return _prefix_driver(greville_prefix_bl, xs, ys, weights, chunk, tol=tol)


def ridge_prefix_predictions(xs: torch.Tensor, ys: torch.Tensor, lam: float, chunk: int = 512) -> torch.Tensor:
    """Ridge prefix predictions (B, T) (float64) from the Cholesky factor of the kernel matrix K = X X^T + lam I.

    With w ~ N(0, I) and noise variance lam, ridge (X^T X + lam I)^{-1} X^T y is the posterior mean, so the
    prediction of y_t from examples 0..t-1 is the conditional mean E[y_t | y_<t] under y ~ N(0, K). Eliminating
    the columns of the bordered [[K], [y^T]] in order 0..T-1 (right-looking Cholesky, batch-last) leaves in entry
    (T, t), just before pivot t, the innovation y_t - E[y_t | y_<t]. Cost per task: one T x d x T Gram + T^3 / 3,
    against T rank-one d x d updates of recursive least squares; only for lam > 0 (for lam = 0 the kernel is
    singular once t > d).
    """
    b, t, d = xs.shape
    f64 = dict(dtype=torch.float64, device=xs.device)
    c = max(1, min(chunk, b))
    xb = torch.empty(c, t, d, **f64)
    kern = torch.empty(c, t, t, **f64)
    m = torch.empty(t + 1, t, c, **f64)  # bordered [[K], [y^T]]: row t holds y, then the innovations
    out = torch.empty(b, t, **f64)
    for s, k in _chunks(b, c):
        xk, kk, mk = xb[:k], kern[:k], m[..., :k]
        xk.copy_(xs[s : s + k])
        bmm_into(xk, xk.transpose(1, 2), kk)
        mk[:t].view(t * t, k).copy_(kk.view(k, t * t).transpose(0, 1))  # 2-D transpose: fast
        mk[:t].diagonal(0, 0, 1).add_(lam)
        mk[t].copy_(ys[s : s + k].transpose(0, 1))
        yk = mk[t].clone()
        pred = out[s : s + k]
        for j in range(t):  # column j of L (rows j..t, the bordered row included), rank-one update of the rest
            pred[:, j] = yk[j] - mk[t, j]  # y_j minus its innovation
            col = mk[j:, j]
            col.mul_(mk[j, j].rsqrt())
            if j + 1 < t:
                mk[j + 1 :, j + 1 :].addcmul_(col[1:].unsqueeze(1), col[1 : t - j].unsqueeze(0), value=-1.0)
    return out


def _bl_state(d: int, c: int, like: torch.Tensor, ws: list[torch.Tensor] | None) -> list[torch.Tensor]:
    if ws is None:
        ws = [torch.empty(d, d, c, dtype=like.dtype, device=like.device) for _ in range(3)]
    return ws


def _record_step(out: torch.Tensor, s: int, x: torch.Tensor, w: torch.Tensor, weights: bool) -> torch.Tensor:
    """Write row s of a prefix result (weights w (d, c) or predictions x^T w (c,)); returns x^T w (c,)."""
    pred = (x * w).sum(0)
    out[s] = w if weights else pred
    return pred


def rls_prefix_bl(xt: torch.Tensor, yt: torch.Tensor, lam: float, weights: bool = True,
                  ws: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Ridge fits of every prefix by recursive least squares, batch-last: xt (T, d, c), yt (T, c) -> (T, d, c).

    Row t is fitted on examples 0..t-1: G = (X^T X + lam I)^{-1} and w are updated by Sherman-Morrison.
    ``weights=False`` returns the predictions x_t^T w_t (T, c) instead. ``ws``: three (d, d, c) work buffers.
    """
    t, d, c = xt.shape
    g, tmp, _ = _bl_state(d, c, xt, ws)
    g.zero_()
    g.diagonal(0, 0, 1).fill_(1.0 / lam)
    w = xt.new_zeros(d, c)
    gx = xt.new_empty(d, c)
    out = xt.new_empty(t, d, c) if weights else xt.new_empty(t, c)
    for s in range(t):
        x = xt[s]
        pred = _record_step(out, s, x, w, weights)
        sym_mv_bl(g, x, tmp, gx)
        inv = 1.0 / (1.0 + (x * gx).sum(0))
        w.addcmul_(gx, (yt[s] - pred) * inv)
        g.addcmul_(gx.unsqueeze(1), (gx * inv).unsqueeze(0), value=-1.0)
    return out


def _gram_pinv_bl(g: torch.Tensor, p: torch.Tensor) -> None:
    """In place g <- (A^T A)^+ = (M + P)^{-1} - P from g = M = A^T A and the null-space projector P (batch-last)."""
    d, _, c = g.shape
    m = g.new_empty(d, 2 * d, c)
    torch.add(g, p, out=m[:, :d])
    m[:, d:].zero_()
    m[:, d:].diagonal(0, 0, 1).fill_(1.0)
    cholesky_solve_bl(m, d)
    torch.sub(m[:, d:], p, out=g)


def greville_prefix_bl(xt: torch.Tensor, yt: torch.Tensor, tol: float, weights: bool = True,
                       ws: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Min-norm least-squares fits of every prefix (Greville), batch-last: (T, d, c), (T, c) -> (T, d, c).

    State: w = A^+ y, P = I - A^+ A, G = (A^T A)^+. A new row x with c = P x, ||c||^2 > tol ||x||^2 opens a new
    direction: k = c / ||c||^2, w += k e, G -= a' k^T + k a'^T with a' = G x - (1 + x^T G x) k / 2, P -= c c^T /
    ||c||^2; otherwise Sherman-Morrison: w += G x e / (1 + x^T G x), G -= (G x)(G x)^T / (1 + x^T G x).
    While every row of every task opens a new direction (generic data, t < d) G is not needed: the kernel keeps
    M = A^T A instead and forms G = (M + P)^{-1} - P by one batch-last Cholesky when that stops (a spanned row,
    or rank d everywhere). Once every task of the chunk has rank d (P = 0), the steps are plain Sherman-Morrison.
    ``weights=False`` returns the predictions x_t^T w_t (T, c) instead. ``ws``: three (d, d, c) work buffers.
    """
    t, d, c = xt.shape
    g, tmp, p = _bl_state(d, c, xt, ws)
    g.zero_()
    p.zero_()
    p.diagonal(0, 0, 1).fill_(1.0)
    w = xt.new_zeros(d, c)
    gx, cvec = xt.new_empty(d, c), xt.new_empty(d, c)
    rank = torch.zeros(c, dtype=torch.long, device=xt.device)
    full = d == 0
    fast = d > 0  # every row so far opened a new direction in every task: g holds M = A^T A instead of G
    out = xt.new_empty(t, d, c) if weights else xt.new_empty(t, c)
    for s in range(t):
        x = xt[s]
        pred = _record_step(out, s, x, w, weights)
        e = yt[s] - pred
        have_c = False
        if fast:
            sym_mv_bl(p, x, tmp, cvec)
            cc, xx = (cvec * cvec).sum(0), (x * x).sum(0)
            new = cc > tol * xx
            have_c = True
            if bool(new.all()):  # Greville step without G: w += k e, P -= c c^T / ||c||^2, M += x x^T
                w.addcmul_(cvec, e / cc)
                g.addcmul_(x.unsqueeze(1), x.unsqueeze(0))
                pv = cvec * cc.rsqrt()
                p.addcmul_(pv.unsqueeze(1), pv.unsqueeze(0), value=-1.0)
                rank += 1
                if s + 1 >= d:  # rank d everywhere: G = M^{-1}
                    _gram_pinv_bl(g, p)
                    fast, full = False, True
                continue
            _gram_pinv_bl(g, p)  # G = (A^T A)^+ = (M + P)^{-1} - P, then the general recursion
            fast = False
        sym_mv_bl(g, x, tmp, gx)
        denom = 1.0 + (x * gx).sum(0)
        if full:  # rank d everywhere: recursive least squares
            inv = 1.0 / denom
            w.addcmul_(gx, e * inv)
            g.addcmul_(gx.unsqueeze(1), (gx * inv).unsqueeze(0), value=-1.0)
            continue
        if not have_c:
            sym_mv_bl(p, x, tmp, cvec)
            cc, xx = (cvec * cvec).sum(0), (x * x).sum(0)
            new = cc > tol * xx
        safe_cc = torch.where(new, cc, torch.ones_like(cc))
        k = cvec / safe_cc  # (d, c)
        # new direction: (u, v) = (a', k); spanned: (u, v) = (gx / (2 denom), gx); G -= u v^T + v u^T
        u = torch.where(new, gx - (0.5 * denom) * k, gx / (2.0 * denom))
        v = torch.where(new, k, gx)
        w.addcmul_(torch.where(new, k, gx / denom), e)
        g.addcmul_(u.unsqueeze(1), v.unsqueeze(0), value=-1.0)
        g.addcmul_(v.unsqueeze(1), u.unsqueeze(0), value=-1.0)
        pv = cvec * (new.to(xt.dtype) / safe_cc).sqrt()
        p.addcmul_(pv.unsqueeze(1), pv.unsqueeze(0), value=-1.0)
        rank += new
        full = bool((rank >= d).all())
    return out
