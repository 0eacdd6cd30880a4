"""vonoswald-gd science: the trained 1-layer LSA is one GD step with the optimal lr (von Oswald et al., Fig. 2).

Independent reference: for x ~ U(-r/2, r/2)^d, w ~ N(0, I), noiseless y = w^T x, one GD step from w = 0 on
(1/2N) sum (w^T x_i - y_i)^2 predicts eta * x_q^T Sigma_hat w with Sigma_hat = X^T X / N, so the query risk is

    R(eta) = s * E tr((eta Sigma_hat - I)^2),  s = E x^2 = r^2 / 12,  mu4 = E x^4 = r^4 / 80,
    E tr Sigma_hat = d s,  E tr Sigma_hat^2 = d s^2 + d (mu4 + (d - 2) s^2) / N,

minimised at eta* = s / (s^2 + (mu4 + (d - 2) s^2) / N) with 1/2 R(eta*) = (d s / 2) (1 - eta* s). (Checked by
Monte Carlo in ``test_closed_form_matches_numpy_monte_carlo``.)
"""

from __future__ import annotations

import numpy as np
import pytest

from mesaopt import experiments

D, N, R = 5, 10, 1.0
OVER = {"d": D, "n_context": N, "input_range": R, "train.steps": 1000, "train.batch_size": 512, "train.lr": 1e-2,
        "train.eval_every": 100, "train.ckpt_every": 0, "eval_batch_size": 8192, "lr_fit_batch_size": 8192}


def optimal_lr_and_half_risk(d: int, n: int, r: float) -> tuple[float, float]:
    """eta* and 1/2 R(eta*) of one GD step for x ~ U(-r/2, r/2)^d, w ~ N(0, I), noiseless (module docstring)."""
    s, mu4 = r**2 / 12.0, r**4 / 80.0
    eta = s / (s**2 + (mu4 + (d - 2) * s**2) / n)
    return eta, 0.5 * d * s * (1.0 - eta * s)


def test_closed_form_matches_numpy_monte_carlo():
    rng = np.random.default_rng(0)
    b = 100_000
    x = rng.uniform(-R / 2, R / 2, (b, N, D))
    w = rng.standard_normal((b, D))
    y = np.einsum("bnd,bd->bn", x, w)
    xq = rng.uniform(-R / 2, R / 2, (b, D))
    p1 = np.einsum("bd,bd->b", xq, np.einsum("bnd,bn->bd", x, y) / N)  # one GD step with lr = 1
    yq = np.einsum("bd,bd->b", xq, w)
    eta_mc = float(p1 @ yq / (p1 @ p1))
    eta, half = optimal_lr_and_half_risk(D, N, R)
    assert eta_mc == pytest.approx(eta, rel=0.02)
    assert 0.5 * np.mean((eta * p1 - yq) ** 2) == pytest.approx(half, rel=0.02)


@pytest.fixture(scope="module")
def metrics(tmp_path_factory):
    out = tmp_path_factory.mktemp("vonoswald-gd")
    return experiments.run("vonoswald-gd", overrides=OVER, out=out / "run", progress=False).metrics


@pytest.mark.slow
def test_fitted_gd_lr_and_loss_are_the_closed_form_optimum(metrics):
    eta, half = optimal_lr_and_half_risk(D, N, R)
    assert metrics["gd_lr"] == pytest.approx(eta, rel=0.05)
    assert metrics["gd_loss"] == pytest.approx(half, rel=0.06)


@pytest.mark.slow
def test_trained_lsa_is_one_optimal_gd_step(metrics):
    eta, half = optimal_lr_and_half_risk(D, N, R)
    # the LSA can do no better than the optimal one-step GD on isotropic data, and it gets there
    assert 0.97 * half <= metrics["lsa_loss"] <= 1.03 * half
    assert metrics["lsa_loss"] / metrics["gd_loss"] == pytest.approx(metrics["loss_ratio"], rel=1e-9)
    assert metrics["loss_ratio"] < 1.02
    assert metrics["lsa_lr_effective"] == pytest.approx(eta, rel=0.04)
    assert metrics["sens_cos"] > 0.995
    # predictions differ from GD's by a few % of their scale (|pred| ~ sqrt(2 * gd_loss) or more)
    assert metrics["pred_diff"] < 0.03 * np.sqrt(2 * half)


@pytest.mark.slow
def test_construction_is_exactly_one_gd_step(metrics):
    eta, half = optimal_lr_and_half_risk(D, N, R)
    assert metrics["construction_err"] < 1e-10
    assert metrics["construction_loss"] == pytest.approx(metrics["gd_loss"], rel=1e-5)
    assert metrics["construction_loss"] == pytest.approx(half, rel=0.06)
