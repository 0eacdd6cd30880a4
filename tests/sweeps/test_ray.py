"""The Ray engine on a tiny local Ray instance: trials run as Ray tasks; a re-run runs none."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import _sweep_exp  # noqa: E402,F401  (registers sweep-test-exp)

from mesaopt.sweeps import SweepSpec, run_sweep  # noqa: E402

ray = pytest.importorskip("ray")


@pytest.mark.slow
def test_ray_engine_runs_trials_records_failure_and_resumes(tmp_path):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        spec = SweepSpec(experiment="sweep-test-exp", grid={"seed": [0, 1, 2], "fail": [False]}, engine="ray")
        res = run_sweep(spec, out=tmp_path, progress=False)
        assert (res.n_trials, res.ran, res.skipped, res.failed) == (3, 3, 0, 0)
        df = res.table.sort_values("seed")
        assert df["y"].tolist() == [2.0, 3.0, 4.0] and (df["status"] == "ok").all()
        again = run_sweep(spec, out=tmp_path, progress=False)
        assert (again.ran, again.skipped) == (0, 3)
        bad = run_sweep(spec.model_copy(update={"grid": {"seed": [0], "fail": [False, True]}}), out=tmp_path,
                        progress=False)
        assert (bad.ran, bad.skipped, bad.failed) == (1, 1, 1)
        row = bad.table.set_index("fail").loc[True]
        assert row["status"] == "failed" and "boom" in row["error"]
        assert (tmp_path / row["trial"] / "error.txt").is_file()
        assert ray.is_initialized()  # the engine leaves a Ray session it did not start alone
    finally:
        ray.shutdown()
