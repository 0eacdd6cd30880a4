"""`mesaopt sweep` bad input: one line on stderr and exit code 2, before any trial starts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import _sweep_exp  # noqa: E402,F401  (registers sweep-test-exp)

from mesaopt.cli import main  # noqa: E402


def _run(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    cap = capsys.readouterr()
    return e.value.code, cap.out, cap.err


@pytest.mark.parametrize("args,needle", [
    (["sweep", "sweep-test-exp", "--grid", "seed"], "--grid expects key=v1,v2"),
    (["sweep", "sweep-test-exp", "--grid", "seed=0,,1"], "must not be empty"),
    (["sweep", "sweep-test-exp", "--grid", "nope=1,2"], "unknown key 'nope'"),
    (["sweep", "sweep-test-exp", "--grid", "seed=0,-1"], "seed"),
    (["sweep", "sweep-test-exp", "--engine", "slurm"], "engine"),
    (["sweep", "sweep-test-exp", "--address", "auto"], "--address is only used with --engine ray"),
    (["sweep", "no-such-experiment", "--grid", "seed=0"], "unknown experiment"),
    (["sweep", "--grid", "seed=0"], "needs an experiment NAME"),
    (["sweep", "sweep-test-exp", "--max-parallel", "zero"], "max-parallel"),
    (["sweep", "-f", "/nonexistent/sweep.yaml"], "does not exist"),
])
def test_bad_input_is_one_line_exit_2(args, needle, capsys, tmp_path):
    code, out, err = _run(args + ["--out", str(tmp_path / "o")], capsys)
    assert code == 2
    assert out == ""
    assert err.startswith("error:") and needle in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "trials").exists()


def test_missing_ray_is_a_config_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    code, _, err = _run(["sweep", "sweep-test-exp", "--grid", "seed=0", "--engine", "ray", "--out",
                         str(tmp_path)], capsys)
    assert code == 2 and "pip install 'mesaopt[ray]'" in err


def test_trial_provenance_names_the_sweep_command(capsys, tmp_path):
    import json

    from mesaopt import rundir

    out = tmp_path / "sw"
    try:
        main(["sweep", "sweep-test-exp", "--grid", "seed=0,1", "--max-parallel", "1", "--out", str(out)])
    except SystemExit as e:
        assert e.code in (0, None)
    finally:
        rundir.set_command(None)
    capsys.readouterr()
    for f in sorted(out.glob("trials/*/results.json")):
        cmd = json.loads(f.read_text())["provenance"]["command"]
        assert cmd == f"mesaopt sweep sweep-test-exp --grid seed=0,1 --max-parallel 1 --out {out} (trial " \
                      f"{f.parent.name})"
    assert len(list(out.glob("trials/*/results.json"))) == 2
