"""ebt-system2 science: the error falls with inference ("thinking") steps; baselines against NumPy references.

Setup of the quick run: linear task y = w^T x, w ~ N(0, I/d), x ~ N(0, I_d) (Var y = 1), d = 3, N = 8, noiseless
in distribution; random initial guess y_0 ~ N(0, 1). Independent references:

* step 0 is the initial guess itself: E (y_0 - y)^2 = Var y + 1 = 2 (+ the noise variance OOD);
* Bayes ridge in distribution is exact (noiseless, N > d): error 0;
* Bayes ridge under label noise sigma: sigma^2 + E tr (X^T X / sigma^2 + d I)^-1 (NumPy Monte Carlo here);
* s steps of GD with the best lr: NumPy Monte Carlo over an lr grid.
"""

from __future__ import annotations

import numpy as np
import pytest

from mesaopt import experiments

D, N, SIG_OOD = 3, 8, 0.5
OVER = {"tasks": ["linear"], "eval_batch_size": 256, "analysis_batch_size": 128}


@pytest.fixture(scope="module")
def metrics(tmp_path_factory):
    out = tmp_path_factory.mktemp("ebt") / "run"
    res = experiments.run("ebt-system2", overrides=OVER, out=out, quick=True, progress=False)
    assert res.config["d"] == D and res.config["n_context"] == N and res.config["ood_noise_std"] == SIG_OOD
    return res.metrics, res.config


def np_bayes_ridge_err(sigma: float, n: int, b: int = 50_000) -> float:
    x = np.random.default_rng(4).standard_normal((b, n, D))
    post = np.linalg.inv(np.einsum("bnd,bne->bde", x, x) / sigma**2 + D * np.eye(D))
    return sigma**2 + float(np.trace(post, axis1=1, axis2=2).mean())


def np_best_gd_err(steps: int, b: int = 20_000) -> float:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((b, N, D))
    w = rng.standard_normal((b, D)) / np.sqrt(D)
    y = np.einsum("bnd,bd->bn", x, w)
    xq = rng.standard_normal((b, D))
    yq = np.einsum("bd,bd->b", xq, w)
    best = np.inf
    for lr in np.linspace(0.05, 1.5, 30):
        v = np.zeros((b, D))
        for _ in range(steps):
            v = v - lr / N * np.einsum("bnd,bn->bd", x, np.einsum("bnd,bd->bn", x, v) - y)
        best = min(best, float(np.mean((np.einsum("bd,bd->b", xq, v) - yq) ** 2)))
    return best


@pytest.mark.slow
def test_error_falls_with_thinking_steps(metrics):
    m, cfg = metrics
    s_max = cfg["steps_factor"] * cfg["ebt"]["steps"]
    err = np.array([m[f"err_at_steps_{s}"] for s in range(s_max + 1)])
    assert err[0] == pytest.approx(2.0, rel=0.12)  # the random initial guess: Var y + 1
    assert np.all(np.diff(err) < 0), err  # every extra descent step lowers the error
    assert err[-1] < 0.75 * err[0]
    assert m["linear_id_s2_gain"] == pytest.approx(1 - err[s_max] / err[1], rel=1e-9)
    for cond, extra in (("ood_noise", SIG_OOD**2), ("ood_long", 0.0)):
        e = [m[f"linear_{cond}_err_at_steps_{s}"] for s in range(s_max + 1)]
        assert e[0] == pytest.approx(2.0 + extra, rel=0.12), cond
        assert e[-1] < 0.85 * e[0], cond


@pytest.mark.slow
def test_ridge_baselines_are_bayes_optimal_closed_forms(metrics):
    m, cfg = metrics
    assert m["linear_id_ridge_err"] < 1e-8
    assert m["linear_ood_long_ridge_err"] < 1e-8
    assert m["linear_ood_noise_ridge_err"] == pytest.approx(np_bayes_ridge_err(SIG_OOD, N), rel=0.12)


@pytest.mark.slow
def test_gd_reference_is_the_best_s_step_gd(metrics):
    m, cfg = metrics
    for s in (1, 2, 4):
        assert m[f"linear_id_gd_err_at_steps_{s}"] == pytest.approx(np_best_gd_err(s), rel=0.15), s
