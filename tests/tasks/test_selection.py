"""Token-selection data: shapes, normalisation, determinism, scores and optimal tokens vs a loop reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mesaopt import tasks
from mesaopt.errors import ConfigError, ShapeError
from mesaopt.tasks.selection import SelectionProblem, TokenSelection, sample_seeded, sample_selection, stack_problems


def test_shapes_unit_norm_and_labels(gen):
    p = sample_selection(6, 8, 10, gen, batch=3)
    assert p.X.shape == (3, 6, 8, 10) and p.Z.shape == (3, 6, 10) and p.y.shape == (3, 6) and p.v.shape == (3, 10)
    assert p.X.dtype == torch.float64
    for t in (p.X, p.Z, p.v):
        assert torch.allclose(t.norm(dim=-1), torch.ones((), dtype=torch.float64), atol=1e-12)
    assert set(p.y.unique().tolist()) <= {-1.0, 1.0}
    g = sample_selection(2, 3, 4, torch.Generator().manual_seed(1), dist="gaussian")
    assert not torch.allclose(g.X.norm(dim=-1), torch.ones((), dtype=torch.float64))


def test_scores_and_optimal_tokens_match_loop(gen):
    p = sample_selection(5, 7, 4, gen)
    X, y, v = p.X.numpy(), p.y.numpy(), p.v.numpy()
    ref = np.array([[y[i] * float(np.dot(v, X[i, t])) for t in range(7)] for i in range(5)])
    np.testing.assert_allclose(p.scores().numpy(), ref, atol=1e-14)
    assert p.optimal_tokens().tolist() == [int(np.argmax(r)) for r in ref]


def test_determinism_and_seeded_prefix():
    a = sample_selection(3, 4, 5, torch.Generator().manual_seed(7))
    b = sample_selection(3, 4, 5, torch.Generator().manual_seed(7))
    assert torch.equal(a.X, b.X) and torch.equal(a.y, b.y)
    big, small = sample_seeded(3, 4, 5, seed=2, runs=4), sample_seeded(3, 4, 5, seed=2, runs=2)
    assert torch.equal(big.X[:2], small.X) and torch.equal(big[1].Z, small[1].Z)
    assert not torch.equal(big.X[0], big.X[1])


def test_task_registry_roundtrip(gen):
    task = tasks.build({"kind": "selection", "d": 3})
    assert isinstance(task, TokenSelection) and task.spec() == {"kind": "selection", "d": 3, "dist": "sphere"}
    b = task.sample(4, 5, gen)
    assert b.xs.shape == (4, 5, 3) and b.ys.shape == (4, 5)
    assert torch.equal(b.params["opt"], b.ys.argmax(-1))


def test_bad_inputs():
    with pytest.raises(ConfigError, match="T must be >= 2"):
        sample_selection(2, 1, 3)
    with pytest.raises(ConfigError, match="dist"):
        sample_selection(2, 3, 3, dist="cube")
    with pytest.raises(ShapeError):
        SelectionProblem(torch.zeros(2, 3, 4), torch.zeros(2, 5), torch.zeros(2), torch.zeros(4))
    with pytest.raises(ShapeError):
        stack_problems([sample_selection(2, 3, 4), sample_selection(2, 3, 5)])
