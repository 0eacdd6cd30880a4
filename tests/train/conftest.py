"""Trainer tests run tiny models: one intra-op thread avoids thread hand-off stalls on busy shared CPUs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

# pytest runs with --import-mode=importlib (test folders are not on sys.path): make the tiny test models
# in train_helpers.py importable by the test modules of this folder
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
