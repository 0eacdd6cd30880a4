"""svm-implicit-bias science: GD on attention converges in direction to the max-margin Att-SVM (Tarzanagh et al.).

Independent references built in this test, on the experiment's own problems (``tasks.selection.sample_seeded``,
the documented data stream of the experiment):

* the Frobenius and nuclear Att-SVMs min ||W|| s.t. (x_{i,opt_i} - x_it)^T W z_i >= 1 (t != opt_i), solved with cvxpy
  written out here, for the globally optimal tokens opt_i = argmax_t y_i v^T x_it (NumPy);
* normalized GD on W written out here (torch autograd, float64, its own random init), for the logistic loss of
  f(X_i) = v^T X_i^T softmax(X_i W z_i).

Claims: the experiment's GD selects the optimal tokens, its direction correlates >= 0.98 with the Frobenius SVM
(W) and with the nuclear SVM ((K, Q)); our own GD reaches the same correlation with our own SVM.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch

from mesaopt import experiments
from mesaopt.tasks.selection import sample_seeded

SIZE = {"n": 3, "T": 4, "d": 5}
SEEDS = 3
OVER = {**SIZE, "n_seeds": SEEDS, "steps": 1500, "kq_steps": 1500, "sizes": [], "kq_noreg": False,
        "record_every": 100}


def np_svm(X: np.ndarray, Z: np.ndarray, opt: np.ndarray, norm: str) -> np.ndarray:
    n, T, d = X.shape
    W = cp.Variable((d, d))
    cons = [(X[i, opt[i]] - X[i, t]) @ W @ Z[i] >= 1 for i in range(n) for t in range(T) if t != opt[i]]
    obj = cp.norm(W, "fro") if norm == "fro" else cp.normNuc(W)
    prob = cp.Problem(cp.Minimize(obj), cons)
    prob.solve()
    assert prob.status == cp.OPTIMAL, prob.status
    return W.value


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))


def own_normalized_gd(X, Z, y, v, steps: int, lr: float, seed: int) -> np.ndarray:
    X, Z, y, v = (torch.as_tensor(a, dtype=torch.float64) for a in (X, Z, y, v))
    d = X.shape[-1]
    W = (0.1 * torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    for _ in range(steps):
        W.requires_grad_(True)
        s = torch.softmax(torch.einsum("ntd,de,ne->nt", X, W, Z), dim=-1)
        f = (s * (X @ v)).sum(-1)
        loss = torch.nn.functional.softplus(-y * f).mean()
        (g,) = torch.autograd.grad(loss, W)
        gn = g.norm()
        if not torch.isfinite(gn) or gn == 0:
            break
        W = (W - lr * g / gn).detach()
    return W.detach().numpy()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    out = tmp_path_factory.mktemp("svm") / "run"
    m = experiments.run("svm-implicit-bias", overrides=OVER, out=out, progress=False).metrics
    p = sample_seeded(SIZE["n"], SIZE["T"], SIZE["d"], 0, SEEDS)
    probs = []
    for k in range(SEEDS):
        X, Z, y, v = (a[k].numpy() for a in (p.X, p.Z, p.y, p.v))
        opt = np.argmax(y[:, None] * np.einsum("ntd,d->nt", X, v), axis=1)
        probs.append((X, Z, y, v, opt))
    return m, probs


@pytest.mark.slow
def test_gd_selects_the_optimal_tokens_and_saturates(setup):
    m, _ = setup
    assert m["frac_global_W"] == 1.0 and m["frac_global_KQ"] == 1.0
    assert m["n_feasible_W"] == SEEDS and m["n_feasible_KQ"] == SEEDS
    assert m["mass_W"] > 0.99 and m["mass_KQ"] > 0.99


@pytest.mark.slow
def test_w_direction_is_the_frobenius_svm(setup):
    m, probs = setup
    for k, (X, Z, y, v, opt) in enumerate(probs):
        svm = np_svm(X, Z, opt, "fro")
        mine = own_normalized_gd(X, Z, y, v, steps=600, lr=0.1, seed=k)
        nuc = np_svm(X, Z, opt, "nuc")
        # the two SVMs are distinct directions on these problems, so the check below discriminates
        assert corr(svm, nuc) < 0.93, k
        assert corr(mine, svm) > 0.98, k
        assert corr(mine, svm) > corr(mine, nuc) + 0.05, k
        assert m[f"corr_W_fro_seed{k}"] > 0.98, k
    assert m["corr_W_fro"] > 0.98
    assert m["corr_W_fro"] > m["corr_W_nuc"] + 0.03


@pytest.mark.slow
def test_kq_direction_is_the_nuclear_svm(setup):
    m, probs = setup
    for k, (X, Z, _, _, opt) in enumerate(probs):
        nuc, fro = np_svm(X, Z, opt, "nuc"), np_svm(X, Z, opt, "fro")
        assert corr(nuc, fro) < 0.93, k  # distinct directions: the correlation below discriminates
        sv = np.linalg.svd(nuc, compute_uv=False)
        assert sv[1] < 0.1 * sv[0], k  # the nuclear SVM is (nearly) rank one on these problems
        assert m[f"corr_KQ_nuc_seed{k}"] > 0.98, k
    assert m["corr_KQ_nuc"] > 0.98
    assert m["corr_KQ_nuc"] > m["corr_KQ_fro"] + 0.03
