"""garg-suite science: each Sec. 4 shift sampler draws what its definition says (checked in NumPy), and the
evaluation pipeline gives closed-form errors for hand-built predictors.

Closed forms used (x ~ N(0, I_d) unless shifted, w ~ N(0, I_d), error = (y_hat - y)^2 / d):

* the zero predictor: E[y^2] / d = E||x||^2_{Cov} / d, i.e. 1 for every shift that keeps trace(Cov) = d
  (skewed, half subspace, orthants, orthogonal and same-point queries, noisy after rescaling) and c^2 for
  ``scale_x`` / ``scale_y`` with factor c;
* min-norm least squares, noiseless: a query orthogonal to the context span is predicted 0 (error 1 for N < d);
  a query equal to a context point is interpolated exactly (error 0);
* min-norm least squares with label noise sigma^2 (after rescaling s^2 = d / (d + 1), sigma = 1), N > d + 1:
  s^2 sigma^2 (1 + d / (N - d - 1)) / d (inverse-Wishart mean), at N = 40, d = 20.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mesaopt.algorithms import OLS
from mesaopt.experiments import garg_shifts as gs
from mesaopt.experiments.garg_suite import GargSuiteConfig, curves, shift_samplers

D, T = 20, 41


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def query_rows(batch: gs.ShiftBatch):
    """(N, context (N, d), query (d,)) of every spliced row, in NumPy."""
    xs, sc = batch.xs.double().numpy(), batch.scored.numpy()
    for r in range(xs.shape[0]):
        n = int(np.nonzero(sc[r])[0][0])
        yield n, xs[r, :n], xs[r, n]


class ZeroPredictor:
    """Predicts 0 at every position: error/d = E[y^2] / d."""

    def prefix(self, xs, ys):
        return torch.zeros_like(ys)


class NumpyOLS:
    """Min-norm least squares from examples 0..t-1, computed with numpy.linalg.pinv (independent reference)."""

    def prefix(self, xs, ys):
        x, y = xs.double().numpy(), ys.double().numpy()
        out = np.zeros(y.shape)
        for b in range(x.shape[0]):
            for t in range(1, x.shape[1]):
                out[b, t] = x[b, t] @ (np.linalg.pinv(x[b, :t]) @ y[b, :t])
        return torch.from_numpy(out).to(ys.dtype)


def second_moment(x: np.ndarray) -> np.ndarray:
    """E[x x^T] (d, d) of rows x (n, d), the covariance of a zero-mean x (einsum: no threaded BLAS)."""
    return np.einsum("ni,nj->ij", x, x) / len(x)


def test_orthogonal_query_is_orthogonal_to_context_and_keeps_gaussian_norm():
    b = gs.orthogonal(30, T, D, gen())
    assert set(np.nonzero(b.scored.numpy())[1]) == set(range(D))  # only N < d are scored
    norms = []
    for n, ctx, q in query_rows(b):
        if n:
            cos = np.abs(ctx @ q) / (np.linalg.norm(ctx, axis=1) * np.linalg.norm(q))
            assert cos.max() < 1e-5
        norms.append(np.linalg.norm(q) ** 2)
    assert np.mean(norms) == pytest.approx(D, rel=0.05)  # chi^2_d norm kept


def test_same_point_query_equals_a_context_point_uniformly():
    b = gs.same_point(200, T, D, gen(1))
    picks = []
    for n, ctx, q in query_rows(b):
        hit = np.nonzero(np.all(ctx == q, axis=1))[0]
        assert n >= 1 and len(hit) == 1
        if n == 10:
            picks.append(hit[0])
    counts = np.bincount(picks, minlength=10)
    assert counts.min() > 5 and counts.max() < 40  # uniform over 0..9 (expected 20 each)


@pytest.mark.parametrize("opposite", [False, True])
def test_orthant_context_in_one_orthant_query_opposite_or_free(opposite):
    b = gs.orthant(40, T, D, gen(2), opposite=opposite)
    agree = []
    for n, ctx, q in query_rows(b):
        if n >= 2:
            s = np.sign(ctx)
            assert np.all(s == s[0])  # every context point in the same orthant
            agree.append(np.mean(np.sign(q) == s[0]))
    if opposite:
        assert max(agree) == 0.0
    else:
        assert np.mean(agree) == pytest.approx(0.5, abs=0.03)


def test_skewed_covariance_has_the_papers_eigenvalue_profile():
    m = gs.covariance_transform(gs.skewed_eigenvalues(D), gen(3))
    x = gs.covariance_shift(1000, T, D, gen(4), m).xs.double().numpy().reshape(-1, D)
    cov = second_moment(x)
    ev = np.sort(np.linalg.eigvalsh(cov))[::-1]
    prof = 1.0 / np.arange(1, D + 1) ** 2
    expect = D * prof / prof.sum()
    assert np.trace(cov) == pytest.approx(D, rel=0.02)
    np.testing.assert_allclose(ev[:8], expect[:8], rtol=0.05)


def test_half_subspace_has_rank_d_over_2_and_trace_d():
    m = gs.covariance_transform(gs.half_subspace_eigenvalues(D), gen(5))
    x = gs.covariance_shift(2000, T, D, gen(6), m).xs.double().numpy().reshape(-1, D)
    ev = np.sort(np.linalg.eigvalsh(second_moment(x)))[::-1]
    np.testing.assert_allclose(ev[: D // 2], 2.0, rtol=0.05)
    assert ev[D // 2] < 1e-8


def test_spliced_rows_share_the_sequence_weight():
    b = gs.orthant(3, T, D, gen(7))
    x, y = b.xs.double().numpy(), b.ys.double().numpy()
    for r in (0, 3 + 0, 6 + 0, 3 * 30 + 0):  # copies of sequence 0 for N = 0, 1, 2, 30
        w = np.linalg.lstsq(x[r], y[r], rcond=None)[0]
        np.testing.assert_allclose(w, np.linalg.lstsq(x[0], y[0], rcond=None)[0], atol=1e-3)


def run_curves(name, learners, seqs=400, **over):
    cfg = GargSuiteConfig(eval_sequences=seqs, eval_chunk=100, **over)
    sampler = shift_samplers(cfg, D)[name]
    return curves(learners, sampler, gen(11), cfg, D)


@pytest.mark.parametrize("name,expect", [("skewed", 1.0), ("half_subspace", 1.0), ("noisy", 1.0),
                                         ("orthant", 1.0), ("opposite_orthant", 1.0), ("orthogonal", 1.0),
                                         ("same_point", 1.0), ("scale_x_3", 9.0), ("scale_y_0p5", 0.25)])
def test_zero_predictor_error_is_second_moment_over_d(name, expect):
    c = run_curves(name, {"zero": ZeroPredictor()}, seqs=3000, scale_factors=[3.0, 0.5])["zero"]
    ok = np.isfinite(c)
    assert ok.sum() >= D - 1
    assert np.mean(c[ok]) == pytest.approx(expect, rel=0.06)


def test_ols_predicts_zero_on_orthogonal_queries_and_interpolates_same_point():
    c = run_curves("orthogonal", {"np": NumpyOLS(), "lib": OLS(), "zero": ZeroPredictor()}, seqs=30)
    for k in ("np", "lib"):
        assert np.all(np.isnan(c[k][D:]))
        np.testing.assert_allclose(c[k][:D], c["zero"][:D], rtol=1e-4)  # prediction 0: the zero predictor's error
        assert c[k][1:D].min() > 0.5  # the unshifted curve would be ~ 1 - N/d
    c = run_curves("same_point", {"np": NumpyOLS(), "lib": OLS()}, seqs=20)
    assert np.isnan(c["np"][0]) and np.nanmax(c["np"]) < 1e-8 and np.nanmax(c["lib"]) < 1e-6


def test_noisy_ols_error_matches_inverse_wishart():
    c = run_curves("noisy", {"np": NumpyOLS()}, seqs=600)["np"]
    s2 = D / (D + 1.0)
    expect = s2 * (1 + D / (40 - D - 1)) / D
    assert c[40] == pytest.approx(expect, rel=0.12)
    assert c[0] == pytest.approx(1.0, rel=0.1)
