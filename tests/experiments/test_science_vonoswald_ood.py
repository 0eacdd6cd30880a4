"""vonoswald-ood science: out of distribution the trained 1-layer LSA still is GD (and fails exactly like GD).

Independent references written here:

* NumPy K-step GD from w = 0 on (1/2N) sum (w^T x_i - y_i)^2; the hand-built construction
  (``constructions.lsa_gd``) must reproduce it at every input scale alpha;
* the closed-form risk of one GD step with a fixed lr eta for x ~ U(-alpha/2, alpha/2)^d, w ~ N(0, beta^2 I),
  noiseless (as in test_science_vonoswald.py, with s = alpha^2 / 12, mu4 = alpha^4 / 80):

      1/2 R = (beta^2 d s / 2) (1 - 2 eta s + eta^2 (s^2 + (mu4 + (d - 2) s^2) / N)).

Claim (von Oswald et al., Sec. 3, the out-of-distribution panel): with hyper-parameters fixed on the training
distribution (alpha = 1), the trained LSA and GD degrade in the same way when the input scale grows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mesaopt import constructions, experiments

D, N = 5, 10
ALPHAS = [0.5, 1.0, 2.0]
OVER = {"d": D, "n_context": N, "deep_k": 2, "train.steps": 1000, "train.eval_every": 250, "train.ckpt_every": 0,
        "train.warmup_steps": 20, "train.lr": 1e-2, "eval_batch_size": 8192, "fit_batch_size": 8192,
        "alphas": ALPHAS, "betas": [0.5, 1.0, 2.0]}


def gd1_half_risk(eta: float, alpha: float, beta: float = 1.0, d: int = D, n: int = N) -> float:
    """Closed-form 1/2 risk of one GD step with lr eta (module docstring)."""
    s, mu4 = alpha**2 / 12.0, alpha**4 / 80.0
    return 0.5 * beta**2 * d * s * (1.0 - 2.0 * eta * s + eta**2 * (s**2 + (mu4 + (d - 2) * s**2) / n))


def np_gd(x: np.ndarray, y: np.ndarray, xq: np.ndarray, steps: int, lr: float) -> np.ndarray:
    w = np.zeros((x.shape[0], x.shape[2]))
    for _ in range(steps):
        w = w - lr / x.shape[1] * np.einsum("bnd,bn->bd", x, np.einsum("bnd,bd->bn", x, w) - y)
    return np.einsum("bqd,bd->bq", xq, w)


def test_closed_form_matches_monte_carlo():
    rng = np.random.default_rng(0)
    for alpha, beta in ((0.5, 1.0), (2.0, 1.0), (1.0, 2.0)):
        x = rng.uniform(-alpha / 2, alpha / 2, (100_000, N, D))
        w = beta * rng.standard_normal((100_000, D))
        xq = rng.uniform(-alpha / 2, alpha / 2, (100_000, 1, D))
        mc = 0.5 * np.mean((np_gd(x, np.einsum("bnd,bd->bn", x, w), xq, 1, 6.0) - np.einsum("bqd,bd->bq", xq, w))
                           ** 2)
        assert mc == pytest.approx(gd1_half_risk(6.0, alpha, beta), rel=0.03)


@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("alpha", [0.25, 0.5, 1.0, 2.0, 3.0])
def test_gd_construction_is_gd_at_every_alpha(alpha, steps):
    rng = np.random.default_rng(int(alpha * 100) + steps)
    x, xq = rng.uniform(-alpha / 2, alpha / 2, (128, N, D)), rng.uniform(-alpha / 2, alpha / 2, (128, 2, D))
    y = np.einsum("bnd,bd->bn", x, rng.standard_normal((128, D)))
    model = constructions.lsa_gd(d=D, steps=steps, lr=5.0, dtype=torch.float64)
    with torch.no_grad():
        got = model(*(torch.from_numpy(a) for a in (x, y, xq))).numpy()
    ref = np_gd(x, y, xq, steps, 5.0)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12 * max(1.0, np.abs(ref).max()))


@pytest.fixture(scope="module")
def metrics(tmp_path_factory):
    out = tmp_path_factory.mktemp("vonoswald-ood")
    return experiments.run("vonoswald-ood", overrides=OVER, out=out / "run", progress=False).metrics


@pytest.mark.slow
def test_gd_curves_are_the_closed_form_with_the_training_lr(metrics):
    eta = metrics["gd1_lr"]
    for a in ALPHAS:
        assert metrics[f"gd1_loss_alpha{a:g}"] == pytest.approx(gd1_half_risk(eta, a), rel=0.06)
    for b in (0.5, 2.0):
        assert metrics[f"gd1_loss_beta{b:g}"] == pytest.approx(gd1_half_risk(eta, 1.0, b), rel=0.06)


@pytest.mark.slow
def test_trained_lsa_tracks_gd_in_and_out_of_distribution(metrics):
    ratio = {a: metrics[f"lsa1_loss_alpha{a:g}"] / metrics[f"gd1_loss_alpha{a:g}"] for a in ALPHAS}
    assert 0.97 < ratio[1.0] < 1.03  # in distribution: one optimal GD step
    rise_lsa = metrics["lsa1_loss_alpha2"] / metrics["lsa1_loss_alpha1"]
    rise_gd = metrics["gd1_loss_alpha2"] / metrics["gd1_loss_alpha1"]
    assert rise_gd > 3.0 and rise_lsa > 3.0  # both fail badly at twice the input scale (lr tuned for alpha = 1)
    assert rise_lsa == pytest.approx(rise_gd, rel=0.2)  # ... and by the same amount
    assert ratio[0.5] == pytest.approx(1.0, abs=0.1)
    # the teacher scale is harmless for both linear learners: loss ~ beta^2
    for name in ("lsa1", "gd1"):
        assert metrics[f"{name}_loss_beta2"] / metrics[f"{name}_loss_beta1"] == pytest.approx(4.0, rel=0.1)
