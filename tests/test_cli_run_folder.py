"""`mesaopt run` and its run folder: resume with the original command, --overwrite, start-up checks, provenance,
file modes, a corrupt checkpoint."""

from __future__ import annotations

import json
import os
import stat

import pytest
import yaml
from cli_helpers import run_cli as _cli

from mesaopt.cli import main

# vonoswald-gd shrunk to a few seconds; the options a user would have typed
TINY = ["--quick", "--set", "train.steps=20", "--set", "train.eval_every=10", "--set", "train.ckpt_every=10",
        "--set", "train.batch_size=64", "--set", "eval_batch_size=256", "--set", "lr_fit_batch_size=256"]




def _assert_bad_input(code, out, err, *fragments):
    assert code == 2 and out == ""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert 1 <= len(lines) <= 3 and lines[0].startswith("error:"), err
    assert "Traceback" not in err
    flat = " ".join(err.split())
    for f in fragments:
        assert f in flat, (f, flat)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished tiny run made with --set seed=3, as a user would: (argv without --resume, run folder, json)."""
    out = tmp_path_factory.mktemp("runs") / "vo"
    argv = ["run", "vonoswald-gd", *TINY, "--set", "seed=3", "--out", str(out), "--json"]
    old = os.umask(0o022)  # capsys is function-scoped: capture stdout by hand
    try:
        from contextlib import redirect_stdout
        from io import StringIO

        buf = StringIO()
        with redirect_stdout(buf):
            main(argv)
    finally:
        os.umask(old)
    return argv, out, json.loads(buf.getvalue())


def test_json_names_the_run_folder_and_results_hold_provenance(tiny_run):
    _, out, res = tiny_run
    assert res["out"] == str(out)
    saved = json.loads((out / "results.json").read_text())
    prov = saved["provenance"]
    assert res["provenance"] == prov
    assert set(prov) == {"version", "commit", "command", "python", "torch", "machine", "started_utc",
                         "finished_utc"}
    assert prov["command"].startswith("mesaopt run vonoswald-gd --quick") and "seed=3" in prov["command"]
    assert prov["commit"] is None or len(prov["commit"]) == 40
    assert prov["started_utc"] <= prov["finished_utc"] and prov["started_utc"].endswith("Z")
    assert prov["machine"]["platform"] and prov["machine"]["cpu"] and prov["torch"]


def test_files_0644_folders_0755_under_umask_022(tiny_run):
    _, out, _ = tiny_run
    for p in [out, *out.rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o755 if p.is_dir() else 0o644), (p, oct(mode))


def test_resume_with_the_same_command_continues(tiny_run, capsys):
    argv, out, res = tiny_run
    code, stdout, err = _cli([*argv, "--resume"], capsys)
    assert code == 0, err
    again = json.loads(stdout)
    assert again["metrics"] == res["metrics"] and again["config"]["seed"] == 3
    code, stdout, err = _cli(["run", "vonoswald-gd", "--out", str(out), "--resume", "--json"], capsys)  # bare form
    assert code == 0 and json.loads(stdout)["metrics"] == res["metrics"]


def test_resume_with_differing_overrides_names_the_fields(tiny_run, capsys):
    argv, out, _ = tiny_run
    changed = [a.replace("seed=3", "seed=4").replace("train.steps=20", "train.steps=30") for a in argv]
    _assert_bad_input(*_cli([*changed, "--resume"], capsys), "cannot resume", "seed (saved 3, given 4)",
                      "train.steps (saved 20, given 30)")
    without_quick = [a for a in argv if a != "--quick"]
    _assert_bad_input(*_cli([*without_quick, "--resume"], capsys), "differs from the saved one", "train.lr")


def test_refusals_leave_the_run_untouched(tiny_run, capsys):
    argv, out, _ = tiny_run
    before = (out / "config.yaml").read_text()
    _assert_bad_input(*_cli(argv, capsys), "already holds a run", "--overwrite")
    _assert_bad_input(*_cli([*argv, "--resume", "--overwrite"], capsys), "give only one")
    _assert_bad_input(*_cli([*argv, "--overwrite", "--set", "device=cuda"], capsys), "device 'cuda' is not available")
    assert (out / "config.yaml").read_text() == before and (out / "ckpt" / "state.json").is_file()
    assert not list(out.parent.glob(".vo.old-*"))


def test_corrupt_checkpoint_on_resume_exit_2(tiny_run, tmp_path, capsys):
    import shutil

    argv, out, _ = tiny_run
    copy = tmp_path / "vo"
    shutil.copytree(out, copy)
    ck = copy / "ckpt" / "model.safetensors"
    raw = bytearray(ck.read_bytes())
    raw[-2] ^= 0x55
    ck.write_bytes(bytes(raw))
    argv = [str(copy) if a == str(out) else a for a in argv]
    _assert_bad_input(*_cli([*argv, "--resume"], capsys), "model.safetensors", "corrupt")


def test_overwrite_replaces_the_run(tiny_run, tmp_path, capsys):
    import shutil

    argv, out, _ = tiny_run
    copy = tmp_path / "vo"
    shutil.copytree(out, copy)
    (copy / "stale.txt").write_text("old")
    argv = [str(copy) if a == str(out) else a.replace("seed=3", "seed=5") for a in argv]
    code, stdout, err = _cli([*argv, "--overwrite"], capsys)
    assert code == 0, err
    assert json.loads(stdout)["seed"] == 5
    assert yaml.safe_load((copy / "config.yaml").read_text())["seed"] == 5
    assert not (copy / "stale.txt").exists() and not list(tmp_path.glob(".vo.old-*"))


def test_failed_start_leaves_a_reusable_folder(tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    _assert_bad_input(*_cli(["run", "vonoswald-gd", "--set", "device=cuda", "--out", str(out)], capsys),
                      "device 'cuda' is not available")
    assert not (out / "config.yaml").exists()  # so the same --out is accepted by the next attempt


def test_out_of_memory_at_start_exit_2(tmp_path, monkeypatch, capsys):
    from dataclasses import replace

    from mesaopt.experiments import base

    exp = base.get("vonoswald-gd")
    for exc in (RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
                             "memory: you tried to allocate 400000000000 bytes."),
                RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB"), MemoryError()):
        def boom(cfg, ctx, exc=exc):
            raise exc

        monkeypatch.setitem(base.REGISTRY._entries, "vonoswald-gd", replace(exp, fn=boom))
        out = tmp_path / f"r{id(exc)}"
        _assert_bad_input(*_cli(["run", "vonoswald-gd", "--out", str(out)], capsys), "out of memory",
                          "train.batch_size", "eval_batch_size")


def test_out_of_memory_in_identify_names_its_batch_options(tmp_path, monkeypatch, capsys):
    from mesaopt import cli

    def boom(path, device="cpu"):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 10 GB")

    monkeypatch.setattr(cli, "_load_run", boom)
    (tmp_path / "state.json").write_text("{}")  # looks like a ckpt folder, so identify gets to loading it
    _assert_bad_input(*_cli(["identify", str(tmp_path)], capsys), "out of memory", "--batch-size")


def test_other_runtime_errors_are_not_hidden(tmp_path, monkeypatch):
    from mesaopt import cli

    def bug(path, device="cpu"):
        raise RuntimeError("a genuine bug")

    monkeypatch.setattr(cli, "_load_run", bug)
    (tmp_path / "state.json").write_text("{}")
    with pytest.raises(RuntimeError, match="a genuine bug"):
        main(["identify", str(tmp_path)])


def test_overwrite_refuses_the_current_directory(tmp_path, monkeypatch, capsys):
    (tmp_path / "config.yaml").write_text("experiment: vonoswald-gd\n")
    monkeypatch.chdir(tmp_path)
    _assert_bad_input(*_cli(["run", "vonoswald-gd", "--out", ".", "--overwrite"], capsys), "current directory")
    assert (tmp_path / "config.yaml").is_file()


@pytest.mark.slow
def test_sigkill_then_same_command_with_resume(tmp_path):
    """The headline case: `mesaopt run X --set seed=3 --out D` killed, then the same command + --resume."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    out = tmp_path / "vo"
    argv = [sys.executable, "-m", "mesaopt", "run", "vonoswald-gd", *TINY, "--set", "train.steps=3000",
            "--set", "train.ckpt_every=20", "--set", "train.eval_every=20", "--set", "seed=3", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "ckpt" / "state.json").is_file():
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    step = json.loads((out / "ckpt" / "state.json").read_text())["step"]
    assert 0 < step < 3000 and not (out / "results.json").exists()
    r = subprocess.run([*argv, "--resume", "--json"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res["metrics"]["train_steps"] == 3000 and res["config"]["seed"] == 3
    assert res["provenance"]["command"].endswith("--resume --json")


def test_provenance_records_the_commit_the_run_started_with(monkeypatch):
    import subprocess

    from mesaopt import rundir

    rundir._git_commit.cache_clear()
    first = rundir.start_stamp() and rundir._git_commit()

    def later_commit(*a, **k):  # a commit made in the checkout while the run was going
        return subprocess.CompletedProcess(a, 0, stdout="f" * 40 + "\n", stderr="")

    monkeypatch.setattr(rundir.subprocess, "run", later_commit)
    try:
        assert rundir.provenance("2026-11-29T00:00:00Z")["commit"] == first
    finally:
        rundir._git_commit.cache_clear()
