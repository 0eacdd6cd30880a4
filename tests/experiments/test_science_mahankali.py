"""mahankali-optimal science: a trained 1-layer LSA on Gaussian data runs one GD step with the optimal lr.

Independent reference (written out here, not imported from ``mesaopt.experiments.mahankali``): x ~ N(0, I_d),
w ~ N(0, s^2 I_d), y = w^T x + sigma eps. One GD step from w = 0 gives w_1 = eta (Sigma_hat w + X^T eps sigma / N);
with the Wishart moment E Sigma_hat^2 = (N + d + 1) / N I the full-MSE query risk is

    R(eta) = d (s^2 (N + d + 1) + sigma^2) / N eta^2 - 2 d s^2 eta + d s^2 + sigma^2,

so eta* = N s^2 / (s^2 (N + d + 1) + sigma^2) (= N / (N + d + 1 + sigma^2) for s = 1) and R* = d s^2 (1 - eta*)
+ sigma^2. The test also checks the closed form by NumPy Monte Carlo.
"""

from __future__ import annotations

import numpy as np
import pytest

from mesaopt import experiments

D, N, SIGMA = 5, 10, 0.5
OVER = {"d": D, "n_context": N, "n_context_sweep": [], "noise_std": SIGMA, "w_scale": 1.0,
        "train.steps": 300, "train.batch_size": 512, "train.lr": 1e-2, "train.eval_every": 100,
        "train.ckpt_every": 0, "eval_batch_size": 16384}


def eta_star(d: int, n: int, sigma: float) -> float:
    return n / (n + d + 1 + sigma**2)


def half_risk(eta: float, d: int, n: int, sigma: float) -> float:
    return 0.5 * (d * (n + d + 1 + sigma**2) / n * eta**2 - 2 * d * eta + d + sigma**2)


def test_closed_form_matches_numpy_monte_carlo():
    rng = np.random.default_rng(1)
    b = 100_000
    x = rng.standard_normal((b, N, D))
    w = rng.standard_normal((b, D))
    y = np.einsum("bnd,bd->bn", x, w) + SIGMA * rng.standard_normal((b, N))
    xq = rng.standard_normal((b, D))
    yq = np.einsum("bd,bd->b", xq, w) + SIGMA * rng.standard_normal(b)
    p1 = np.einsum("bd,bd->b", xq, np.einsum("bnd,bn->bd", x, y) / N)
    assert float(p1 @ yq / (p1 @ p1)) == pytest.approx(eta_star(D, N, SIGMA), rel=0.03)
    e = eta_star(D, N, SIGMA)
    assert 0.5 * np.mean((e * p1 - yq) ** 2) == pytest.approx(half_risk(e, D, N, SIGMA), rel=0.03)
    assert half_risk(e, D, N, SIGMA) == pytest.approx(0.5 * (D * (1 - e) + SIGMA**2), rel=1e-12)


@pytest.fixture(scope="module")
def metrics(tmp_path_factory):
    out = tmp_path_factory.mktemp("mahankali")
    return experiments.run("mahankali-optimal", overrides=OVER, out=out / "run", progress=False).metrics


@pytest.mark.slow
def test_reference_lr_and_risk_are_the_closed_form(metrics):
    e = eta_star(D, N, SIGMA)
    assert metrics["lr_optimal"] == pytest.approx(e, rel=1e-9)
    assert metrics["optimal_gd_risk"] == pytest.approx(half_risk(e, D, N, SIGMA), rel=1e-9)
    # Monte Carlo loss of the optimal step on the evaluation batch agrees with the closed form
    assert metrics["optimal_gd_loss"] == pytest.approx(half_risk(e, D, N, SIGMA), rel=0.05)


@pytest.mark.slow
def test_learned_lr_is_the_optimal_lr(metrics):
    e = eta_star(D, N, SIGMA)
    assert metrics["lr_learned"] == pytest.approx(e, rel=0.06)
    assert metrics["lr_learned_weights"] == pytest.approx(e, rel=0.06)
    # the learned step is far from the naive lr = 1 and from the noiseless optimum's neighbour N / (N + d)
    assert abs(metrics["lr_learned"] - e) < abs(metrics["lr_learned"] - 1.0) / 4
    assert metrics["gamma_anisotropy"] < 0.15


@pytest.mark.slow
def test_lsa_loss_is_the_optimal_one_step_risk(metrics):
    e = eta_star(D, N, SIGMA)
    assert metrics["lsa_loss"] == pytest.approx(half_risk(e, D, N, SIGMA), rel=0.06)
    assert metrics["loss_ratio"] == pytest.approx(metrics["lsa_loss"] / metrics["optimal_gd_loss"], rel=1e-9)
    assert 0.97 < metrics["loss_ratio"] < 1.05
    assert metrics["lr_rel_err"] == pytest.approx(abs(metrics["lr_learned"] - e) / e, rel=1e-6)
