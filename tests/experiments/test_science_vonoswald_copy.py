"""vonoswald-copy science (von Oswald et al. Sec. 5): a softmax layer builds the (x_i, y_i) tokens for a GD step.

Independent references:

* a HAND-BUILT model (``CopyLSA`` weights set by hand: large positional logit from every token to the one
  before it, values copying the x-part, then the GD construction in the LSA) predicts exactly what one GD step
  does, recomputed here in NumPy by a per-task loop (w = (lr/N) X^T y, prediction x_q^T w); the same hand-built
  attention pattern is the shifted identity;
* on a small trained config the y-tokens put most of their attention on their own x-token (far above the
  uniform-causal mass), and the trained model is one GD step: loss within a few % of GD's with the fitted lr,
  sensitivities aligned with GD's (cosine near 1).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mesaopt import experiments
from mesaopt.experiments.vonoswald_copy import copy_mass, gd_copy_construction
from mesaopt.tasks import LinearRegression

D, N = 4, 6


def np_one_gd_step(x: np.ndarray, y: np.ndarray, xq: np.ndarray, lr: float) -> np.ndarray:
    out = np.zeros(xq.shape[:2])
    for b in range(x.shape[0]):
        w = lr * x[b].T @ y[b] / x.shape[1]
        out[b] = xq[b] @ w
    return out


@pytest.fixture(scope="module")
def batch():
    task = LinearRegression(d=D, x_dist="uniform", input_range=1.0)
    return task.sample(256, N + 3, torch.Generator().manual_seed(5), dtype=torch.float64).split(N)


def test_hand_built_copy_then_gd_is_one_gd_step(batch):
    cx, cy, qx, _ = batch
    model = gd_copy_construction(D, N, lr=1.7, logit=40.0)
    with torch.no_grad():
        got = model(cx, cy, qx).numpy()
        att = model.attention(cx, cy, qx)
    np.testing.assert_allclose(got, np_one_gd_step(cx.numpy(), cy.numpy(), qx.numpy(), 1.7), rtol=1e-9, atol=1e-12)
    # every token but the first attends to the token before it; each query (all at position 2N) to the last y
    s = 2 * N
    assert float(att[:, 0, torch.arange(1, s), torch.arange(0, s - 1)].min()) > 1 - 1e-12
    assert float(att[:, 0, s:, s - 1].min()) > 1 - 1e-12
    assert float(copy_mass(att, N)[0]) > 1 - 1e-12


def test_hand_built_copy_with_a_weak_logit_is_not_gd(batch):
    cx, cy, qx, _ = batch  # the copy is what makes the GD step: a weak logit smears x over the tokens
    with torch.no_grad():
        got = gd_copy_construction(D, N, lr=1.7, logit=0.5)(cx, cy, qx).numpy()
    ref = np_one_gd_step(cx.numpy(), cy.numpy(), qx.numpy(), 1.7)
    assert np.abs(got - ref).mean() > 0.2 * np.abs(ref).mean()


OVER = {"d": D, "n_context": N, "heads": 1, "train.steps": 1000, "train.batch_size": 256, "train.eval_every": 250,
        "train.ckpt_every": 0, "eval_batch_size": 4096, "lr_fit_batch_size": 8192}


@pytest.fixture(scope="module")
def metrics(tmp_path_factory):
    out = tmp_path_factory.mktemp("vonoswald-copy")
    return experiments.run("vonoswald-copy", overrides=OVER, out=out / "run", progress=False).metrics


@pytest.mark.slow
def test_trained_softmax_layer_copies_and_lsa_does_one_gd_step(metrics):
    assert metrics["copy_mass"] > 0.85 > 3 * metrics["copy_mass_uniform"]
    assert metrics["loss"] < 1.05 * metrics["gd_loss"]
    assert metrics["sens_cos"] > 0.98
    assert metrics["construction_err"] < 1e-9
