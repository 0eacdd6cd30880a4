"""mahankali-optimal: the closed-form one-step risk and optimal lr against Monte Carlo; a quick end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mesaopt.algorithms import GD
from mesaopt.experiments import mahankali as mk
from mesaopt.tasks import LinearRegression


@pytest.mark.parametrize("d, n, noise, s", [(3, 5, 0.0, 1.0), (4, 12, 0.7, 1.0), (2, 3, 0.3, 0.5)])
def test_closed_form_risk_matches_monte_carlo(d, n, noise, s):
    task = LinearRegression(d=d, noise_std=noise, x_dist="gaussian", w_scale=s)
    b = task.sample(20000, n + 4, torch.Generator().manual_seed(d * 100 + n), dtype=torch.float64)
    cx, cy, qx, qy = b.split(n)
    base = GD(steps=1, lr=1.0)(cx, cy, qx)
    for eta in (0.2, mk.optimal_one_step_lr(d, n, noise, s), 0.9):
        mc = float(((eta * base - qy) ** 2).mean())
        assert mk.one_step_risk(eta, d, n, noise, s) == pytest.approx(mc, rel=0.05)
    # the MC-optimal lr over a fine grid agrees with eta*
    etas = np.linspace(0.05, 1.5, 300)
    mc = [float(((e * base - qy) ** 2).mean()) for e in etas]
    assert etas[int(np.argmin(mc))] == pytest.approx(mk.optimal_one_step_lr(d, n, noise, s), abs=0.08)


def test_optimum_is_stationary_and_effective_lr():
    d, n, noise = 5, 7, 0.4
    eta = mk.optimal_one_step_lr(d, n, noise)
    h = 1e-5
    assert (mk.one_step_risk(eta + h, d, n, noise) - mk.one_step_risk(eta - h, d, n, noise)) / (2 * h) \
        == pytest.approx(0.0, abs=1e-6)
    assert mk.one_step_risk(eta, d, n, noise) == pytest.approx(mk.optimal_one_step_risk(d, n, noise), rel=1e-12)
    assert eta == pytest.approx(n / (n + d + 1 + noise**2))
    g = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    assert mk.effective_lr(0.37 * g, g) == pytest.approx(0.37, rel=1e-6)


@pytest.mark.slow
def test_quick_run(tmp_path):
    from mesaopt.experiments import run

    res = run("mahankali-optimal", out=tmp_path / "r", quick=True, progress=False)
    m = res.metrics
    for k in ("lsa_loss", "optimal_gd_loss", "lr_learned", "lr_optimal"):
        assert np.isfinite(m[k])
    assert m["lr_optimal"] == pytest.approx(mk.optimal_one_step_lr(10, 20, 0.5))
    assert "optimal_lr.png" in res.artifacts
    assert json.loads((tmp_path / "r" / "results.json").read_text())["metrics"] == m
