"""CLI start-up cost: ``mesaopt --help`` and a bad-input error path, as ratios to ``python -c pass`` (same run).

Each command is a fresh interpreter (what a user pays per call); the commands are run round-robin so load
drift hits all alike, and the median wall time of each is reported along with its ratio to the bare
interpreter. ``import torch`` is measured too: the cost the lazy imports keep off these paths.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import mesaopt

_CLI = "from mesaopt.cli import main; main()"  # what the `mesaopt` console script runs
COMMANDS = {
    "python_pass": ["-c", "pass"],
    "help": ["-c", _CLI, "--help"],
    "version": ["-c", _CLI, "--version"],
    "error_unknown_experiment": ["-c", _CLI, "run", "no-such-experiment"],
    "error_empty_out": ["-c", _CLI, "run", "vonoswald-gd", "--out", ""],
    "import_torch": ["-c", "import torch"],
}


def _once(args: list[str], env: dict) -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=False)
    return time.perf_counter() - t


def run(quick: bool = False, out=None, peaks: dict | None = None, plot: bool = False) -> dict:
    """Median seconds per command over ``repeats`` interleaved rounds and the ratio to ``python -c pass``."""
    repeats = 3 if quick else 9
    src = str(Path(mesaopt.__file__).resolve().parents[1])  # measure the mesaopt this process imports
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for args in COMMANDS.values():  # warm the page cache and .pyc files
        _once(args, env)
    times: dict[str, list[float]] = {k: [] for k in COMMANDS}
    for _ in range(repeats):
        for name, args in COMMANDS.items():
            times[name].append(_once(args, env))
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["python_pass"]
    return {"benchmark": "startup", "repeats": repeats,
            "median_s": {k: round(v, 4) for k, v in med.items()},
            "ratio_to_python": {k: round(v / base, 2) for k, v in med.items() if k != "python_pass"},
            "help_s_over_python": round(med["help"] - base, 4)}
