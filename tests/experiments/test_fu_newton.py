"""fu-newton: error-similarity matrix, probed per-layer read-out, config checks, quick end-to-end run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mesaopt.analysis import probes
from mesaopt.experiments import fu_newton as fn
from mesaopt.experiments import make_config
from mesaopt.models.gpt import GPT
from mesaopt.tasks import LinearRegression


def test_err_cos_matrix_matches_numpy():
    g = torch.Generator().manual_seed(0)
    a, b, y = torch.randn(4, 6, 2, generator=g), torch.randn(3, 6, 2, generator=g), torch.randn(6, 2, generator=g)
    got = fn.err_cos_matrix(a, b, y).numpy()
    for i in range(4):
        for j in range(3):
            ea, eb = (a[i] - y).flatten().numpy(), (b[j] - y).flatten().numpy()
            assert got[i, j] == pytest.approx(ea @ eb / np.linalg.norm(ea) / np.linalg.norm(eb), rel=1e-6)


def test_probed_layers_equal_probe_on_hidden_states():
    model = GPT(d=3, n_positions=8, layers=2, heads=2, width=16).eval()
    task = LinearRegression(d=3, x_dist="anisotropic", condition_number=10.0)
    cx, cy, qx, qy = task.sample(64, 7, torch.Generator().manual_seed(0)).split(6)
    hs = probes.query_hidden_states(model, cx, cy, qx)[1:, :, 0]
    w = probes.fit_probe(hs, qy, lam=1e-3)
    with torch.no_grad():
        got = probes.ProbeReadout(model, w).forward_layers(cx, cy, qx)
    want = probes.probe_predict(hs, w)[..., 0]
    torch.testing.assert_close(got.double()[..., 0], want, rtol=1e-4, atol=1e-5)


def test_config_checks():
    with pytest.raises(Exception, match="readout"):
        make_config("fu-newton", overrides={"readout": "lens"})
    cfg = make_config("fu-newton", quick=True)
    assert cfg.train.objective == "prefix" and cfg.layers == 4


@pytest.mark.slow
def test_quick_run(tmp_path):
    from mesaopt.experiments import run

    res = run("fu-newton", out=tmp_path / "r", quick=True, progress=False)
    m = res.metrics
    for layer in range(1, 5):
        assert 0 <= m[f"best_newton_iter_l{layer}"] <= 8 and m[f"best_gd_steps_l{layer}"] >= 1
        assert -1.0 <= m[f"newton_sim_l{layer}"] <= 1.0
    assert "newton_vs_gd.png" in res.artifacts
