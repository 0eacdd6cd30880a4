from __future__ import annotations

import numpy as np
import pytest
import torch

import mesaopt.models as models
from mesaopt.errors import ConfigError, ShapeError
from mesaopt.learner import Learner, prefix_by_solves
from mesaopt.models.lsa import LSA, READOUT_SIGN

F64 = torch.float64


def _data(gen, b=3, n=6, q=4, d=3):
    return (torch.randn(b, n, d, generator=gen, dtype=F64), torch.randn(b, n, generator=gen, dtype=F64),
            torch.randn(b, q, d, generator=gen, dtype=F64))


def _naive(model: LSA, cx, cy, qx) -> np.ndarray:
    """Independent reference: explicit per-task, per-token attention sums in NumPy -> (L, B, Q)."""
    kq, pv = (m.detach().numpy() for m in model.matrices())
    L, H = kq.shape[:2]
    B, N, _ = cx.shape
    out = np.zeros((L, B, qx.shape[1]))
    for b in range(B):
        ctx = np.concatenate([cx[b].numpy(), cy[b].numpy()[:, None]], axis=1)
        qry = np.concatenate([qx[b].numpy(), np.zeros((qx.shape[1], 1))], axis=1)
        for layer in range(L):
            toks = np.concatenate([ctx, qry])
            new = toks.copy()
            for j in range(len(toks)):
                for h in range(H):
                    for i in range(N):
                        score = ctx[i] @ kq[layer, h] @ toks[j]
                        new[j] += (pv[layer, h] @ ctx[i]) * score / (N if model.normalize else 1)
            ctx, qry = new[:N], new[N:]
            out[layer, b] = READOUT_SIGN * qry[:, -1]
    return out


@pytest.mark.parametrize("param,layers,heads,normalize", [("merged", 1, 1, True), ("merged", 3, 2, True),
                                                          ("separate", 2, 3, True), ("merged", 2, 1, False)])
def test_forward_matches_naive_attention(gen, param, layers, heads, normalize):
    m = LSA(d=3, layers=layers, heads=heads, param=param, normalize=normalize, init_std=0.4, seed=1).to(F64)
    cx, cy, qx = _data(gen)
    ref = _naive(m, cx, cy, qx)
    got = m.forward_layers(cx, cy, qx)
    assert got.shape == (layers, 3, 4)
    np.testing.assert_allclose(got.detach().numpy(), ref, rtol=1e-10, atol=1e-12)
    assert torch.equal(m(cx, cy, qx), got[-1])
    assert isinstance(m, Learner)


def test_spec_roundtrip_and_seeded_init():
    m = LSA(d=4, layers=2, heads=2, param="separate", key_size=3, seed=7)
    spec = m.spec()
    assert spec["kind"] == "lsa" and "lsa" in models.kinds()
    m2 = models.build(spec)
    for (k, v), (k2, v2) in zip(m.state_dict().items(), m2.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)
    m3 = LSA(d=4, layers=2, heads=2, param="separate", key_size=3, seed=8)
    assert not torch.equal(m.k_weight, m3.k_weight)
    assert m.k_weight.shape == (2, 2, 3, 5) and m.p_weight.shape == (2, 2, 5, 3)
    assert m.w_kq(1, 1).shape == (5, 5)
    torch.testing.assert_close(m.w_kq(1, 0), m.k_weight[1, 0].T @ m.q_weight[1, 0])
    torch.testing.assert_close(m.w_pv(0, 1), m.p_weight[0, 1] @ m.v_weight[0, 1])


def test_merged_equals_separate_for_equal_matrices(gen):
    sep = LSA(d=3, layers=3, heads=2, param="separate", key_size=2, init_std=0.5, seed=3).to(F64)
    mer = LSA(d=3, layers=3, heads=2, param="merged").to(F64)
    with torch.no_grad():
        mer.load_matrices(*sep.matrices())
    for layer in range(3):
        for head in range(2):
            torch.testing.assert_close(mer.w_kq(layer, head), sep.w_kq(layer, head))
            torch.testing.assert_close(mer.w_pv(layer, head), sep.w_pv(layer, head))
    cx, cy, qx = _data(gen)
    torch.testing.assert_close(mer.forward_layers(cx, cy, qx), sep.forward_layers(cx, cy, qx), rtol=1e-12, atol=1e-12)


def test_queries_independent_and_context_permutation_invariant(gen):
    m = LSA(d=3, layers=3, heads=2, init_std=0.4).to(F64)
    cx, cy, qx = _data(gen)
    full = m(cx, cy, qx)
    torch.testing.assert_close(m(cx, cy, qx[:, :1]), full[:, :1], rtol=1e-12, atol=1e-12)
    perm = torch.tensor([3, 1, 0, 2])
    torch.testing.assert_close(m(cx, cy, qx[:, perm]), full[:, perm], rtol=1e-12, atol=1e-12)
    cperm = torch.randperm(6, generator=gen)
    torch.testing.assert_close(m(cx[:, cperm], cy[:, cperm], qx), full, rtol=1e-10, atol=1e-12)
    # tasks are independent too
    torch.testing.assert_close(m(cx[1:2], cy[1:2], qx[1:2]), full[1:2], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layers,normalize", [(1, True), (2, True), (3, False)])
def test_prefix_equals_solves(gen, layers, normalize):
    m = LSA(d=3, layers=layers, heads=2, normalize=normalize, init_std=0.3, seed=2).to(F64)
    xs, ys = torch.randn(2, 7, 3, generator=gen, dtype=F64), torch.randn(2, 7, generator=gen, dtype=F64)
    got = m.prefix(xs, ys)
    assert got.shape == (2, 7)
    torch.testing.assert_close(got, prefix_by_solves(m, xs, ys), rtol=1e-9, atol=1e-12)
    assert torch.count_nonzero(got[:, 0]) == 0  # empty context predicts 0


def test_empty_context_predicts_zero(gen):
    m = LSA(d=3, layers=2, init_std=0.5).to(F64)
    _, _, qx = _data(gen)
    out = m(qx[:, :0], torch.zeros(3, 0, dtype=F64), qx)
    assert torch.count_nonzero(out) == 0


def test_gradients_reach_all_parameters(gen):
    m = LSA(d=3, layers=2, heads=2, param="separate", init_std=0.3).to(F64)
    cx, cy, qx = _data(gen)
    m(cx, cy, qx).pow(2).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_bad_inputs_and_config(gen):
    m = LSA(d=3)
    cx, cy, qx = _data(gen)
    with pytest.raises(ShapeError, match="float64"):
        m(cx, cy, qx)
    with pytest.raises(ShapeError, match="d=4"):
        m.to(F64)(torch.zeros(1, 2, 4, dtype=F64), torch.zeros(1, 2, dtype=F64), torch.zeros(1, 1, 4, dtype=F64))
    with pytest.raises(ShapeError):
        m(cx, cy[:, :2], qx)
    for kw in [dict(param="softmax"), dict(layers=0), dict(heads=0), dict(key_size=2), dict(init_std=-1.0),
               dict(init_std=float("nan")), dict(d=0), dict(normalize="yes")]:
        with pytest.raises(ConfigError):
            LSA(**{"d": 3, **kw})
    with pytest.raises(ConfigError):
        m.w_kq(1, 0)
    with pytest.raises(ConfigError):
        LSA(d=3, param="separate").load_matrices(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ShapeError):
        m.load_matrices(torch.zeros(1, 1, 3, 3), torch.zeros(1, 1, 3, 3))
