"""`mesaopt train`: --overwrite, provenance, start-up checks before config.yaml."""

from __future__ import annotations

import json

import pytest
import yaml
from cli_helpers import run_cli as _cli

JOB = {"model": {"kind": "test_tiny_gd", "d": 3}, "task": {"kind": "linear", "d": 3},
       "train": {"steps": 4, "batch_size": 8, "n_points": 5, "eval_every": 2, "eval_batch_size": 16,
                 "ckpt_every": 2, "log_every": 2}}




@pytest.fixture()
def cfg(tmp_path):
    import train_helpers  # noqa: F401 - registers test_tiny_gd

    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump(JOB))
    return p


def test_overwrite_and_provenance(cfg, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = _cli(["train", "-c", str(cfg), "--out", str(out), "--json"], capsys)
    assert code == 0, err
    res = json.loads(stdout)
    assert res["out"] == str(out) and res["provenance"]["command"].startswith("mesaopt train -c")
    code, stdout, err = _cli(["train", "-c", str(cfg), "--out", str(out), "--set", "seed=7"], capsys)
    assert code == 2 and "--overwrite" in err and "Traceback" not in err
    code, stdout, err = _cli(["train", "-c", str(cfg), "--out", str(out), "--set", "seed=7", "--device", "cuda",
                              "--overwrite"], capsys)
    assert code == 2 and "not available" in err
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["seed"] == 0  # the old run is intact
    code, stdout, err = _cli(["train", "-c", str(cfg), "--out", str(out), "--set", "seed=7", "--overwrite",
                              "--json"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["seed"] == 7 and yaml.safe_load((out / "config.yaml").read_text())["train"]["seed"] == 7
    assert not list(tmp_path.glob(".run.old-*"))


def test_failed_start_writes_no_config(cfg, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = _cli(["train", "-c", str(cfg), "--out", str(out), "--device", "cuda"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert not (out / "config.yaml").exists()
