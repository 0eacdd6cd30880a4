"""Weight-tied (recurrent) LSA: one layer applied K times, checked against a NumPy token-by-token loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mesaopt
from mesaopt.errors import ConfigError
from mesaopt.models import LSA, build


def numpy_tied(kq: np.ndarray, pv: np.ndarray, cx, cy, qx, applications: int, clip: float = np.inf) -> np.ndarray:
    """The same layer applied ``applications`` times, every token updated from the context tokens, then clipped."""
    ctx = np.concatenate([cx, cy[..., None]], -1)
    qry = np.concatenate([qx, np.zeros(qx.shape[:-1] + (1,))], -1)
    n = ctx.shape[1]
    for _ in range(applications):
        s = np.einsum("bni,bnj->bij", ctx, ctx) / n
        m = sum(pv[h] @ s @ kq[h] for h in range(kq.shape[0]))  # (B, D, D)
        ctx, qry = ctx + np.einsum("bij,bnj->bni", m, ctx), qry + np.einsum("bij,bqj->bqi", m, qry)
        ctx, qry = np.clip(ctx, -clip, clip), np.clip(qry, -clip, clip)
    return -qry[..., -1]


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(3)
    return (torch.rand(4, 7, 3, generator=g, dtype=torch.float64) - 0.5, torch.randn(4, 7, generator=g,
            dtype=torch.float64), torch.rand(4, 2, 3, generator=g, dtype=torch.float64) - 0.5)


@pytest.mark.parametrize("param", ["merged", "separate"])
@pytest.mark.parametrize("heads", [1, 2])
def test_tied_is_one_layer_applied_k_times(data, param, heads):
    m = LSA(d=3, layers=4, heads=heads, param=param, init_std=0.3, seed=1, tied=True).double()
    kq, pv = (t.detach().numpy() for t in m.matrices())
    assert np.array_equal(kq[0], kq[3]) and np.array_equal(pv[1], pv[2])
    cx, cy, qx = data
    ref = numpy_tied(kq[0], pv[0], cx.numpy(), cy.numpy(), qx.numpy(), 4)
    np.testing.assert_allclose(m(cx, cy, qx).detach().numpy(), ref, rtol=1e-10, atol=1e-12)
    layers = m.forward_layers(cx, cy, qx).detach().numpy()
    for k in range(4):
        np.testing.assert_allclose(layers[k], numpy_tied(kq[0], pv[0], cx.numpy(), cy.numpy(), qx.numpy(), k + 1),
                                   rtol=1e-10, atol=1e-12)


def test_tied_stores_one_layer_and_gradients_reach_it(data):
    tied = LSA(d=3, layers=5, init_std=0.2, tied=True).double()
    assert tied.kq_weight.shape == (1, 1, 4, 4)
    assert sum(p.numel() for p in tied.parameters()) == 2 * 16
    tied(*data).sum().backward()
    assert tied.kq_weight.grad is not None and tied.kq_weight.grad.abs().sum() > 0


def test_hooks_prefix_and_load_matrices(data):
    m = LSA(d=3, layers=3, heads=2, init_std=0.3, seed=2, tied=True).double()
    cx, cy, qx = data
    pred, cache = m.run_with_cache(cx, cy, qx)
    assert torch.allclose(pred, m(cx, cy, qx), atol=1e-12)
    assert {"blocks.0.attn.hook_pattern", "blocks.2.hook_resid_post"} <= set(cache)
    xs, ys = torch.cat([cx, qx], 1), torch.cat([cy, torch.zeros(4, 2, dtype=torch.float64)], 1)
    assert torch.allclose(m.prefix(xs, ys), m.prefix_quadratic(xs, ys), atol=1e-10)
    with m.hooks([("blocks.1.hook_resid_pre", lambda x, name: x)]):
        assert torch.allclose(m.prefix(xs, ys), m.prefix_quadratic(xs, ys), atol=1e-10)
    kq, pv = (t.detach().clone() for t in m.matrices())
    other = LSA(d=3, layers=3, heads=2, tied=True).double().load_matrices(kq, pv)
    assert torch.equal(other(cx, cy, qx), m(cx, cy, qx))
    kq[1] += 1.0
    with pytest.raises(ConfigError, match="tied"):
        other.load_matrices(kq, pv)
    with pytest.raises(ConfigError, match="model.tied"):
        LSA(d=3, tied="yes")


def test_spec_and_pretrained_roundtrip(data, tmp_path):
    m = LSA(d=3, layers=3, init_std=0.3, seed=4, tied=True)
    assert m.spec()["tied"] is True
    assert build(m.spec()).kq_weight.shape == m.kq_weight.shape
    loaded = mesaopt.load(m.save_pretrained(tmp_path / "tied"))
    assert loaded.tied and loaded.layers == 3
    x = [t.float() for t in data]
    assert torch.equal(loaded(*x), m(*x))
    assert LSA(d=3).spec()["tied"] is False


def test_clip_clamps_every_token_after_every_layer(data):
    m = LSA(d=3, layers=4, init_std=1.5, seed=5, tied=True, clip=2.0).double()
    kq, pv = (t.detach().numpy()[0] for t in m.matrices())
    cx, cy, qx = data
    ref = numpy_tied(kq, pv, cx.numpy(), cy.numpy(), qx.numpy(), 4, clip=2.0)
    assert np.abs(numpy_tied(kq, pv, cx.numpy(), cy.numpy(), qx.numpy(), 4) - ref).max() > 1e-3  # clipping bites
    np.testing.assert_allclose(m(cx, cy, qx).detach().numpy(), ref, rtol=1e-10, atol=1e-12)
    pred, _ = m.run_with_cache(cx, cy, qx)
    np.testing.assert_allclose(pred.detach().numpy(), ref, rtol=1e-10, atol=1e-12)
    xs, ys = torch.cat([cx, qx], 1), torch.cat([cy, torch.zeros(4, 2, dtype=torch.float64)], 1)
    assert torch.allclose(m.prefix(xs, ys), m.prefix_quadratic(xs, ys))
    assert torch.allclose(m.prefix_layers(xs, ys)[-1], m.prefix(xs, ys))
    with m.hooks([("blocks.0.hook_resid_pre", lambda x, name: x)]):
        assert torch.allclose(m.prefix(xs, ys), m.prefix_quadratic(xs, ys), atol=1e-10)
    assert build(m.spec()).clip == 2.0
    with pytest.raises(ConfigError, match="model.clip"):
        LSA(d=3, clip=0.0)
