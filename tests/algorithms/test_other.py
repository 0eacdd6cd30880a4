"""KNN, Averaging and DMMSE against scikit-learn, NumPy and explicit posterior sums."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.neighbors import KNeighborsRegressor

import mesaopt.algorithms as A
from mesaopt.errors import ConfigError, ShapeError
from mesaopt.learner import prefix_by_solves
from mesaopt.tasks import LinearRegression


def _data(b: int, n: int, d: int, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, n, d, generator=g, dtype=dtype), torch.randn(b, n, generator=g, dtype=dtype),
            torch.randn(b, 3, d, generator=g, dtype=dtype))


@pytest.mark.parametrize("k,n", [(1, 6), (3, 10), (5, 3)])
def test_knn_matches_sklearn(k, n):
    x, y, q = _data(3, n, 4)
    pred = A.KNN(k)(x, y, q)
    for i in range(3):
        sk = KNeighborsRegressor(n_neighbors=min(k, n)).fit(x[i].numpy(), y[i].numpy())
        np.testing.assert_allclose(pred[i].numpy(), sk.predict(q[i].numpy()), atol=1e-10)


@pytest.mark.parametrize("k", [1, 3, 20])
def test_knn_prefix_matches_solves(k):
    x, y, _ = _data(3, 8, 3, seed=1)
    alg = A.KNN(k)
    torch.testing.assert_close(alg.prefix(x, y), prefix_by_solves(alg, x, y), atol=1e-12, rtol=0)


def test_averaging_closed_form_and_prefix():
    x, y, q = _data(2, 7, 3, seed=2)
    w = A.Averaging().fit(x, y)
    xn, yn = x.numpy(), y.numpy()
    for i in range(2):
        np.testing.assert_allclose(w[i].numpy(), (yn[i][:, None] * xn[i]).mean(0), atol=1e-12)
    torch.testing.assert_close(A.Averaging().fit(x, y), A.GD(1, 1.0).fit(x, y))
    torch.testing.assert_close(A.Averaging().prefix(x, y), prefix_by_solves(A.Averaging(), x, y),
                               atol=1e-12, rtol=0)


def _np_dmmse(x: np.ndarray, y: np.ndarray, pool: np.ndarray, sigma: float) -> np.ndarray:
    err = np.array([((y - x @ w) ** 2).sum() for w in pool])
    if sigma > 0:
        logw = -err / (2 * sigma**2)
        p = np.exp(logw - logw.max())
    else:
        p = (err == err.min()).astype(float)
    p /= p.sum()
    return p @ pool


@pytest.mark.parametrize("sigma", [0.0, 0.1, 1.0])
def test_dmmse_matches_explicit_posterior(sigma):
    task = LinearRegression(d=3, n_tasks=5, noise_std=sigma)
    alg = A.DMMSE.for_task(task)
    b = task.sample(4, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w = alg.fit(b.xs, b.ys)
    for i in range(4):
        ref = _np_dmmse(b.xs[i].numpy(), b.ys[i].numpy(), task.pool.numpy(), sigma)
        np.testing.assert_allclose(w[i].numpy(), ref, atol=1e-10)
    if sigma == 0.0:  # noiseless: the posterior is the generating pool member
        torch.testing.assert_close(w, b.params["w"], atol=1e-10, rtol=0)


def test_dmmse_batch_chunking_is_invisible(monkeypatch):
    import mesaopt.algorithms.other as other

    g = torch.Generator().manual_seed(1)
    pool = torch.randn(300, 4, generator=g, dtype=torch.float64)
    x, y, _ = _data(5, 12, 4, seed=3)
    alg = A.DMMSE(pool, 2.0)
    full, full_pre = alg.fit(x, y), alg.prefix(x, y)
    monkeypatch.setattr(other, "PREFIX_CHUNK_ELEMS", 1000)  # chunks of one sequence
    torch.testing.assert_close(alg.fit(x, y), full, atol=1e-14, rtol=0)
    torch.testing.assert_close(alg.prefix(x, y), full_pre, atol=1e-14, rtol=0)
    for i in range(5):
        np.testing.assert_allclose(full[i].numpy(), _np_dmmse(x[i].numpy(), y[i].numpy(), pool.numpy(), 2.0),
                                   atol=1e-10)


def test_dmmse_extreme_logits_are_stable():
    pool = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    x, y, q = _data(2, 50, 2, seed=4)
    out = A.DMMSE(pool, 1e-3)(x * 100, y * 100, q)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("sigma", [0.0, 0.5])
def test_dmmse_prefix(sigma):
    task = LinearRegression(d=3, n_tasks=6, noise_std=sigma)
    alg = A.DMMSE.for_task(task)
    b = task.sample(3, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    pre = alg.prefix(b.xs, b.ys)
    torch.testing.assert_close(pre, prefix_by_solves(alg, b.xs, b.ys), atol=1e-10, rtol=0)
    torch.testing.assert_close(pre[:, 0], b.xs[:, 0] @ task.pool.mean(0))  # empty context: prior mean


@settings(max_examples=20, deadline=None)
@given(b=st.integers(1, 3), t=st.integers(1, 9), d=st.integers(1, 5), k=st.integers(1, 6), seed=st.integers(0, 999))
def test_prefix_property(b, t, d, k, seed):
    x, y, _ = _data(b, t, d, seed=seed)
    for alg in (A.KNN(k), A.Averaging(), A.DMMSE(torch.randn(4, d, dtype=torch.float64), 0.7)):
        torch.testing.assert_close(alg.prefix(x, y), prefix_by_solves(alg, x, y), atol=1e-10, rtol=0)


def test_float32_and_errors():
    x, y, q = _data(2, 6, 3, dtype=torch.float32)
    for alg in (A.KNN(2), A.Averaging(), A.DMMSE(torch.randn(4, 3), 0.5)):
        out = alg(x, y, q)
        assert out.dtype == torch.float32 and out.shape == (2, 3)
        np.testing.assert_allclose(out.numpy(), alg(x.double(), y.double(), q.double()).numpy(), atol=1e-4)
    with pytest.raises(ConfigError, match="k"):
        A.KNN(0)
    with pytest.raises(ConfigError, match="pool"):
        A.DMMSE(None)
    with pytest.raises(ConfigError, match="noise_std"):
        A.DMMSE([[1.0, 2.0]], noise_std=-1.0)
    with pytest.raises(ConfigError, match="pool"):
        A.DMMSE.for_task(LinearRegression(d=3))
    with pytest.raises(ShapeError, match="pool"):
        A.DMMSE(torch.randn(4, 5), 0.1)(x, y, q)


def test_build_roundtrip_all_kinds():
    for alg in (A.KNN(4), A.Averaging(), A.DMMSE([[1.0, 0.0], [0.5, 2.0]], 0.3)):
        again = A.build(alg.spec())
        assert type(again) is type(alg) and again.spec() == alg.spec()
    assert set(A.kinds()) >= {"ols", "ridge", "bayes_ridge", "gd", "gd_plus_plus", "preconditioned_gd", "newton",
                              "lasso", "knn", "averaging", "dmmse"}
