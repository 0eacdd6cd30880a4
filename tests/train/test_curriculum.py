"""Garg-style curriculum: ramp values vs a stateful reference, dimension zeroing, label recomputation."""

from __future__ import annotations

import pytest
import torch

from mesaopt.errors import ConfigError
from mesaopt.tasks import LinearRegression
from mesaopt.tasks.boolean import Majority
from mesaopt.tasks.nonlinear import ReLUNet2
from mesaopt.train.curriculum import Curriculum, Ramp, curriculum_batch, zero_inactive_dims


def garg_reference(start, end, inc, interval, steps):
    """Stateful update as in Garg et al.'s Curriculum: value used at each step, then update()."""
    value, count, out = start, 0, []
    for _ in range(steps):
        out.append(value)
        count += 1
        if count % interval == 0:
            value = min(value + inc, end)
    return out


@pytest.mark.parametrize("start,end,inc,interval", [(5, 20, 1, 3), (11, 41, 2, 4), (3, 3, 1, 2), (2, 9, 4, 1)])
def test_ramp_matches_stateful_reference(start, end, inc, interval):
    r = Ramp(start=start, end=end, inc=inc, interval=interval)
    assert [r.value(s) for s in range(1, 41)] == garg_reference(start, end, inc, interval, 40)


def test_ramp_validation():
    with pytest.raises(ValueError, match="end"):
        Ramp(start=5, end=3)
    with pytest.raises(ValueError):
        Ramp(start=0, end=3)


def test_linear_zeroing_keeps_noise():
    task = LinearRegression(d=5, noise_std=0.1)
    b = task.sample(4, 7, torch.Generator().manual_seed(0), dtype=torch.float64)
    z = zero_inactive_dims(task, b, 2)
    assert torch.all(z.xs[..., 2:] == 0) and torch.equal(z.xs[..., :2], b.xs[..., :2])
    noise = b.ys - torch.einsum("btd,bd->bt", b.xs, b.params["w"])
    expect = torch.einsum("btd,bd->bt", z.xs, b.params["w"]) + noise
    torch.testing.assert_close(z.ys, expect)
    assert zero_inactive_dims(task, b, 5) is b


def test_evaluate_path_and_unsupported_task():
    task = ReLUNet2(d=4, hidden=6)
    b = task.sample(3, 5, torch.Generator().manual_seed(1))
    z = zero_inactive_dims(task, b, 1)
    xs = b.xs.clone()
    xs[..., 1:] = 0
    torch.testing.assert_close(z.ys, torch.relu(xs @ b.params["w1"]).mul(b.params["w2"][:, None]).sum(-1))
    with pytest.raises(ConfigError, match="curriculum.dims"):
        zero_inactive_dims(Majority(d=4), Majority(d=4).sample(2, 3), 2)


def test_curriculum_batch_shapes_per_step():
    cur = Curriculum(dims=Ramp(start=2, end=4, inc=1, interval=10), points=Ramp(start=3, end=7, inc=2, interval=10))
    task = LinearRegression(d=4)
    g = torch.Generator().manual_seed(0)
    b1 = curriculum_batch(task, cur, 8, 11, 1, g, "cpu", torch.float32)
    assert b1.xs.shape == (8, 3, 4) and torch.all(b1.xs[..., 2:] == 0)
    b2 = curriculum_batch(task, cur, 8, 11, 15, g, "cpu", torch.float32)
    assert b2.xs.shape == (8, 5, 4) and torch.all(b2.xs[..., 3] == 0) and torch.any(b2.xs[..., 2] != 0)
    assert Curriculum(points=Ramp(start=3, end=5)).at(1, 4, 11) == (4, 3)
    with pytest.raises(ConfigError, match="d=4"):
        Curriculum(dims=Ramp(start=5, end=6)).at(1, 4, 11)


def test_trainconfig_and_loop_use_the_curriculum():
    from mesaopt.models.gpt import GPT
    from mesaopt.train import TrainConfig, train
    from mesaopt.train.loop import sample_train_batch

    cfg = TrainConfig(steps=6, batch_size=4, n_points=6, objective="prefix", eval_every=0, eval_batch_size=8,
                      curriculum={"dims": {"start": 1, "end": 3, "inc": 1, "interval": 2},
                                  "points": {"start": 2, "end": 6, "inc": 2, "interval": 2}})
    assert isinstance(cfg.curriculum, Curriculum)
    task = LinearRegression(d=3)
    g = torch.Generator().manual_seed(0)
    shapes = [sample_train_batch(task, cfg, s, g, torch.device("cpu"), torch.float32).xs for s in (1, 3, 5)]
    assert [x.shape[1] for x in shapes] == [2, 4, 6]
    assert [int((x.abs().sum((0, 1)) > 0).sum()) for x in shapes] == [1, 2, 3]
    model = GPT(d=3, n_positions=6, layers=1, heads=1, width=8)
    res = train(model, task, cfg, progress=False)
    assert res.completed and res.step == 6
    with pytest.raises(ValueError):
        TrainConfig(curriculum={"dims": {"start": 3, "end": 2}})
