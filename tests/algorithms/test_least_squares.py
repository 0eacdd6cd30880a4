"""OLS / Ridge / BayesRidge against NumPy, scikit-learn and the closed-form Gaussian posterior."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LinearRegression as SkLinearRegression
from sklearn.linear_model import Ridge as SkRidge

import mesaopt.algorithms as A
from mesaopt.errors import ConfigError, ShapeError
from mesaopt.learner import prefix_by_solves
from mesaopt.tasks import LinearRegression


def _data(b: int, n: int, d: int, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, d, generator=g, dtype=dtype)
    y = torch.randn(b, n, generator=g, dtype=dtype)
    q = torch.randn(b, 3, d, generator=g, dtype=dtype)
    return x, y, q


def _np_pinv_prefix(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    b, t, d = xs.shape
    out = np.zeros((b, t))
    for i in range(b):
        for s in range(1, t):
            w = np.linalg.pinv(xs[i, :s]) @ ys[i, :s]
            out[i, s] = xs[i, s] @ w
    return out


@pytest.mark.parametrize("n,d", [(3, 6), (6, 6), (12, 5), (1, 4)])
def test_ols_matches_numpy_lstsq_and_sklearn(n, d):
    x, y, q = _data(3, n, d)
    w = A.OLS().fit(x, y)
    for i in range(3):
        ref = np.linalg.lstsq(x[i].numpy(), y[i].numpy(), rcond=None)[0]  # min-norm for N < d
        np.testing.assert_allclose(w[i].numpy(), ref, atol=1e-8)
        sk = SkLinearRegression(fit_intercept=False).fit(x[i].numpy(), y[i].numpy())
        np.testing.assert_allclose(w[i].numpy(), sk.coef_, atol=1e-8)
    pred = A.OLS()(x, y, q)
    np.testing.assert_allclose(pred.numpy(), np.einsum("bqd,bd->bq", q.numpy(), w.numpy()), atol=1e-10)


def test_ols_float32_in_float32_out():
    x, y, q = _data(4, 20, 5, dtype=torch.float32)
    pred = A.OLS()(x, y, q)
    assert pred.dtype == torch.float32
    ref = np.stack([q[i].double().numpy() @ np.linalg.lstsq(x[i].double().numpy(), y[i].double().numpy(),
                                                              rcond=None)[0] for i in range(4)])
    np.testing.assert_allclose(pred.numpy(), ref, atol=1e-4)


@pytest.mark.parametrize("lam", [0.01, 0.5, 3.0])
@pytest.mark.parametrize("n,d", [(3, 6), (6, 6), (15, 4)])
def test_ridge_matches_sklearn_and_closed_form(lam, n, d):
    x, y, _ = _data(2, n, d, seed=1)
    w = A.Ridge(lam).fit(x, y)
    for i in range(2):
        sk = SkRidge(alpha=lam, fit_intercept=False, solver="svd").fit(x[i].numpy(), y[i].numpy())
        np.testing.assert_allclose(w[i].numpy(), sk.coef_, atol=1e-8)
        xi, yi = x[i].numpy(), y[i].numpy()
        ref = np.linalg.solve(xi.T @ xi + lam * np.eye(d), xi.T @ yi)
        np.testing.assert_allclose(w[i].numpy(), ref, atol=1e-8)


def test_ridge_zero_is_min_norm_ols():
    x, y, _ = _data(2, 3, 7, seed=2)
    torch.testing.assert_close(A.Ridge(0.0).fit(x, y), A.OLS().fit(x, y), atol=1e-10, rtol=0)


@pytest.mark.parametrize("t,d", [(10, 4), (6, 9), (8, 8)])
def test_ols_prefix_matches_solves_and_numpy(t, d):
    x, y, _ = _data(3, t, d, seed=3)
    pre = A.OLS().prefix(x, y)
    torch.testing.assert_close(pre, prefix_by_solves(A.OLS(), x, y), atol=1e-8, rtol=0)
    np.testing.assert_allclose(pre.numpy(), _np_pinv_prefix(x.numpy(), y.numpy()), atol=1e-8)
    assert (pre[:, 0] == 0).all()


def test_ols_prefix_rank_deficient_rows():
    """Repeated and zero inputs exercise both branches of the Greville recursion."""
    x, y, _ = _data(2, 9, 5, seed=4)
    x[:, 3] = x[:, 0]  # x in the span after one example
    x[:, 4] = 2.0 * x[:, 1] - x[:, 2]
    x[:, 5] = 0.0
    pre = A.OLS().prefix(x, y)
    np.testing.assert_allclose(pre.numpy(), _np_pinv_prefix(x.numpy(), y.numpy()), atol=1e-8)


def test_ols_prefix_weights_match_lstsq():
    x, y, _ = _data(2, 7, 4, seed=5)
    wp = A.OLS().prefix_weights(x, y)
    for s in range(7):
        for i in range(2):
            ref = np.linalg.lstsq(x[i, :s].numpy().reshape(s, 4), y[i, :s].numpy(), rcond=None)[0] if s else 0
            np.testing.assert_allclose(wp[i, s].numpy(), ref, atol=1e-8)


@pytest.mark.parametrize("lam", [0.1, 2.0])
def test_ridge_prefix_matches_solves(lam):
    x, y, _ = _data(3, 11, 6, seed=6)
    torch.testing.assert_close(A.Ridge(lam).prefix(x, y), prefix_by_solves(A.Ridge(lam), x, y),
                               atol=1e-8, rtol=0)


def test_prefix_float32():
    x, y, _ = _data(2, 12, 4, seed=7, dtype=torch.float32)
    pre = A.OLS().prefix(x, y)
    assert pre.dtype == torch.float32
    np.testing.assert_allclose(pre.numpy(), _np_pinv_prefix(x.double().numpy(), y.double().numpy()), atol=1e-4)


@settings(max_examples=25, deadline=None)
@given(b=st.integers(1, 3), t=st.integers(1, 10), d=st.integers(1, 7), seed=st.integers(0, 10_000),
       lam=st.floats(0.05, 5.0))
def test_prefix_property(b, t, d, seed, lam):
    x, y, _ = _data(b, t, d, seed=seed)
    np.testing.assert_allclose(A.OLS().prefix(x, y).numpy(), _np_pinv_prefix(x.numpy(), y.numpy()), atol=1e-7)
    torch.testing.assert_close(A.Ridge(lam).prefix(x, y), prefix_by_solves(A.Ridge(lam), x, y), atol=1e-8, rtol=0)


def test_bayes_ridge_for_task_is_gaussian_posterior_mean():
    task = LinearRegression(d=4, noise_std=0.5, w_scale=2.0, x_dist="anisotropic", condition_number=10.0)
    alg = A.BayesRidge.for_task(task)
    assert alg.lam == pytest.approx(0.25 / 4.0)
    b = task.sample(3, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w = alg.fit(b.xs, b.ys)
    for i in range(3):
        x, y = b.xs[i].numpy(), b.ys[i].numpy()
        cov = np.linalg.inv(x.T @ x / 0.25 + np.eye(4) / 4.0)  # posterior covariance
        np.testing.assert_allclose(w[i].numpy(), cov @ x.T @ y / 0.25, atol=1e-8)


def test_bayes_ridge_noiseless_is_min_norm():
    alg = A.BayesRidge.for_task(LinearRegression(d=6, noise_std=0.0))
    assert alg.lam == 0.0
    x, y, _ = _data(2, 3, 6)
    torch.testing.assert_close(alg.fit(x, y), A.OLS().fit(x, y), atol=1e-10, rtol=0)


def test_bayes_ridge_rejects_sparse_and_pool_tasks():
    with pytest.raises(ConfigError, match="sparsity"):
        A.BayesRidge.for_task(LinearRegression(d=5, sparsity=2))
    with pytest.raises(ConfigError, match="n_tasks"):
        A.BayesRidge.for_task(LinearRegression(d=5, n_tasks=4))


def test_bad_inputs():
    with pytest.raises(ConfigError, match="lam"):
        A.Ridge(lam=-1.0)
    with pytest.raises(ConfigError, match="lam"):
        A.Ridge(lam=float("nan"))
    x, y, q = _data(2, 4, 3)
    with pytest.raises(ShapeError):
        A.OLS()(x, y[:, :3], q)
    with pytest.raises(ShapeError):
        A.OLS().fit(x, y[:1])
    with pytest.raises(ShapeError):
        A.OLS().prefix(x, y[:, :2])


def test_empty_context_predicts_zero():
    x, y, q = _data(2, 0, 3)
    assert (A.OLS()(x, y, q) == 0).all() and (A.Ridge(1.0).fit(x, y) == 0).all()


def test_build_roundtrip_and_names():
    for alg in [A.OLS(), A.Ridge(0.3), A.BayesRidge(0.1)]:
        again = A.build(alg.spec())
        assert type(again) is type(alg) and again.hparams() == alg.hparams()
    assert A.OLS().name == "ols" and A.Ridge(1.0).name == "ridge"
    with pytest.raises(ConfigError, match="kind"):
        A.build({"kind": "nope"})
    with pytest.raises(ConfigError, match="ridge"):
        A.build({"kind": "ridge", "alpha": 1.0})


@pytest.mark.parametrize("n", [9, 2])
@pytest.mark.parametrize("make", [lambda: A.OLS(), lambda: A.Ridge(lam=0.3), lambda: A.Ridge(lam=0.0)])
def test_least_squares_differentiable_in_the_context(make, n):
    """Grad through fit and prefix w.r.t. the context (finite differences), same values as the fast kernels."""
    alg = make()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, n, 3, dtype=torch.float64, generator=g, requires_grad=True)
    y = torch.randn(2, n, dtype=torch.float64, generator=g, requires_grad=True)
    q = torch.randn(2, 2, 3, dtype=torch.float64, generator=g)
    assert torch.autograd.gradcheck(lambda x, y: alg(x, y, q), (x, y))
    assert torch.autograd.gradcheck(lambda x, y: alg.prefix(x, y), (x, y))
    torch.testing.assert_close(alg(x, y, q).detach(), alg(x.detach(), y.detach(), q), atol=1e-12, rtol=0)
    torch.testing.assert_close(alg.prefix(x, y).detach(), alg.prefix(x.detach(), y.detach()), atol=1e-10, rtol=0)
