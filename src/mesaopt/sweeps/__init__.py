"""Sweeps: run one experiment over a grid of configs, on this machine (``local``) or on Ray (``ray``).

``run_sweep(SweepSpec(experiment=..., grid={...}))`` runs each grid point as its own experiment run in
``OUT/trials/<k=v,...>-<config hash>/`` (skipped when its results.json is complete) and writes the table
``OUT/sweep.parquet`` (one row per trial: grid values, every metric, status, wall_s, trial folder).
Names are imported lazily so that trial workers (``python -m mesaopt.sweeps.worker``) start fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LocalEngine": "engines", "RayEngine": "engines", "make_engine": "engines",
    "SweepSpec": "grid", "Trial": "grid", "expand": "grid", "load_spec": "grid", "parse_grid": "grid",
    "resolve_trials": "grid", "SweepResult": "runner", "run_sweep": "runner", "build_table": "table",
    "read_table": "table", "summary": "table", "write_table": "table",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"mesaopt.sweeps.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'mesaopt.sweeps' has no attribute {name!r}")
