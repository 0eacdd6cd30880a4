"""LSA token clipping (von Oswald et al.'s deep models clip every token to [-c, c] after each layer)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mesaopt.models as models
from mesaopt.errors import ConfigError
from mesaopt.models.lsa import LSA

F64 = torch.float64


def _probe(clip: float | None) -> LSA:
    """d = 1, two layers: layer 0 does nothing, layer 1 writes -(1/N) sum_i x_i^2 x_q into the query's y-slot,
    so the prediction is mean_i(x_i^2) * x_q (x_i as they leave layer 0)."""
    m = LSA(d=1, layers=2, init_std=0.0, clip=clip).double()
    kq, pv = torch.zeros(2, 1, 2, 2, dtype=F64), torch.zeros(2, 1, 2, 2, dtype=F64)
    kq[1, 0, 0, 0] = 1.0
    pv[1, 0, 1, 0] = -1.0
    return m.load_matrices(kq, pv)


def _numpy_clipped(model: LSA, cx, cy, qx, c: float) -> np.ndarray:
    """Independent reference: per-token LSA in NumPy, every token clipped to [-c, c] after each layer -> (B, Q)."""
    kq, pv = (t.detach().numpy() for t in model.matrices())  # (L, H, D, D)
    out = []
    for b in range(cx.shape[0]):
        ctx = np.concatenate([cx[b].numpy(), cy[b].numpy()[:, None]], axis=1)
        qry = np.concatenate([qx[b].numpy(), np.zeros((qx.shape[1], 1))], axis=1)
        for layer in range(kq.shape[0]):
            s = ctx.T @ ctx / ctx.shape[0]
            m = sum(pv[layer, h] @ s @ kq[layer, h] for h in range(kq.shape[1]))
            ctx, qry = np.clip(ctx + ctx @ m.T, -c, c), np.clip(qry + qry @ m.T, -c, c)
        out.append(-qry[:, -1])
    return np.array(out)


def test_hand_built_input_above_ten_is_clipped_between_layers():
    cx, cy = torch.full((1, 4, 1), 50.0, dtype=F64), torch.zeros(1, 4, dtype=F64)
    qx = torch.tensor([[[1e-3]]], dtype=F64)
    # no clipping: 50^2 * 1e-3 = 2.5; clipped to 10 after layer 0: 10^2 * 1e-3 = 0.1
    assert float(_probe(None)(cx, cy, qx).detach()) == pytest.approx(2.5)
    assert float(_probe(10.0)(cx, cy, qx).detach()) == pytest.approx(0.1)
    # the last layer's output is clipped too: x_q = 1 gives 100 unclipped, 10 clipped
    qx1 = torch.ones(1, 1, 1, dtype=F64)
    assert float(_probe(None)(cx, cy, qx1).detach()) == pytest.approx(2500.0)
    assert float(_probe(10.0)(cx, cy, qx1).detach()) == pytest.approx(10.0)


def test_clipped_forward_hooked_and_prefix_paths_match_numpy():
    gen = torch.Generator().manual_seed(0)
    m = LSA(d=3, layers=3, heads=2, init_std=0.2, seed=1, clip=2.0).double()
    cx, cy = torch.randn(4, 6, 3, generator=gen, dtype=F64), torch.randn(4, 6, generator=gen, dtype=F64)
    qx = torch.randn(4, 2, 3, generator=gen, dtype=F64)
    ref = _numpy_clipped(m, cx, cy, qx, 2.0)
    unclipped = LSA(d=3, layers=3, heads=2, init_std=0.2, seed=1).double()(cx, cy, qx).detach().numpy()
    assert np.abs(unclipped - ref).max() > 0.1  # the clip is active on this data ...
    assert np.mean(np.abs(ref) < 2.0 - 1e-9) > 0.3  # ... without saturating every prediction
    np.testing.assert_allclose(m(cx, cy, qx).detach().numpy(), ref, rtol=1e-10, atol=1e-10)
    hooked, cache = m.run_with_cache(cx, cy, qx)
    assert "blocks.0.hook_resid_post" in cache  # the hooked path ran
    np.testing.assert_allclose(hooked.detach().numpy(), ref, rtol=1e-10, atol=1e-10)
    assert float(cache["blocks.0.hook_resid_post"].abs().max()) <= 2.0
    # prefix: position t predicts from the first t points, like a forward pass on that context
    xs, ys = torch.cat([cx, qx[:, :1]], 1), torch.cat([cy, cy[:, :1]], 1)
    pre, layers = m.prefix(xs, ys), m.prefix_layers(xs, ys)
    for t in (1, 3, 6):
        want = _numpy_clipped(m, xs[:, :t], ys[:, :t], xs[:, t:t + 1], 2.0)[:, 0]
        np.testing.assert_allclose(pre[:, t].detach().numpy(), want, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(layers[-1, :, t].detach().numpy(), want, rtol=1e-10, atol=1e-10)


def test_clip_is_off_by_default_kept_in_the_spec_and_validated():
    assert LSA(d=2).clip is None
    m = LSA(d=2, layers=2, clip=10.0)
    assert models.build(m.spec()).clip == 10.0
    with pytest.raises(ConfigError, match="model.clip"):
        LSA(d=2, clip=-1.0)
