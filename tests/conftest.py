"""Shared pytest fixtures: float64 helpers, a seeded generator, a temporary run folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
# pytest runs with --import-mode=importlib (test folders are not on sys.path): make the shared helper modules
# of this folder (cli_helpers.py) importable by every test module
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
torch.set_num_threads(1)  # tiny ops: one thread avoids OpenMP spin-waits on a shared 2-core box


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test runs with one intra-op thread (tiny models: no OpenMP spin-waits on a shared 2-core machine),
    restored afterwards even if the test changes it."""
    from mesaopt.runtime import threads

    with threads(1):
        yield


@pytest.fixture
def gen() -> torch.Generator:
    """A CPU generator seeded with 0."""
    return torch.Generator().manual_seed(0)
