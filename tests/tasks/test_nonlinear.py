"""ReLUNet2 and DecisionTree against independent NumPy re-implementations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mesaopt.tasks as T
from mesaopt.errors import ConfigError
from mesaopt.tasks.nonlinear import DecisionTree, ReLUNet2


def g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_relu2_matches_numpy():
    task = ReLUNet2(d=4, hidden=7, noise_std=0.0)
    b = task.sample(5, 9, g(1), dtype=torch.float64)
    xs, w1, w2 = b.xs.numpy(), b.params["w1"].numpy(), b.params["w2"].numpy()
    ref = np.zeros((5, 9))
    for i in range(5):
        for t in range(9):
            h = np.maximum(xs[i, t] @ w1[i], 0.0)
            ref[i, t] = h @ w2[i]
    np.testing.assert_allclose(b.ys.numpy(), ref, rtol=1e-10, atol=1e-12)
    assert b.params["w1"].shape == (5, 4, 7) and b.params["w2"].shape == (5, 7)


def test_relu2_weight_scale_is_garg():
    task = ReLUNet2(d=3, hidden=50, scale=2.0)
    b = task.sample(400, 2, g(2), dtype=torch.float64)
    var_w1 = b.params["w1"].var().item()
    var_w2 = b.params["w2"].var().item()
    assert abs(var_w1 - 1.0) < 0.05
    assert abs(var_w2 - 4.0 * 2.0 / 50) < 0.1 * 4.0 * 2.0 / 50


def np_tree(x: np.ndarray, coords: np.ndarray, leaves: np.ndarray, depth: int) -> float:
    node = 0
    for _ in range(depth):
        node = 2 * node + (2 if x[coords[node]] > 0 else 1)
    return leaves[node - (2**depth - 1)]


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_tree_matches_numpy(depth):
    task = DecisionTree(d=3, depth=depth)
    b = task.sample(6, 11, g(depth), dtype=torch.float64)
    xs, c, lv = b.xs.numpy(), b.params["coords"].numpy(), b.params["leaves"].numpy()
    assert c.shape == (6, 2**depth - 1) and lv.shape == (6, 2**depth)
    assert c.min() >= 0 and c.max() < 3
    ref = np.array([[np_tree(xs[i, t], c[i], lv[i], depth) for t in range(11)] for i in range(6)])
    np.testing.assert_array_equal(b.ys.numpy(), ref)


def test_registry_and_spec_roundtrip():
    for task in (ReLUNet2(d=3, hidden=4), DecisionTree(d=3, depth=2)):
        rebuilt = T.build(task.spec())
        assert rebuilt == task
        b1 = task.sample(2, 3, g(5))
        b2 = rebuilt.sample(2, 3, g(5))
        assert torch.equal(b1.ys, b2.ys)


def test_determinism_and_noise():
    task = DecisionTree(d=4, noise_std=0.5)
    a, b = task.sample(3, 4, g(7)), task.sample(3, 4, g(7))
    assert torch.equal(a.xs, b.xs) and torch.equal(a.ys, b.ys)
    clean = DecisionTree(d=4).sample(3, 4, g(7))
    assert torch.equal(clean.xs, a.xs) and not torch.equal(clean.ys, a.ys)


def test_bad_config():
    with pytest.raises(ConfigError):
        T.build({"kind": "nope"})
    with pytest.raises(ValueError):
        DecisionTree(d=0)
    with pytest.raises(ValueError):
        ReLUNet2(d=3, hidden=0)


def test_evaluate_reproduces_noise_free_labels():
    for task in (ReLUNet2(d=3, hidden=5), DecisionTree(d=3, depth=3)):
        b = task.sample(4, 6, g(9))
        torch.testing.assert_close(task.evaluate(b.xs, b.params), b.ys)


def test_sine_matches_numpy_and_ranges():
    from mesaopt.tasks.nonlinear import SineWave

    task = SineWave(amp_min=0.2, amp_max=0.4, phase_max=2.0, input_range=6.0)
    b = task.sample(300, 7, g(3), dtype=torch.float64)
    amp, phase, xs = b.params["amp"].numpy(), b.params["phase"].numpy(), b.xs.numpy()
    np.testing.assert_allclose(b.ys.numpy(), amp[:, None] * np.sin(xs[..., 0] + phase[:, None]), rtol=1e-12)
    assert xs.shape == (300, 7, 1) and np.abs(xs).max() <= 3.0 and np.abs(xs).max() > 2.8
    assert 0.2 <= amp.min() and amp.max() <= 0.4 and 0.0 <= phase.min() and phase.max() <= 2.0
    assert T.build(task.spec()) == task and "sine" in T.REGISTRY.names()


def test_sine_bad_config_names_the_field():
    from mesaopt.tasks.nonlinear import SineWave

    with pytest.raises((ConfigError, ValueError), match="amp_max"):
        SineWave(amp_min=0.5, amp_max=0.1)
    with pytest.raises((ConfigError, ValueError), match="d"):
        SineWave(d=2)
