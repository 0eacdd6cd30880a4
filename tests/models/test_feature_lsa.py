"""FeatureLSA: an MLP embedding then LSA, against a NumPy MLP + a per-token NumPy linear attention."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mesaopt.models as models
from mesaopt.errors import ShapeError
from mesaopt.models.feature_lsa import FeatureLSA

F64 = torch.float64


def np_gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def test_forward_is_numpy_mlp_then_linear_attention():
    m = FeatureLSA(d=2, features=5, hidden=7, init_std=0.3, seed=3).to(F64)
    g = torch.Generator().manual_seed(0)
    cx, cy, qx = torch.randn(3, 6, 2, generator=g, dtype=F64), torch.randn(3, 6, generator=g, dtype=F64), \
        torch.randn(3, 2, 2, generator=g, dtype=F64)
    w1, b1, w2, b2 = (p.detach().numpy() for p in (m.w1, m.b1, m.w2, m.b2))
    kq, pv = (t.detach().numpy()[0, 0] for t in m.lsa.matrices())

    def phi(x):
        return np_gelu(x @ w1.T + b1) @ w2.T + b2

    ref = np.zeros((3, 2))
    for b in range(3):
        ctx = np.concatenate([phi(cx[b].numpy()), cy[b].numpy()[:, None]], axis=1)
        for q in range(2):
            e = np.concatenate([phi(qx[b, q].numpy()), [0.0]])
            upd = sum((pv @ c) * (c @ kq @ e) for c in ctx) / 6
            ref[b, q] = -(e + upd)[-1]
    with torch.no_grad():
        got = m(cx, cy, qx).numpy()
        assert np.allclose(m.prefix(torch.cat([cx, qx[:, :1]], 1), torch.cat([cy, cy[:, :1]], 1))[:, -1].numpy(),
                           got[:, 0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)


def test_spec_roundtrip_seeded_and_checks():
    m = FeatureLSA(d=1, features=4, hidden=6, layers=2, seed=5)
    m2 = models.build(m.spec())
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values(), strict=True))
    assert "feature_lsa" in models.kinds() and m.lsa.layers == 2
    with pytest.raises(ShapeError, match="d=2"):
        m.features_of(torch.zeros(1, 3, 2))
    # float32 model, float64 inputs: features come back in the input dtype
    assert m.features_of(torch.zeros(1, 3, 1, dtype=F64)).dtype == F64
