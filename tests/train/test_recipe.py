"""The one trainer's recipe features against hand-computed references: gated / fixed curriculum state, the
post-curriculum cosine, the fresh-data stop rule, lr multipliers, loss hooks and bit-for-bit resume."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mesaopt.errors import ConfigError
from mesaopt.models.gpt import GPT
from mesaopt.seeding import generator
from mesaopt.tasks import LinearRegression
from mesaopt.train import TrainConfig, lr_factor, train
from mesaopt.train.curriculum import Curriculum, CurriculumState, Gate, Ramp
from mesaopt.train.objective import LossOutput, make_optimizer, param_groups

RAMPS = {"dims": Ramp(start=2, end=4, inc=1, interval=3), "points": Ramp(start=5, end=9, inc=2, interval=3)}


def test_fixed_state_follows_the_ramps_and_knows_its_full_step():
    st = CurriculumState(Curriculum(**RAMPS), d=4, n_points=9, objective="prefix")
    assert [st.at(s) for s in (1, 3, 4, 7, 100)] == [(2, 5), (2, 5), (3, 7), (4, 9), (4, 9)]
    assert st.full == 7 and not st.complete(6) and st.complete(7)


def test_gated_state_advances_only_when_the_late_prefix_error_is_low():
    cur = Curriculum(mode="gated", gate=Gate(threshold=0.5, min_steps=2, ema=0.0), **RAMPS)
    st = CurriculumState(cur, d=4, n_points=9, objective="prefix")
    high, low = torch.full((8, 5), 10.0), torch.zeros(8, 5)
    low[:, :3] = 100.0  # early prefixes (< 1.5 dims examples: positions 0..2 for dims 2) do not count
    for step in range(1, 6):
        st.observe(step, high, 2)
    assert st.at(6) == (2, 5) and not st.complete(6)
    st.observe(6, low, 2)
    assert st.at(7) == (3, 7) and not st.complete(7)
    low7 = torch.zeros(8, 7)
    low7[:, :4] = 100.0
    st.observe(7, low7, 3)
    assert st.at(8) == (3, 7)  # min_steps: a new stage runs at least 2 steps
    st.observe(8, low7, 3)
    assert st.at(9) == (4, 9) and st.complete(9) and not st.complete(8) and st.full == 9


def test_gate_ema_matches_a_numpy_recursion():
    cur = Curriculum(mode="gated", gate=Gate(threshold=1e-9, min_steps=1, ema=0.7), dims=Ramp(start=2, end=3))
    st = CurriculumState(cur, d=3, n_points=6, objective="prefix")
    rng = np.random.default_rng(0)
    ema = None
    for step in range(1, 6):
        err = rng.random((4, 6))
        st.observe(step, torch.tensor(err), 2)
        e = err[:, 3:].mean() / 2  # prefixes with >= 1.5 * 2 = 3 examples, per active dim
        ema = e if ema is None else 0.7 * ema + 0.3 * e
        assert st.ema == pytest.approx(ema, rel=1e-12)


def test_cosine_after_curriculum_closed_form():
    def ref(step, full, warm=2, k=4, m=0.1):  # 1-based step, written out independently
        if step <= warm:
            return step / warm
        if full is None or step < full:
            return 1.0
        q = min(1.0, (step - full) / k)
        return m + (1 - m) * (1 + math.cos(math.pi * q)) / 2

    for full in (None, 3, 7):
        got = [lr_factor("cosine_after_curriculum", s - 1, 100, 2, 0.1, full, 4) for s in range(1, 15)]
        assert got == pytest.approx([ref(s, full) for s in range(1, 15)], abs=1e-12)


def test_config_rules_for_the_recipe_fields():
    with pytest.raises(ValueError, match="decay_steps go together"):
        TrainConfig(schedule="cosine_after_curriculum", curriculum=Curriculum(**RAMPS))
    with pytest.raises(ValueError, match="needs a curriculum"):
        TrainConfig(schedule="cosine_after_curriculum", decay_steps=3)
    with pytest.raises(ValueError, match="needs a gate"):
        Curriculum(mode="gated", **RAMPS)
    with pytest.raises(ValueError, match="stop.at"):
        TrainConfig(n_points=9, stop={"target": 0.1, "at": 9})


class ZeroPredictor(torch.nn.Module):
    """Predicts 0 everywhere (its one parameter never gets a gradient): error at any N is E[y^2] / d."""

    def __init__(self) -> None:
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(()))

    def prefix(self, xs, ys):
        return torch.zeros_like(ys) + 0.0 * self.p

    def forward(self, ctx_x, ctx_y, qry_x):
        return torch.zeros(qry_x.shape[:2]) + 0.0 * self.p


def test_stop_rule_draws_fresh_sequences_anew_at_every_check():
    d, T, seed, at, n_fresh = 3, 6, 4, 5, 4
    task = LinearRegression(d=d)
    # independent reference: the eval-batch error of the zero predictor and the fresh draws of every check
    eb = task.sample(256, T, generator(seed, "eval"))
    eval_err = float((eb.ys[:, at] ** 2).mean()) / d
    g = generator(seed, "stop-fresh")
    fresh = []
    for _ in range(40):  # each check: chunks of 3 and 1 sequences (chunk=3), drawn from the rule's own stream
        ys = torch.cat([task.sample(3, T, g).ys, task.sample(1, T, g).ys])
        fresh.append(float((ys[:, at] ** 2).mean()) / d)
    target = max(eval_err, sorted(fresh)[len(fresh) // 3]) + 1e-6  # eval passes; some checks fail, some pass
    first = next(i for i, f in enumerate(fresh) if f <= target)
    assert first > 0  # the setting exercises at least one failed fresh check
    cfg = TrainConfig(steps=400, batch_size=4, n_points=T, objective="prefix", eval_every=5, eval_batch_size=256,
                      seed=seed, stop={"target": target, "at": at, "fresh_sequences": n_fresh, "chunk": 3})
    res = train(ZeroPredictor(), task, cfg, progress=False)
    assert res.stopped_at == 5 * (first + 1) and res.completed
    checks = [r["stop_err_fresh"] for r in res.history if "stop_err_fresh" in r]
    assert checks == pytest.approx(fresh[:first + 1], rel=1e-5)
    assert [r["stop_err"] for r in res.history if "stop_err" in r][0] == pytest.approx(eval_err, rel=1e-5)


def test_stop_rule_needs_a_prefix_model():
    class QueryOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(2, 1)

        def forward(self, cx, cy, qx):
            return self.w(qx).squeeze(-1)

    with pytest.raises(ConfigError, match="prefix"):
        train(QueryOnly(), LinearRegression(d=2), TrainConfig(steps=2, n_points=4, stop={"target": 1, "at": 2}),
              progress=False)


def test_lr_multipliers_scale_one_sgd_step_exactly():
    class Two(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
            self.b = torch.nn.Parameter(torch.tensor([3.0]))

    m = Two()
    cfg = TrainConfig(optimizer="sgd", lr=0.1, lr_multipliers={"b": 10.0})
    opt = make_optimizer(param_groups(m, cfg), cfg)
    (m.a.pow(2).sum() + m.b.pow(2).sum()).backward()  # grads 2a, 2b
    opt.step()
    assert m.a.tolist() == pytest.approx([1 - 0.1 * 2, 2 - 0.1 * 4])
    assert m.b.tolist() == pytest.approx([3 - 1.0 * 6])
    with pytest.raises(ConfigError, match="matches no parameter"):
        param_groups(m, TrainConfig(lr_multipliers={"c*": 2.0}))


class CountingHook:
    """A loss hook with state: the built-in query MSE plus a counter kept in the checkpoint."""

    def __init__(self):
        self.calls = torch.zeros(1)

    def __call__(self, model, batch, gen):
        cx, cy, qx, qy = batch.split(batch.n_points - 1)
        self.calls += 1
        noise = torch.rand((), generator=gen)  # uses the hook's own checkpointed stream
        return LossOutput(((model(cx, cy, qx) - qy) ** 2).mean() * (1 + 0.01 * noise), None,
                          {"calls": self.calls[0].clone()})

    def state_tensors(self):
        return {"calls": self.calls}

    def load_state_tensors(self, t):
        self.calls = t["calls"].clone()


def _gpt():
    return GPT(d=3, n_positions=9, layers=1, heads=2, width=16, seed=0)


def _gated_cfg(**kw):
    return TrainConfig(**{"steps": 24, "batch_size": 8, "n_points": 9, "lr": 1e-3, "objective": "prefix",
                          "warmup_steps": 2, "schedule": "cosine_after_curriculum", "decay_steps": 6,
                          "min_lr_ratio": 0.1, "eval_every": 4, "eval_batch_size": 32, "ckpt_every": 4,
                          "log_every": 1, "curriculum": {"mode": "gated", "gate": {"threshold": 2.0, "min_steps": 3},
                                                         "dims": {"start": 1, "end": 3},
                                                         "points": {"start": 5, "end": 9, "inc": 2}},
                          "stop": {"target": 1e-9, "at": 8, "fresh_sequences": 16}, **kw})


def test_gated_run_with_stop_rule_resumes_bit_for_bit(tmp_path):
    task = LinearRegression(d=3)
    full = train(_gpt(), task, _gated_cfg(), out=tmp_path / "a", progress=False)
    assert full.curriculum_complete_step is not None and full.stopped_at is None
    train(_gpt(), task, _gated_cfg(), out=tmp_path / "b", stop_at=10, progress=False)
    res = train(_gpt(), task, _gated_cfg(), out=tmp_path / "b", resume=True, progress=False)
    assert res.resumed_from == 10
    for x, y in zip(full.model.state_dict().values(), res.model.state_dict().values(), strict=True):
        assert torch.equal(x, y)

    def strip(p):
        return [{k: v for k, v in json.loads(s).items() if k != "wall"} for s in p.read_text().splitlines()]

    assert strip(tmp_path / "a" / "metrics.jsonl") == strip(tmp_path / "b" / "metrics.jsonl")
    recs = [r for r in full.history if "lr" in r and r["step"] > 0]
    for r in recs:  # the lr follows the closed form given the curriculum's first full step
        f = lr_factor("cosine_after_curriculum", r["step"] - 1, 24, 2, 0.1, full.curriculum_complete_step, 6)
        assert r["lr"] == pytest.approx(1e-3 * f, rel=1e-12)
    dims = [r["dims"] for r in recs]
    assert dims == sorted(dims) and dims[0] == 1 and dims[-1] == 3


def test_loss_hook_state_and_stream_are_checkpointed(tmp_path):
    task = LinearRegression(d=3)
    cfg = TrainConfig(steps=8, batch_size=4, n_points=6, ckpt_every=4, log_every=1, eval_every=0)
    a = train(_gpt(), task, cfg, out=tmp_path / "a", loss_hook=CountingHook(), progress=False)
    train(_gpt(), task, cfg, out=tmp_path / "b", stop_at=4, loss_hook=CountingHook(), progress=False)
    hook = CountingHook()
    b = train(_gpt(), task, cfg, out=tmp_path / "b", resume=True, loss_hook=hook, progress=False)
    assert float(hook.calls) == 8 and b.history[-1]["calls"] == 8
    for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True):
        assert torch.equal(x, y)
