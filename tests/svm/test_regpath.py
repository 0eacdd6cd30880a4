"""Regularization path: ball projections vs cvxpy, excess loss vs the plain loss, convergence to Att-SVM."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch

from mesaopt.errors import ConfigError
from mesaopt.svm import att_svm, attention_loss, attention_probs, excess_loss, project_ball, regularization_path
from mesaopt.tasks.selection import sample_selection


@pytest.mark.parametrize("norm", ["fro", "nuc"])
def test_projection_matches_cvxpy(norm):
    W = torch.randn(2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    P = project_ball(W, 1.5, norm)
    for b in range(2):
        X = cp.Variable((4, 4))
        cp.Problem(cp.Minimize(cp.sum_squares(X - W[b].numpy())), [cp.norm(X, norm) <= 1.5]).solve(solver="CLARABEL")
        np.testing.assert_allclose(P[b].numpy(), X.value, atol=1e-6)
    inside = project_ball(W, 1e3, norm)
    torch.testing.assert_close(inside, W)


def test_excess_loss_is_loss_minus_constant():
    p = sample_selection(3, 4, 3, torch.Generator().manual_seed(1), batch=2)
    alpha = p.optimal_tokens()
    h_a = p.head_values().gather(-1, alpha.unsqueeze(-1)).squeeze(-1)
    const = torch.nn.functional.softplus(-p.y * h_a).mean(-1)
    for scale in (0.3, 3.0):
        W = scale * torch.randn(2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        torch.testing.assert_close(excess_loss(p, W, alpha), attention_loss(p, W) - const, atol=1e-14, rtol=1e-10)
        torch.testing.assert_close(excess_loss(p, W, alpha, "correlation"),
                                   attention_loss(p, W, loss="correlation") + (p.y * h_a).mean(-1))


@pytest.mark.parametrize("norm", ["fro", "nuc"])
def test_regpath_direction_converges_to_svm(norm):
    p = sample_selection(2, 3, 3, torch.Generator().manual_seed(3), batch=2)
    res = regularization_path(p, [0.5, 2.0, 8.0, 32.0], norm=norm, steps=40, generator=torch.Generator().manual_seed(0))
    nrm = [np.linalg.norm(w, "fro" if norm == "fro" else "nuc") for w in res.W[-1].numpy()]
    np.testing.assert_allclose(nrm, 32.0, rtol=1e-6)  # the constraint is active
    sel = attention_probs(p, res.W[-1]).argmax(-1)
    for b in range(2):
        sol = att_svm(p.X[b], p.Z[b], sel[b], norm=norm)
        c = res.corr(torch.from_numpy(sol.W))[:, b]
        assert c[-1] > 0.98 and c[-1] > c[0]
    assert (res.loss[1:] <= res.loss[:-1] + 1e-12).all()


def test_regpath_bad_radii():
    p = sample_selection(2, 3, 3)
    with pytest.raises(ConfigError, match="radii"):
        regularization_path(p, [2.0, 1.0])
    with pytest.raises(ConfigError, match="norm"):
        project_ball(torch.zeros(3, 3), 1.0, "l1")
