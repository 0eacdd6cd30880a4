"""Shared pytest fixtures: float64 helpers, a seeded generator, a temporary run folder."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(1)  # tiny ops: one thread avoids OpenMP spin-waits on a shared 2-core box


@pytest.fixture
def gen() -> torch.Generator:
    """A CPU generator seeded with 0."""
    return torch.Generator().manual_seed(0)
