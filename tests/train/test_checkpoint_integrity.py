"""Checkpoint integrity: sha256 of every tensor file in state.json, checked on every load (API and CLI)."""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml
from train_helpers import TinyGD

from mesaopt.cli import main
from mesaopt.errors import CheckpointError
from mesaopt.tasks import LinearRegression
from mesaopt.train import TrainConfig, load_checkpoint, load_model, train

TASK = LinearRegression(d=3)
CFG = TrainConfig(steps=4, batch_size=8, n_points=5, eval_batch_size=16, ckpt_every=2, log_every=2, eval_every=2)
JOB = {"model": {"kind": "test_tiny_gd", "d": 3}, "task": {"kind": "linear", "d": 3},
       "train": {"steps": 4, "batch_size": 8, "n_points": 5, "eval_every": 2, "eval_batch_size": 16,
                 "ckpt_every": 2, "log_every": 2}}


def _flip_byte(path, offset: int = -5) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))


def _truncate(path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


@pytest.fixture()
def run(tmp_path):
    out = tmp_path / "run"
    train(TinyGD(3), TASK, CFG, out=out, progress=False)
    return out


def test_state_records_sha256_of_every_tensor_file(run):
    ck = run / "ckpt"
    state = json.loads((ck / "state.json").read_text())
    assert set(state["sha256"]) == {"model.safetensors", "optimizer.safetensors"}
    for name, digest in state["sha256"].items():
        assert hashlib.sha256((ck / name).read_bytes()).hexdigest() == digest


@pytest.mark.parametrize("damage", [_flip_byte, _truncate], ids=["flipped-byte", "truncated"])
def test_corrupt_model_file_is_refused_naming_it(run, damage):
    damage(run / "ckpt" / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model\.safetensors' is corrupt or truncated"):
        load_model(run)


def test_corrupt_optimizer_file_is_refused_on_resume(run):
    _flip_byte(run / "ckpt" / "optimizer.safetensors", offset=-3)
    with pytest.raises(CheckpointError, match=r"optimizer\.safetensors' is corrupt"):
        train(TinyGD(3), TASK, CFG.model_copy(update={"steps": 6}), out=run, resume=True, progress=False)
    load_model(run)  # the weights themselves are fine


def test_old_checkpoint_without_hashes_loads_unchecked(run):
    sp = run / "ckpt" / "state.json"
    state = json.loads(sp.read_text())
    del state["sha256"]
    sp.write_text(json.dumps(state))
    _flip_byte(run / "ckpt" / "model.safetensors")  # a float's last byte: still parses, nothing to check against
    model, st = load_model(run)
    assert st["step"] == 4 and "sha256" not in st
    load_checkpoint(run, TinyGD(3))


def _cli(argv, capsys):
    with pytest.raises(SystemExit) as ei:
        main(argv)
    cap = capsys.readouterr()
    return ei.value.code, cap.out, cap.err


@pytest.fixture()
def cli_run(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(JOB))
    out = tmp_path / "run"
    main(["train", "-c", str(cfg), "--out", str(out), "--json"])
    capsys.readouterr()
    _flip_byte(out / "ckpt" / "model.safetensors")
    return out


@pytest.mark.parametrize("cmd", [["train", "--resume", "{out}"], ["identify", "{out}"], ["compare", "{out}"],
                                 ["identify", "{out}/ckpt", "--json"]])
def test_cli_corrupt_checkpoint_exit_2_one_line(cli_run, cmd, capsys):
    code, out, err = _cli([a.format(out=cli_run) for a in cmd], capsys)
    assert code == 2 and out == ""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert 1 <= len(lines) <= 3 and "Traceback" not in err
    assert lines[0].startswith("error:") and "model.safetensors" in err and "corrupt" in err
