"""The newcomer's path: bad --out, `mesaopt config`, --version, -h, list --json, fast start-up, file modes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cli_helpers import run_cli as _cli

SRC = str(Path(__file__).resolve().parents[1] / "src")




@pytest.fixture
def paths(tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "job.yaml").write_text(yaml.safe_dump({"model": {"kind": "lsa", "d": 2}, "task": {"kind": "linear",
                                                                                                   "d": 2}}))
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    yield {"afile": str(tmp_path / "afile"), "job": str(tmp_path / "job.yaml"), "ro": str(ro / "sub")}
    ro.chmod(0o755)


BAD_OUT = [
    (["run", "vonoswald-gd", "--out", "/proc/x"], "--out '/proc/x' cannot be created or written"),
    (["run", "vonoswald-gd", "--out", ""], "--out is an empty string"),
    (["run", "vonoswald-gd", "--out", "{afile}"], "exists and is not a directory"),
    (["run", "vonoswald-gd", "--out", "{afile}/sub"], "cannot be created or written"),
    (["train", "-c", "{job}", "--out", "/proc/x"], "--out '/proc/x' cannot be created or written"),
    (["train", "-c", "{job}", "--out", ""], "--out is an empty string"),
    (["train", "-c", "{job}", "--out", "{afile}"], "exists and is not a directory"),
    (["train", "--resume", ""], "--resume is an empty string"),
    (["sweep", "vonoswald-gd", "--grid", "seed=0,1", "--out", "/proc/x"], "cannot be created or written"),
    (["sweep", "vonoswald-gd", "--grid", "seed=0,1", "--out", ""], "--out is an empty string"),
    (["sweep", "vonoswald-gd", "--grid", "seed=0,1", "--out", "{afile}"], "exists and is not a directory"),
    (["config", "no-such-experiment"], "unknown experiment 'no-such-experiment'"),
    (["list", "--bogus"], "No such option"),
]


@pytest.mark.parametrize("argv, fragment", BAD_OUT, ids=[" ".join(a)[:60] for a, _ in BAD_OUT])
def test_bad_out_exit_2_one_line(argv, fragment, paths, capsys):
    code, out, err = _cli([a.format(**paths) for a in argv], capsys)
    assert code == 2 and out == ""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert 1 <= len(lines) <= 3 and lines[0].startswith("error:") and "Traceback" not in err
    assert fragment in " ".join(err.split()), err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_parent(paths, capsys):
    code, out, err = _cli(["run", "vonoswald-gd", "--out", paths["ro"]], capsys)
    assert code == 2 and "Permission denied" in err and "Traceback" not in err


def test_config_lists_every_field_with_type_default_description(capsys):
    code, out, _ = _cli(["config", "vonoswald-gd"], capsys)
    assert code == 0
    for frag in ("train.lr", "train.batch_size", "n_context", "seed", "master seed", "peak learning rate", "float"):
        assert frag in out, frag


@pytest.mark.parametrize("name", ["vonoswald-gd", "garg-curves", "svm-implicit-bias", "ebt-system2"])
def test_config_yaml_is_ready_to_edit(name, tmp_path, capsys):
    from mesaopt.experiments import make_config

    code, out, _ = _cli(["config", name, "--yaml"], capsys)
    assert code == 0 and out.startswith("# config of")
    p = tmp_path / "c.yaml"
    p.write_text(out)
    assert yaml.safe_load(out)["experiment"] == name
    assert make_config(name, config_path=p) == make_config(name)  # loading it back gives the defaults
    code, quick, _ = _cli(["config", name, "--yaml", "--quick"], capsys)
    p.write_text(quick)
    assert make_config(name, config_path=p) == make_config(name, quick=True)


def test_version_and_short_help(capsys):
    import mesaopt

    code, out, _ = _cli(["--version"], capsys)
    assert code == 0 and out.strip() == f"mesaopt {mesaopt.__version__}"
    code, out, _ = _cli(["-h"], capsys)
    assert code == 0 and "Usage" in out and "config" in out
    code, out, _ = _cli(["run", "-h"], capsys)
    assert code == 0 and "--overwrite" in out


def test_list_json(capsys):
    code, out, _ = _cli(["list", "--json"], capsys)
    rows = json.loads(out)
    assert code == 0 and "vonoswald-gd" in [r["name"] for r in rows]
    assert all(r["description"] for r in rows)


@pytest.mark.parametrize("argv", [["--help"], ["run", "nope"], ["run", "vonoswald-gd", "--out", ""], ["--version"]])
def test_help_and_error_paths_do_not_import_torch(argv):
    code = ("import sys; from mesaopt.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'matplotlib', 'cvxpy', 'ray', 'pandas') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": SRC})
    assert "HEAVY []" in r.stdout, (r.stdout[-500:], r.stderr[-500:])


@pytest.mark.parametrize("umask, file_mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_respect_umask(umask, file_mode, tmp_path):
    from mesaopt.io import atomic_write_json

    old = os.umask(umask)
    try:
        p = atomic_write_json(tmp_path / "sub" / "x.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == file_mode
    assert stat.S_IMODE(p.parent.stat().st_mode) == 0o777 & ~umask
