"""Globally / locally optimal selections: definitions checked against independent numpy computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mesaopt.errors import ConfigError
from mesaopt.svm import check_local, enumerate_locally_optimal, global_tokens, is_global, support_tokens
from mesaopt.tasks.selection import sample_selection


def test_global_selection_is_locally_optimal_and_argmin_is_not():
    p = sample_selection(3, 4, 5, torch.Generator().manual_seed(0))
    g = global_tokens(p)
    res = check_local(p, g)
    assert res.feasible and res.locally_optimal and not res.violations
    # support tokens = constraints with margin 1, recomputed with numpy
    X, Z, W = p.X.numpy(), p.Z.numpy(), res.solution.W
    for i, sup in enumerate(support_tokens(res.solution)):
        m = np.array([(X[i, g[i]] - X[i, t]) @ W @ Z[i] for t in range(4)])
        assert sorted(sup.tolist()) == [t for t in range(4) if t != g[i] and abs(m[t] - 1) < 1e-5]
    worst = p.scores().argmin(-1)
    bad = check_local(p, worst)
    assert bad.feasible and not bad.locally_optimal and bad.violations
    assert is_global(p, g) and not is_global(p, worst)


def test_enumeration_on_tiny_problem():
    p = sample_selection(2, 3, 4, torch.Generator().manual_seed(1))
    found = enumerate_locally_optimal(p)
    assert tuple(global_tokens(p).tolist()) in found
    gamma = p.scores().numpy()
    for alpha in found:  # every support token scores strictly lower than the selected one
        sol = check_local(p, np.array(alpha)).solution
        for i in range(2):
            assert all(gamma[i, alpha[i]] > gamma[i, t] for t in np.flatnonzero(sol.active[i]))
    with pytest.raises(ConfigError, match="max_selections"):
        enumerate_locally_optimal(sample_selection(5, 8, 3), max_selections=100)
