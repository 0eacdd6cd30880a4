"""IterativeNewton against an explicit NumPy Newton-Schulz loop and against min-norm least squares."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mesaopt.algorithms as A
from mesaopt.errors import ConfigError
from mesaopt.learner import prefix_by_solves


def _data(b: int, n: int, d: int, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, n, d, generator=g, dtype=dtype), torch.randn(b, n, generator=g, dtype=dtype),
            torch.randn(b, 2, d, generator=g, dtype=dtype))


def _np_newton(x: np.ndarray, y: np.ndarray, steps: int, norm: str) -> list[np.ndarray]:
    s = x.T @ x
    ssT = s @ s.T
    nrm = np.linalg.norm(ssT, "fro") if norm == "fro" else np.linalg.norm(ssT, 2)
    m = (2.0 / nrm) * s
    ws = [m @ x.T @ y]
    for _ in range(steps):
        m = 2 * m - m @ s @ m
        ws.append(m @ x.T @ y)
    return ws


@pytest.mark.parametrize("norm", ["fro", "spectral"])
@pytest.mark.parametrize("n,d", [(3, 5), (5, 5), (12, 4)])
def test_newton_matches_numpy_loop(norm, n, d):
    x, y, q = _data(2, n, d)
    alg = A.IterativeNewton(6, norm=norm)
    traj = alg.trajectory(x, y)
    assert traj.shape == (2, 7, d)
    for i in range(2):
        np.testing.assert_allclose(traj[i].numpy(), np.stack(_np_newton(x[i].numpy(), y[i].numpy(), 6, norm)),
                                   atol=1e-9)
    torch.testing.assert_close(alg(x, y, q), torch.einsum("bqd,bd->bq", q, traj[:, -1]))


@pytest.mark.parametrize("n,d", [(3, 6), (6, 6), (20, 5)])
def test_newton_converges_to_min_norm_ols(n, d):
    x, y, _ = _data(2, n, d, seed=1)
    x = x / np.sqrt(d)
    w = A.IterativeNewton(40).fit(x, y)
    for i in range(2):
        ref = np.linalg.lstsq(x[i].numpy(), y[i].numpy(), rcond=None)[0]
        np.testing.assert_allclose(w[i].numpy(), ref, atol=1e-8)


def test_newton_error_squares_each_step():
    """E_k = I - M_k S satisfies E_{k+1} = E_k^2, so the prediction error contracts quadratically."""
    x, y, _ = _data(1, 10, 3, seed=2)
    traj = A.IterativeNewton(12).trajectory(x, y)
    ols = A.OLS().fit(x, y)
    err = (traj - ols.unsqueeze(1)).norm(dim=-1)[0]
    assert err[-1] < 1e-10 and err[-1] < err[3] < err[0]


def test_spectral_alpha_stalls_top_direction():
    x, y, _ = _data(1, 10, 3, seed=3)
    w = A.IterativeNewton(30, norm="spectral").fit(x, y)
    assert (w - A.OLS().fit(x, y)).norm() > 1e-3


def test_newton_prefix_matches_solves():
    x, y, _ = _data(3, 9, 4, seed=4)
    alg = A.IterativeNewton(4)
    pre = alg.prefix(x, y)
    torch.testing.assert_close(pre, prefix_by_solves(alg, x, y), atol=1e-10, rtol=0)
    assert (pre[:, 0] == 0).all()


def test_newton_float32():
    x, y, q = _data(2, 10, 3, seed=5, dtype=torch.float32)
    out = A.IterativeNewton(5)(x, y, q)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), A.IterativeNewton(5)(x.double(), y.double(), q.double()).numpy(),
                               atol=1e-4)


def test_bad_hparams_and_roundtrip():
    with pytest.raises(ConfigError, match="steps"):
        A.IterativeNewton(-2)
    with pytest.raises(ConfigError, match="norm"):
        A.IterativeNewton(2, norm="l1")
    alg = A.build({"kind": "newton", "steps": 5})
    assert isinstance(alg, A.IterativeNewton) and alg.spec() == {"kind": "newton", "steps": 5, "norm": "fro"}
