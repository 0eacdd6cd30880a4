"""CopyLSA: interleaved tokens, a causal softmax layer and an LSA, against a per-token NumPy forward pass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mesaopt.models as models
from mesaopt.errors import ShapeError
from mesaopt.models.copy_lsa import CopyLSA

F64 = torch.float64


def np_forward(m: CopyLSA, cx: np.ndarray, cy: np.ndarray, qx: np.ndarray) -> np.ndarray:
    """Per task and token: build tokens, softmax attention (causal context, queries see context + self), LSA."""
    wq, wk, wv, wo = (w.detach().numpy() for w in (m.q_weight, m.k_weight, m.v_weight, m.o_weight))
    kq, pv = (t.detach().numpy()[0, 0] for t in m.lsa.matrices())
    b_, n, d = cx.shape
    p, dim = 2 * m.max_context + 1, 2 * m.max_context + 1 + d + 1
    out = np.zeros(qx.shape[:2])
    for b in range(b_):
        toks = []
        for i in range(n):
            t = np.zeros(dim); t[2 * i] = 1; t[p:p + d] = cx[b, i]; toks.append(t)  # noqa: E702
            t = np.zeros(dim); t[2 * i + 1] = 1; t[-1] = cy[b, i]; toks.append(t)  # noqa: E702
        for q in range(qx.shape[1]):
            t = np.zeros(dim); t[2 * n] = 1; t[p:p + d] = qx[b, q]; toks.append(t)  # noqa: E702
        toks = np.array(toks)
        new = toks.copy()
        for s in range(len(toks)):
            keys = list(range(s + 1)) if s < 2 * n else list(range(2 * n)) + [s]
            for h in range(m.heads):
                sc = np.array([(wq[h] @ toks[s]) @ (wk[h] @ toks[j]) for j in keys]) / np.sqrt(dim)
                a = np.exp(sc - sc.max()); a /= a.sum()  # noqa: E702
                new[s] += wo[h] @ sum(a[i] * (wv[h] @ toks[j]) for i, j in enumerate(keys))
        ctx = new[:2 * n]
        for q in range(qx.shape[1]):
            e = new[2 * n + q]
            upd = sum((pv @ c) * (c @ kq @ e) for c in ctx) / (2 * n)
            out[b, q] = -(e + upd)[-1]
    return out


def test_forward_matches_numpy_per_token():
    m = CopyLSA(d=2, max_context=4, heads=2, init_std=0.4, lsa_init_std=0.2, seed=1).to(F64)
    g = torch.Generator().manual_seed(0)
    cx, cy, qx = torch.randn(2, 3, 2, generator=g, dtype=F64), torch.randn(2, 3, generator=g, dtype=F64), \
        torch.randn(2, 2, 2, generator=g, dtype=F64)
    with torch.no_grad():
        got = m(cx, cy, qx).numpy()
    np.testing.assert_allclose(got, np_forward(m, cx.numpy(), cy.numpy(), qx.numpy()), rtol=1e-9, atol=1e-12)
    # queries never see each other: one query alone gives the same prediction
    with torch.no_grad():
        assert np.allclose(m(cx, cy, qx[:, 1:]).numpy()[:, 0], got[:, 1], rtol=1e-12, atol=1e-13)
    att = m.attention(cx, cy, qx)
    assert att.shape == (2, 2, 8, 8) and torch.allclose(att.sum(-1), torch.ones(2, 2, 8, dtype=F64))


def test_spec_roundtrip_and_checks():
    m = CopyLSA(d=3, max_context=5, heads=2, seed=4)
    m2 = models.build(m.spec())
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values(), strict=True))
    with pytest.raises(ShapeError, match="N <= 5"):
        m(torch.zeros(1, 6, 3), torch.zeros(1, 6), torch.zeros(1, 1, 3))
