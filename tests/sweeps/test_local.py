"""The local engine end to end: worker processes, failures, a killed worker, resume, the table, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import _sweep_exp  # noqa: E402,F401  (registers sweep-test-exp)

from mesaopt.cli import main  # noqa: E402
from mesaopt.io import read_results  # noqa: E402
from mesaopt.sweeps import SweepSpec, read_table, run_sweep  # noqa: E402


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """One CLI sweep from a YAML file: x in {1, 2} x fail in {false, true} -> 2 ok, 2 failed trials."""
    d = tmp_path_factory.mktemp("sweep")
    f = d / "sweep.yaml"
    f.write_text("experiment: sweep-test-exp\nset: {seed: 3}\ngrid:\n  x: [1.0, 2.0]\n  fail: [false, true]\n"
                 "max_parallel: 2\n")
    out = d / "out"
    with pytest.raises(SystemExit) as e:  # exit 1: some trials failed
        main(["sweep", "-f", str(f), "--out", str(out), "--json"])
    return out, f, e.value.code


def test_table_schema_and_metrics(swept, capsys):
    out, _, code = swept
    assert code == 1
    df = read_table(out)
    assert list(df.columns) == ["x", "fail", "pid", "seed_sq", "y", "status", "ran", "wall_s", "error",
                                "config_hash", "trial"]
    assert len(df) == 4
    assert df["x"].dtype == "float64" and df["fail"].dtype == bool and df["y"].dtype == "float64"
    ok = df[df.status == "ok"].sort_values("x")
    assert ok["x"].tolist() == [1.0, 2.0] and ok["y"].tolist() == [5.0, 7.0]  # y = 2x + seed, seed=3
    assert (ok["seed_sq"] == 9.0).all() and ok["ran"].all() and (ok["wall_s"] >= 0).all()
    failed = df[df.status == "failed"]
    assert len(failed) == 2 and failed["y"].isna().all()
    assert failed["error"].str.contains("RuntimeError: boom at x=").all()
    for _, r in df.iterrows():
        d = out / r["trial"]
        assert d.name.endswith(r["config_hash"])
        if r["status"] == "ok":
            res = read_results(d)
            assert res["metrics"]["y"] == r["y"] and "note.txt" in res["artifacts"]
        else:
            assert "Traceback" in (d / "error.txt").read_text() and not (d / "results.json").exists()


def test_cli_json_lists_every_row(tmp_path, capsys):
    f = tmp_path / "s.yaml"
    f.write_text("experiment: sweep-test-exp\ngrid: {x: [4.0]}\n")
    main(["sweep", "-f", str(f), "--out", str(tmp_path / "o"), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert data["n_trials"] == 1 and data["ran"] == 1 and data["failed"] == 0
    assert data["rows"][0]["y"] == 8.0 and data["rows"][0]["status"] == "ok"


def test_resume_skips_finished_and_retries_failed(swept):
    out, f, _ = swept
    before = read_table(out).set_index("config_hash")
    mtimes = {h: (out / r["trial"] / "results.json").stat().st_mtime_ns
              for h, r in before.iterrows() if r["status"] == "ok"}
    spec = SweepSpec(experiment="sweep-test-exp", set={"seed": 3}, grid={"x": [1.0, 2.0], "fail": [False, True]},
                     max_parallel=2)
    res = run_sweep(spec, out=out, progress=False)
    assert (res.n_trials, res.skipped, res.ran, res.failed) == (4, 2, 2, 2)  # only the failed ones ran again
    after = res.table.set_index("config_hash")
    for h, mt in mtimes.items():
        assert (out / after.loc[h, "trial"] / "results.json").stat().st_mtime_ns == mt
        assert after.loc[h, "pid"] == before.loc[h, "pid"] and not after.loc[h, "ran"]
    # growing the grid runs only the new points
    spec2 = spec.model_copy(update={"grid": {"x": [1.0, 2.0, 3.0], "fail": [False]}})
    res2 = run_sweep(spec2, out=out, progress=False)
    assert (res2.n_trials, res2.skipped, res2.ran, res2.failed) == (3, 2, 1, 0)
    assert res2.table.set_index("x").loc[3.0, "y"] == 9.0


def test_killed_worker_is_recorded_and_others_finish(tmp_path):
    spec = SweepSpec(experiment="sweep-test-exp", grid={"kill": [True, False]}, max_parallel=2)
    res = run_sweep(spec, out=tmp_path, progress=False)
    df = res.table.set_index("kill")
    assert df.loc[True, "status"] == "failed" and "SIGKILL" in df.loc[True, "error"]
    assert df.loc[False, "status"] == "ok" and df.loc[False, "y"] == 2.0
    assert isinstance(pd.read_parquet(tmp_path / "sweep.parquet"), pd.DataFrame)


@pytest.mark.slow
def test_ctrl_c_keeps_finished_trials_and_rerun_completes(tmp_path):
    marker = tmp_path / "hold"
    marker.write_text("")
    out = tmp_path / "out"
    # SIGINT's default handler, explicitly: a test run started as a background job (`make test &`) inherits
    # SIGINT ignored, and Python keeps an inherited SIG_IGN
    code = (f"import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            f"sys.path.insert(0, {str(HERE)!r}); import _sweep_exp; from mesaopt.cli import main; "
            f"main(['sweep', 'sweep-test-exp', '--grid', 'hold_while=null,{marker}', '--max-parallel', '2', "
            f"'--out', {str(out)!r}])")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    while not list(out.glob("trials/hold_while=null-*/results.json")):
        assert time.monotonic() - t0 < 300 and proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=240)  # generous: CI machines can be heavily loaded
    assert proc.returncode == 130, err
    df = read_table(out)
    assert sorted(df["status"].tolist()) == ["not_run", "ok"]
    done = df[df.status == "ok"].iloc[0]
    pid = done["pid"]
    marker.unlink()
    res = run_sweep(SweepSpec(experiment="sweep-test-exp", grid={"hold_while": [None, str(marker)]}),
                    out=out, progress=False)
    assert (res.skipped, res.ran, res.failed) == (1, 1, 0)
    assert res.table.set_index("config_hash").loc[done["config_hash"], "pid"] == pid
