"""RBF kernel ridge (batched torch) against scikit-learn's KernelRidge, task by task."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.kernel_ridge import KernelRidge

from mesaopt.algorithms.kernel_ridge import fit_rbf_kernel_ridge, rbf_kernel_ridge
from mesaopt.errors import ConfigError


@pytest.mark.parametrize("lam,h", [(0.1, 0.7), (1e-3, 2.0)])
def test_matches_sklearn(lam, h):
    g = torch.Generator().manual_seed(0)
    cx, cy, qx = torch.randn(5, 8, 2, generator=g), torch.randn(5, 8, generator=g), torch.randn(5, 3, 2, generator=g)
    got = rbf_kernel_ridge(cx, cy, qx, lam, h)
    assert got.dtype == torch.float32 and got.shape == (5, 3)
    for b in range(5):
        kr = KernelRidge(alpha=lam, kernel="rbf", gamma=1.0 / (2 * h * h)).fit(cx[b].double().numpy(),
                                                                              cy[b].double().numpy())
        np.testing.assert_allclose(got[b].numpy(), kr.predict(qx[b].double().numpy()), rtol=2e-4, atol=2e-5)


def test_grid_fit_picks_the_best_pair_and_bad_values_are_named():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(64, 9, 1, generator=g, dtype=torch.float64) * 6 - 3
    y = torch.sin(x[..., 0])
    lam, h, err = fit_rbf_kernel_ridge(x[:, :8], y[:, :8], x[:, 8:], y[:, 8:], [1e-4, 10.0], [0.05, 1.0])
    assert (lam, h) == (1e-4, 1.0)
    pred = rbf_kernel_ridge(x[:, :8], y[:, :8], x[:, 8:], lam, h)
    assert err == pytest.approx(float((pred - y[:, 8:]).pow(2).mean()))
    with pytest.raises(ConfigError, match="bandwidth"):
        rbf_kernel_ridge(x[:, :8], y[:, :8], x[:, 8:], 0.1, 0.0)
