"""SoftmaxAttention against a per-token NumPy reference; prefix against one solve per position."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mesaopt.models as M
from mesaopt.errors import ConfigError, ShapeError
from mesaopt.learner import prefix_by_solves
from mesaopt.models.softmax import SoftmaxAttention


def data(b=3, t=7, d=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, d, generator=g, dtype=dtype), torch.randn(b, t, generator=g, dtype=dtype)


def model(context="full", layers=2, heads=2, key_size=None, seed=1):
    m = SoftmaxAttention(d=3, layers=layers, heads=heads, key_size=key_size, context=context, init_std=0.7,
                         seed=seed)
    return m.double()


def np_reference(m: SoftmaxAttention, ctx_x, ctx_y, qry_x) -> np.ndarray:
    """Token-by-token loops: returns the per-layer predictions (L, B, Q)."""
    Wq, Wk, Wv, Wo = (w.detach().numpy() for w in (m.q_weight, m.k_weight, m.v_weight, m.o_weight))
    B, N, d = ctx_x.shape
    Q = qry_x.shape[1]
    out = np.zeros((m.layers, B, Q))
    for b in range(B):
        z = [np.append(ctx_x[b, i].numpy(), ctx_y[b, i].item()) for i in range(N)]
        z += [np.append(qry_x[b, j].numpy(), 0.0) for j in range(Q)]
        for layer in range(m.layers):
            new = []
            for s in range(N + Q):
                keys = list(range(N)) if (m.context == "full" or s >= N) else list(range(s + 1))
                upd = np.zeros(d + 1)
                for h in range(m.heads):
                    if not keys:
                        continue
                    qv = Wq[layer, h] @ z[s]
                    sc = np.array([qv @ (Wk[layer, h] @ z[i]) for i in keys]) / np.sqrt(Wq.shape[2])
                    a = np.exp(sc - sc.max())
                    a /= a.sum()
                    upd += Wo[layer, h] @ sum(a[r] * (Wv[layer, h] @ z[i]) for r, i in enumerate(keys))
                new.append(z[s] + upd)
            z = new
            for j in range(Q):
                out[layer, b, j] = -z[N + j][-1]
    return out


@pytest.mark.parametrize("context", ["full", "causal"])
@pytest.mark.parametrize("key_size", [None, 2])
def test_forward_matches_numpy(context, key_size):
    m = model(context, key_size=key_size)
    xs, ys = data()
    ctx_x, ctx_y, qry_x = xs[:, :5], ys[:, :5], xs[:, 5:]
    got = m.forward_layers(ctx_x, ctx_y, qry_x).detach().numpy()
    np.testing.assert_allclose(got, np_reference(m, ctx_x, ctx_y, qry_x), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(m(ctx_x, ctx_y, qry_x), torch.as_tensor(got[-1]))


@pytest.mark.parametrize("context", ["full", "causal"])
def test_prefix_matches_solves(context):
    m = model(context, layers=3)
    xs, ys = data(t=6)
    torch.testing.assert_close(m.prefix(xs, ys), prefix_by_solves(m, xs, ys), rtol=1e-10, atol=1e-10)
    pl = m.prefix_layers(xs, ys)
    assert pl.shape == (3, 3, 6)
    torch.testing.assert_close(pl[:, :, 4], m.forward_layers(xs[:, :4], ys[:, :4], xs[:, 4:5])[..., 0])
    assert torch.all(pl[:, :, 0] == 0)  # empty context: no update, y-slot stays 0


def test_queries_do_not_see_each_other():
    m = model()
    xs, ys = data(t=8)
    both = m(xs[:, :5], ys[:, :5], xs[:, 5:])
    alone = m(xs[:, :5], ys[:, :5], xs[:, 6:7])
    torch.testing.assert_close(both[:, 1], alone[:, 0])


def test_causal_context_ignores_later_context_for_early_positions():
    m = model("causal")
    xs, ys = data(t=7)
    p = m.prefix(xs, ys)
    ys2 = ys.clone()
    ys2[:, 4] += 5.0
    p2 = m.prefix(xs, ys2)
    torch.testing.assert_close(p[:, :5], p2[:, :5])
    assert (p[:, 5:] - p2[:, 5:]).abs().max() > 1e-6


def test_spec_seed_and_errors():
    a = SoftmaxAttention(d=4, layers=2, heads=3, key_size=5, context="causal", seed=3)
    b = M.build(a.spec())
    assert b.spec() == a.spec() and torch.equal(a.q_weight, b.q_weight)
    assert a.q_weight.shape == (2, 3, 5, 5) and a.o_weight.shape == (2, 3, 5, 5)
    assert not torch.equal(a.q_weight, SoftmaxAttention(d=4, layers=2, heads=3, key_size=5, seed=4).q_weight)
    with pytest.raises(ConfigError, match="context"):
        SoftmaxAttention(d=2, context="bidirectional")
    with pytest.raises(ConfigError, match="layers"):
        SoftmaxAttention(d=2, layers=0)
    with pytest.raises(ShapeError, match="d=2"):
        SoftmaxAttention(d=2)(torch.randn(1, 3, 3), torch.randn(1, 3), torch.randn(1, 1, 3))
    with pytest.raises(ShapeError):
        SoftmaxAttention(d=2)(torch.randn(1, 3, 2), torch.randn(1, 4), torch.randn(1, 1, 2))


def test_gradients_finite_with_empty_context_rows():
    m = SoftmaxAttention(d=2, layers=2, context="causal")
    xs, ys = data(b=2, t=4, d=2, dtype=torch.float32)
    m.prefix(xs, ys).pow(2).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())
