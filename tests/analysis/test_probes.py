"""Linear probes: closed-form ridge probe vs scikit-learn, R^2 on planted signals, hidden states of LSA and GPT."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mesaopt import constructions
from mesaopt.analysis import probes
from mesaopt.errors import ShapeError
from mesaopt.models import LSA
from mesaopt.tasks import LinearRegression


def test_fit_probe_matches_sklearn_ridge():
    sk = pytest.importorskip("sklearn.linear_model")
    g = torch.Generator().manual_seed(0)
    f = torch.randn(2, 50, 4, generator=g, dtype=torch.float64)
    t = torch.randn(50, 3, generator=g, dtype=torch.float64)
    lam = 0.1
    w = probes.fit_probe(f, t, lam)
    for layer in range(2):
        ref = sk.Ridge(alpha=lam * 50, fit_intercept=True).fit(f[layer].numpy(), t.numpy())
        np.testing.assert_allclose(w[layer, :-1].numpy(), ref.coef_.T, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(w[layer, -1].numpy(), ref.intercept_, rtol=1e-6, atol=1e-8)
    pred = probes.probe_predict(f, w)
    np.testing.assert_allclose(pred[1].numpy(), sk.Ridge(alpha=lam * 50).fit(f[1].numpy(), t.numpy()).predict(
        f[1].numpy()), rtol=1e-6, atol=1e-8)
    with pytest.raises(ShapeError):
        probes.fit_probe(f[0], t)


def test_probe_r2_planted_signal_vs_noise():
    g = torch.Generator().manual_seed(1)
    target = torch.randn(400, 3, generator=g, dtype=torch.float64)
    mix = torch.randn(3, 6, generator=g, dtype=torch.float64)
    signal = target @ mix + 0.01 * torch.randn(400, 6, generator=g, dtype=torch.float64)
    noise = torch.randn(400, 6, generator=g, dtype=torch.float64)
    r2 = probes.probe_r2(torch.stack([noise, signal]), target, generator=torch.Generator().manual_seed(0))
    assert r2.shape == (2, 3)
    assert (r2[1] > 0.999).all() and (r2[0] < 0.1).all()


def test_lsa_query_states_end_in_the_model_readout():
    task = LinearRegression(d=3, x_dist="gaussian")
    cx, cy, qx, _ = task.sample(8, 7, torch.Generator().manual_seed(0)).split(5)
    model = LSA(d=3, layers=3, init_std=0.3, seed=4)
    hs = probes.query_hidden_states(model, cx, cy, qx)
    assert hs.shape == (4, 8, 2, 4)
    torch.testing.assert_close(-hs[1:, ..., -1], model.forward_layers(cx, cy, qx), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hs[0, ..., :3], qx)


def test_probe_layers_gd_construction_encodes_nothing_but_predicts():
    # a 1-step GD construction: the query token's y-slot is -w_gd1^T x_q, so w itself is not linearly decodable
    lsa = constructions.lsa_gd(d=3, steps=1, lr=1.0)
    task = LinearRegression(d=3, x_dist="gaussian")
    out = probes.probe_layers(lsa, task, n_context=6, batch_size=600)
    assert set(out) == {"w", "ols", "gd1"} and all(len(v) == 2 for v in out.values())
    assert all(v < 0.2 for vals in out.values() for v in vals)


def test_gpt_hidden_states_at_query():
    from mesaopt.models.gpt import GPT

    model = GPT(d=3, n_positions=8, layers=2, heads=2, width=16).eval()
    task = LinearRegression(d=3, x_dist="gaussian")
    cx, cy, qx, _ = task.sample(4, 7, torch.Generator().manual_seed(0)).split(5)
    hs = probes.query_hidden_states(model, cx, cy, qx)
    assert hs.shape == (3, 4, 2, 16)
    with torch.no_grad():
        want = model.readout(hs[1:])
        got = model.forward_layers(cx, cy, qx)
    torch.testing.assert_close(want, got, rtol=1e-5, atol=1e-5)
