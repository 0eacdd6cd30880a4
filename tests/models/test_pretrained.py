"""Shareable model folders: save_pretrained / from_pretrained / mesaopt.load / mesaopt.export, sha256, versions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import mesaopt
from mesaopt.cli import main
from mesaopt.errors import CheckpointError
from mesaopt.models.ebt import EBT, EBTFeedForward
from mesaopt.models.gpt import GPT
from mesaopt.models.lsa import LSA
from mesaopt.models.pretrained import CONFIG_FILE, WEIGHTS_FILE
from mesaopt.models.softmax import SoftmaxAttention
from mesaopt.tasks import LinearRegression
from mesaopt.train.checkpoint import load_model, save_checkpoint

SRC = str(Path(__file__).resolve().parents[2] / "src")
MODELS = {
    "lsa": lambda: LSA(d=3, layers=2, heads=2, param="separate", key_size=2, init_std=0.3, seed=4),
    "softmax": lambda: SoftmaxAttention(d=3, layers=2, heads=2, context="causal", init_std=0.3, seed=4),
    "gpt": lambda: GPT(d=3, n_positions=8, layers=2, heads=2, width=16, seed=4),
    "ebt": lambda: EBT(d=3, dim=16, layers=1, heads=2, steps=2, init="zeros", alpha_init=0.3),
    "ebt_ff": lambda: EBTFeedForward(d=3, dim=16, layers=1, heads=2),
}


def data(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(4, 6, 3, generator=g, dtype=dtype), torch.randn(4, 6, generator=g, dtype=dtype),
            torch.randn(4, 2, 3, generator=g, dtype=dtype))


def perturbed(model):
    with torch.no_grad():  # weights differ from a fresh build(spec)
        for p in model.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1), dtype=p.dtype))
    return model.eval()


@pytest.mark.parametrize("kind", list(MODELS))
def test_roundtrip_in_process(kind, tmp_path):
    m = perturbed(MODELS[kind]())
    path = m.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in path.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    cfg = json.loads((path / CONFIG_FILE).read_text())
    assert cfg["model"] == m.spec() and cfg["format_version"] == 1 and len(cfg["weights"]["sha256"]) == 64
    for loaded in (mesaopt.load(path), type(m).from_pretrained(path)):
        assert type(loaded) is type(m) and not loaded.training
        assert torch.equal(loaded(*data()), m(*data()))


def test_fresh_process_gives_identical_predictions(tmp_path):
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # the same reduction order in both processes
    try:
        m = perturbed(MODELS["gpt"]()).double()
        m.save_pretrained(tmp_path / "m")
        cx, cy, qx = data(torch.float64)
        pred = m(cx, cy, qx).detach()
    finally:
        torch.set_num_threads(n)
    save_file({"cx": cx, "cy": cy, "qx": qx, "pred": pred}, tmp_path / "io.safetensors")
    code = ("import sys, torch; torch.set_num_threads(1); from safetensors.torch import load_file\n"
            "from mesaopt.models.gpt import GPT\n"
            "t = load_file(sys.argv[2]); m = GPT.from_pretrained(sys.argv[1])\n"
            "assert next(m.parameters()).dtype == torch.float64\n"
            "p = m(t['cx'], t['cy'], t['qx'])\n"
            "print('identical' if torch.equal(p, t['pred']) else (p - t['pred']).abs().max().item())")
    env = {**os.environ, "PYTHONPATH": SRC}
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m"), str(tmp_path / "io.safetensors")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "identical"


def test_flipped_byte_is_a_checkpoint_error(tmp_path):
    path = MODELS["lsa"]().save_pretrained(tmp_path / "m")
    raw = bytearray((path / WEIGHTS_FILE).read_bytes())
    raw[-3] ^= 0x01
    (path / WEIGHTS_FILE).write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupt or was modified: sha256"):
        mesaopt.load(path)


def test_unknown_format_version_and_kind_and_missing_folder(tmp_path):
    path = MODELS["lsa"]().save_pretrained(tmp_path / "m")
    with pytest.raises(CheckpointError, match="holds a 'lsa' model, not 'gpt'"):
        GPT.from_pretrained(path)
    cfg = json.loads((path / CONFIG_FILE).read_text())
    (path / CONFIG_FILE).write_text(json.dumps({**cfg, "format_version": 99}))
    with pytest.raises(CheckpointError, match="unknown model format_version 99.*reads format_version 1"):
        mesaopt.load(path)
    (path / CONFIG_FILE).write_text(json.dumps({**cfg, "format": "something-else"}))
    with pytest.raises(CheckpointError, match="not a mesaopt model config"):
        mesaopt.load(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        mesaopt.load(tmp_path / "nope")


def test_weights_that_do_not_fit_the_spec(tmp_path):
    path = MODELS["lsa"]().save_pretrained(tmp_path / "m")
    cfg = json.loads((path / CONFIG_FILE).read_text())
    cfg["model"]["layers"] = 3
    (path / CONFIG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="do not fit the model spec"):
        mesaopt.load(path)


@pytest.fixture
def run_dir(tmp_path):
    model = perturbed(MODELS["lsa"]())
    save_checkpoint(tmp_path / "run", model, step=7, task=LinearRegression(d=3), train_cfg={"n_points": 7})
    return tmp_path / "run"


def test_export_of_a_run_checkpoint(run_dir, tmp_path):
    with pytest.raises(CheckpointError, match="it is a run folder: convert it with `mesaopt export"):
        mesaopt.load(run_dir)
    out = mesaopt.export(run_dir, tmp_path / "exported")
    ref, _ = load_model(run_dir)
    assert torch.equal(mesaopt.load(out)(*data()), ref(*data()))
    meta = json.loads((out / CONFIG_FILE).read_text())["metadata"]
    assert meta["step"] == 7 and meta["n_points"] == 7 and meta["task"]["kind"] == "linear"
    assert set(load_file(out / WEIGHTS_FILE)) == set(ref.state_dict())  # weights only: no optimizer, no RNG


def test_cli_export_and_corrupt_folder_exit_2(run_dir, tmp_path, capsys):
    out = tmp_path / "exported"
    with pytest.raises(SystemExit) as e:
        main(["export", str(run_dir), str(out)]) or sys.exit(0)
    assert e.value.code == 0 and (out / CONFIG_FILE).is_file()
    raw = bytearray((out / WEIGHTS_FILE).read_bytes())
    raw[-1] ^= 0xFF
    (out / WEIGHTS_FILE).write_bytes(bytes(raw))
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["patch", str(out), "--batch-size", "4"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "sha256" in err and "Traceback" not in err
