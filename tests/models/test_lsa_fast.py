"""Fast LSA paths (running-sum prefix, matmul-chain forward) against their slow references."""

from __future__ import annotations

import pytest
import torch

from mesaopt.learner import prefix_by_solves
from mesaopt.models.lsa import LSA

F64 = torch.float64


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


def _seq(gen, b=3, t=9, d=4, dtype=F64):
    return torch.randn(b, t, d, generator=gen, dtype=dtype), torch.randn(b, t, generator=gen, dtype=dtype)


CASES = [
    dict(layers=1, heads=1),
    dict(layers=2, heads=1),
    dict(layers=3, heads=2),
    dict(layers=4, heads=3, normalize=False, init_std=0.1),
    dict(layers=3, heads=2, param="separate", key_size=2),
]


@pytest.mark.parametrize("kw", CASES)
def test_prefix_linear_equals_quadratic_and_solves(gen, kw):
    m = LSA(d=4, seed=3, **{"init_std": 0.3, **kw}).to(F64)
    xs, ys = _seq(gen)
    fast = m.prefix(xs, ys)
    quad = m.prefix_quadratic(xs, ys)
    torch.testing.assert_close(fast, quad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(fast, prefix_by_solves(m, xs, ys), rtol=1e-10, atol=1e-12)
    assert torch.count_nonzero(fast[:, 0]) == 0


@pytest.mark.parametrize("kw", CASES)
def test_forward_chain_equals_token_updates(gen, kw):
    m = LSA(d=4, seed=5, **{"init_std": 0.3, **kw}).to(F64)
    cx, cy = _seq(gen, t=7)
    qx = torch.randn(3, 5, 4, generator=gen, dtype=F64)
    torch.testing.assert_close(m.forward_layers(cx, cy, qx), m.forward_layers_reference(cx, cy, qx),
                               rtol=1e-10, atol=1e-12)


def test_prefix_layers_last_is_prefix_and_first_is_one_layer(gen):
    m = LSA(d=4, layers=3, heads=2, init_std=0.3, seed=7).to(F64)
    xs, ys = _seq(gen)
    per = m.prefix_layers(xs, ys)
    assert per.shape == (3, 3, 9)
    torch.testing.assert_close(per[-1], m.prefix(xs, ys), rtol=0, atol=0)
    one = LSA(d=4, layers=1, heads=2, init_std=0.3, seed=7).to(F64)
    with torch.no_grad():
        one.kq_weight.copy_(m.kq_weight[:1])
        one.pv_weight.copy_(m.pv_weight[:1])
    torch.testing.assert_close(per[0], one.prefix(xs, ys), rtol=1e-12, atol=1e-12)


def test_prefix_gradients_match_quadratic(gen):
    xs, ys = _seq(gen, b=2, t=6, d=3)
    grads = []
    for fn in ("prefix", "prefix_quadratic"):
        m = LSA(d=3, layers=3, heads=2, init_std=0.3, seed=11).to(F64)
        getattr(m, fn)(xs, ys).pow(2).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-9, atol=1e-12)


def test_float32_fast_paths_close_to_float64(gen):
    m64 = LSA(d=5, layers=4, heads=2, init_std=0.2, seed=13).to(F64)
    xs, ys = _seq(gen, b=4, t=40, d=5)
    ref = m64.prefix_quadratic(xs, ys)
    m32 = LSA(d=5, layers=4, heads=2, init_std=0.2, seed=13)
    got = m32.prefix(xs.float(), ys.float()).double()
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


def test_prefix_memory_is_linear_in_t(gen):
    """The fast prefix never builds the (B, T, T, D) tensor: at T=3000 the quadratic form would need ~2 GB."""
    m = LSA(d=4, layers=2, heads=1, init_std=0.2, seed=1)
    xs, ys = _seq(gen, b=1, t=3000, d=4, dtype=torch.float32)
    out = m.prefix(xs, ys)
    assert out.shape == (1, 3000) and torch.isfinite(out).all()
