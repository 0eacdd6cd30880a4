"""Boolean task families against independent NumPy re-implementations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mesaopt.tasks as T
from mesaopt.tasks.boolean import Conjunction, Disjunction, Majority, SparseParity


def g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def np_conj(x, w):
    lits = [(i, w[i]) for i in range(len(w)) if w[i] != 0]
    return 1.0 if all(x[i] == s for i, s in lits) else -1.0


def np_disj(x, w):
    lits = [(i, w[i]) for i in range(len(w)) if w[i] != 0]
    return 1.0 if any(x[i] == s for i, s in lits) else -1.0


def np_parity(x, support):
    ones = sum(1 for i in range(len(x)) if support[i] == 1 and x[i] == 1)
    return 1.0 if ones % 2 == 1 else -1.0


def np_majority(x, w):
    rel = [x[i] for i in range(len(x)) if w[i] == 1]
    return 1.0 if sum(1 for v in rel if v > 0) > sum(1 for v in rel if v < 0) else -1.0


CASES = [
    (Conjunction(d=6, p_literal=0.5), np_conj, "w"),
    (Disjunction(d=6, p_literal=0.5), np_disj, "w"),
    (SparseParity(d=6, k=3), np_parity, "support"),
    (Majority(d=6, p_relevant=0.5), np_majority, "w"),
]


@pytest.mark.parametrize("task,ref,key", CASES, ids=[c[0].kind for c in CASES])
def test_labels_match_numpy(task, ref, key):
    b = task.sample(40, 12, g(3))
    xs, ys, p = b.xs.numpy(), b.ys.numpy(), b.params[key].numpy()
    assert set(np.unique(xs)) <= {-1.0, 1.0} and set(np.unique(ys)) <= {-1.0, 1.0}
    expect = np.array([[ref(xs[i, t], p[i]) for t in range(12)] for i in range(40)])
    np.testing.assert_array_equal(ys, expect)


def test_literal_distribution_and_forcing():
    task = Conjunction(d=10, p_literal=0.3, p_force=1.0)
    b = task.sample(500, 5, g(4))
    w = b.params["w"].numpy()
    assert abs((w == 1).mean() - 0.15) < 0.02 and abs((w == -1).mean() - 0.15) < 0.02
    assert (b.ys == 1).all()  # every example forced to satisfy the conjunction
    dis = Disjunction(d=10, p_force=1.0).sample(200, 5, g(4))
    nonempty = (dis.params["w"] != 0).any(-1)
    assert (dis.ys[nonempty] == -1).all()  # forced to falsify every literal


def test_forcing_balances_labels():
    free = Conjunction(d=20, p_force=0.0).sample(300, 20, g(5)).ys
    forced = Conjunction(d=20, p_force=0.3).sample(300, 20, g(5)).ys
    assert (forced == 1).float().mean() > (free == 1).float().mean() + 0.15


def test_parity_support_size():
    b = SparseParity(d=9, k=4).sample(50, 3, g(6))
    assert (b.params["support"].sum(-1) == 4).all()
    with pytest.raises(ValueError):
        SparseParity(d=3, k=4)


@pytest.mark.parametrize("kind", ["conjunction", "disjunction", "parity", "majority"])
def test_registry_roundtrip(kind):
    task = T.build({"kind": kind, "d": 5})
    assert task.kind == kind and T.build(task.spec()) == task
    a, b = task.sample(4, 6, g(8)), task.sample(4, 6, g(8))
    assert torch.equal(a.xs, b.xs) and torch.equal(a.ys, b.ys)
