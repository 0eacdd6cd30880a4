"""`mesaopt train`: YAML + --set, results.json contract, --resume, one-line errors, SIGKILL + resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from train_helpers import TinyGD

from mesaopt import tasks
from mesaopt.cli import main
from mesaopt.io import read_jsonl
from mesaopt.train import TrainConfig, load_model, train

HERE = Path(__file__).parent
JOB = {"model": {"kind": "test_tiny_gd", "d": 3}, "task": {"kind": "linear", "d": 3},
       "train": {"steps": 12, "batch_size": 8, "n_points": 5, "lr": 0.05, "eval_every": 6, "eval_batch_size": 32,
                 "ckpt_every": 4, "log_every": 2}}


def _write_cfg(tmp_path: Path, job: dict = JOB) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(job))
    return p


def test_train_json_writes_run_folder(tmp_path, capsys):
    cfg, out = _write_cfg(tmp_path), tmp_path / "run"
    main(["train", "-c", str(cfg), "--out", str(out), "--json", "--set", "steps=10", "--set", "model.init_scale=0.2",
          "--device", "cpu"])
    res = json.loads(capsys.readouterr().out)
    assert res["experiment"] == "train" and res["seed"] == 0
    assert res["config"]["train"]["steps"] == 10 and res["config"]["model"]["init_scale"] == 0.2
    assert set(res["metrics"]) >= {"loss", "eval_loss", "steps"} and res["metrics"]["steps"] == 10
    assert res.pop("out") == str(out)
    assert json.loads((out / "results.json").read_text()) == res
    assert {"config.yaml", "metrics.jsonl", "ckpt/model.safetensors", "ckpt/state.json"} <= set(res["artifacts"])
    model, state = load_model(out)
    assert state["step"] == 10 and model.init_scale == 0.2
    # the CLI run equals the API run with the same config
    api = train(TinyGD(3, init_scale=0.2), tasks.build(JOB["task"]),
                TrainConfig(**{**JOB["train"], "steps": 10}), progress=False)
    assert torch.equal(api.model.W, model.W)
    assert res["metrics"]["eval_loss"] == api.final["eval_loss"]


def test_resume_finished_run_and_errors(tmp_path, capsys):
    cfg, out = _write_cfg(tmp_path), tmp_path / "run"
    main(["train", "-c", str(cfg), "--out", str(out), "--json"])
    first = json.loads(capsys.readouterr().out)
    main(["train", "--resume", str(out), "--json"])
    again = json.loads(capsys.readouterr().out)
    assert again["metrics"] == first["metrics"]
    saved = (out / "config.yaml").read_text()
    cases = [
        (["train", "--resume", str(tmp_path / "missing")], "does not exist"),
        (["train", "--resume", str(out), "--set", "lr=1"], "drop -c/--set"),
        (["train", "-c", str(cfg), "--out", str(out), "--set", "lr=0.3"], "already holds a checkpoint"),
        (["train", "-c", str(cfg), "--set", "lr=-1", "--out", str(tmp_path / "x")], "train.lr"),
        (["train", "-c", str(cfg), "--set", "nosuchkey=1"], "unknown key"),
        (["train"], "needs -c"),
    ]
    for argv, match in cases:
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2, argv
        err = capsys.readouterr().err
        assert match in " ".join(err.split()) and err.strip().startswith("error:"), (argv, err)
        assert len(err.strip().splitlines()) <= 2  # one logical line (rich may soft-wrap nothing)
    assert (out / "config.yaml").read_text() == saved  # a refused run never touches the existing one


def test_make_job_overrides(tmp_path):
    from mesaopt.train.job import make_job

    job = make_job(_write_cfg(tmp_path), {"d": "5", "task.noise_std": "0.5", "lr": "0.2", "model.init_scale": "1e-2"})
    assert job.model["d"] == 5 and job.task == {"kind": "linear", "d": 5, "noise_std": 0.5}
    assert job.train.lr == 0.2 and job.model["init_scale"] == 0.01
    assert job.train.steps == JOB["train"]["steps"]


def test_bad_model_spec(tmp_path, capsys):
    cfg = _write_cfg(tmp_path, {**JOB, "model": {"kind": "test_tiny_gd", "d": 3, "colour": 1}})
    with pytest.raises(SystemExit) as e:
        main(["train", "-c", str(cfg), "--out", str(tmp_path / "r")])
    assert e.value.code == 2 and "cannot be built" in capsys.readouterr().err


def test_diverged_exit_code(tmp_path, capsys):
    job = {**JOB, "train": {**JOB["train"], "lr": 1e4, "optimizer": "sgd", "steps": 60, "nan_check_every": 1}}
    job["model"] = {"kind": "test_tiny_gd", "d": 3, "init_scale": 1.0}
    with pytest.raises(SystemExit) as e:
        main(["train", "-c", str(_write_cfg(tmp_path, job)), "--out", str(tmp_path / "r")])
    assert e.value.code == 3 and "became" in capsys.readouterr().err


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise(tmp_path):
    job = {**JOB, "train": {**JOB["train"], "steps": 400, "ckpt_every": 25, "eval_every": 25, "log_every": 25,
                            "eval_batch_size": 256}}
    cfg, out = _write_cfg(tmp_path, job), tmp_path / "run"
    # the child sleeps 5 ms per step (outside the math) so that the kill lands mid-run
    code = ("import sys, time; sys.path.insert(0, sys.argv[1]); import train_helpers; from mesaopt.train import loop; "
            "f = loop.sample_train_batch; loop.sample_train_batch = lambda *a: (time.sleep(0.005), f(*a))[1]; "
            "from mesaopt.cli import main; main(sys.argv[2:])")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code, str(HERE), "train", "-c", str(cfg), "--out", str(out),
                             "--json"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            st = out / "ckpt" / "state.json"
            if st.is_file() and json.loads(st.read_text())["step"] >= 50:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL  # killed mid-run, not finished
    killed_at = json.loads((out / "ckpt" / "state.json").read_text())["step"]
    assert 50 <= killed_at < 400
    main(["train", "--resume", str(out), "--json"])
    model, state = load_model(out)
    assert state["step"] == 400
    ref = train(TinyGD(3), tasks.build(job["task"]), TrainConfig(**job["train"]), progress=False)
    for k, v in ref.model.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k
    steps = [r["step"] for r in read_jsonl(out / "metrics.jsonl")]
    assert steps == [r["step"] for r in ref.history]
