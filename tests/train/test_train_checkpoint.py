"""Checkpoints: safetensors + JSON round trip, atomic swap recovery, one-line refusals."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors import safe_open
from train_helpers import TinyGD

from mesaopt.errors import CheckpointError
from mesaopt.tasks import LinearRegression
from mesaopt.train import TrainConfig, find_checkpoint, load_checkpoint, load_model, save_checkpoint, train
from mesaopt.train.checkpoint import generator_state, set_generator_state

TASK = LinearRegression(d=3)
CFG = TrainConfig(steps=4, batch_size=8, n_points=5, eval_batch_size=16, ckpt_every=2, log_every=2, eval_every=2)


@pytest.fixture()
def run(tmp_path):
    out = tmp_path / "run"
    res = train(TinyGD(3), TASK, CFG, out=out, progress=False)
    return out, res


def test_layout_and_round_trip(run):
    out, res = run
    ck = out / "ckpt"
    assert sorted(p.name for p in ck.iterdir()) == ["model.safetensors", "optimizer.safetensors", "state.json"]
    state = json.loads((ck / "state.json").read_text())
    assert state["format_version"] == 1 and state["step"] == 4
    assert state["model"] == res.model.spec() and state["task"] == TASK.spec()
    assert state["train"] == CFG.model_dump(mode="json")
    assert set(state["rng"]) == {"train", "eval"} and state["optimizer"]["class"] == "AdamW"
    with safe_open(ck / "model.safetensors", "pt") as f:
        assert set(f.keys()) == {"W", "b"}
    with safe_open(ck / "optimizer.safetensors", "pt") as f:
        assert {"state.0.exp_avg", "state.0.exp_avg_sq", "state.0.step"} <= set(f.keys())
    for where in (out, ck):
        model, st = load_model(where)
        assert isinstance(model, TinyGD) and not model.training and st["step"] == 4
        assert torch.equal(model.W, res.model.W) and torch.equal(model.b, res.model.b)
    assert not list(out.glob("ckpt.*"))  # no temp/old leftovers


def test_optimizer_and_rng_restore(tmp_path):
    model = TinyGD(3)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.8, 0.95))
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(2, 4, 3), torch.randn(2, 4), torch.randn(2, 1, 3)).pow(2).sum().backward()
        opt.step()
    g = torch.Generator().manual_seed(7)
    torch.rand(5, generator=g)
    save_checkpoint(tmp_path, model, 3, optimizer=opt, generators={"train": g})
    expect = torch.rand(4, generator=g)
    m2 = TinyGD(3, seed=5)
    o2 = torch.optim.AdamW(m2.parameters(), lr=0.5)
    g2 = torch.Generator().manual_seed(0)
    state = load_checkpoint(tmp_path, m2, o2, generators={"train": g2})
    assert state["step"] == 3 and torch.equal(m2.W, model.W)
    assert torch.equal(torch.rand(4, generator=g2), expect)
    assert o2.param_groups[0]["betas"] == (0.8, 0.95) and o2.param_groups[0]["lr"] == 0.1
    for p, q in zip(model.parameters(), m2.parameters(), strict=True):
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt.state[p][k], o2.state[q][k])
    with pytest.raises(CheckpointError, match="optimizer is AdamW"):
        load_checkpoint(tmp_path, optimizer=torch.optim.SGD(m2.parameters(), lr=0.1))


def test_generator_state_is_json_not_pickle():
    g = torch.Generator().manual_seed(3)
    st = json.loads(json.dumps(generator_state(g)))
    a = torch.randn(3, generator=g)
    h = torch.Generator().manual_seed(99)
    set_generator_state(h, st)
    assert torch.equal(torch.randn(3, generator=h), a)


def test_recovers_from_kill_between_renames(run, tmp_path):
    out, _ = run
    # a newer complete checkpoint in ckpt.tmp and the old one renamed away: kill after the first rename
    other = tmp_path / "other"
    train(TinyGD(3), TASK, CFG.model_copy(update={"steps": 6}), out=other, progress=False)
    os.replace(out / "ckpt", out / "ckpt.old")
    shutil.copytree(other / "ckpt", out / "ckpt.tmp")
    assert find_checkpoint(out).name == "ckpt.tmp"
    assert load_model(out)[1]["step"] == 6
    # an incomplete tmp (no state.json yet) is ignored in favour of the old one
    (out / "ckpt.tmp" / "state.json").unlink()
    assert find_checkpoint(out).name == "ckpt.old"
    assert find_checkpoint(out, repair=True).name == "ckpt"
    assert not (out / "ckpt.tmp").exists() and not (out / "ckpt.old").exists()
    assert load_model(out)[1]["step"] == 4


def _edit_state(out, **kw):
    p = out / "ckpt" / "state.json"
    st = json.loads(p.read_text())
    st.update(kw)
    p.write_text(json.dumps(st))


@pytest.mark.parametrize("case,match", [
    ("missing_dir", "does not exist"),
    ("empty_dir", "no checkpoint"),
    ("missing_weights", "model.safetensors' is missing"),
    ("corrupt_weights", "corrupt"),
    ("version", "unknown checkpoint format_version 99"),
    ("unknown_kind", "cannot build model"),
    ("bad_kwarg", "cannot build model"),
    ("shape", r"has shape \(3, 3\) but the model expects \(5, 5\)"),
    ("bad_json", "not valid JSON"),
])
def test_refusals_are_one_line(run, tmp_path, case, match):
    out, _ = run
    target = out
    if case == "missing_dir":
        target = tmp_path / "nope"
    elif case == "empty_dir":
        target = tmp_path / "empty"
        target.mkdir()
    elif case == "missing_weights":
        (out / "ckpt" / "model.safetensors").unlink()
    elif case == "corrupt_weights":
        (out / "ckpt" / "model.safetensors").write_bytes(b"\x10\x00garbage")
    elif case == "version":
        _edit_state(out, format_version=99)
    elif case == "unknown_kind":
        _edit_state(out, model={"kind": "no-such-model"})
    elif case == "bad_kwarg":
        _edit_state(out, model={"kind": "test_tiny_gd", "d": 3, "colour": "red"})
    elif case == "shape":
        _edit_state(out, model={"kind": "test_tiny_gd", "d": 5})
    elif case == "bad_json":
        (out / "ckpt" / "state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=match) as e:
        load_model(target)
    assert "\n" not in str(e.value)
