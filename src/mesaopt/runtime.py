"""Process-level torch settings scoped to a block: ``threads(n)``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def threads(n: int | None) -> Iterator[int]:
    """Inside the block torch uses ``n`` intra-op CPU threads (None: leave as is); restored on exit.

    Yields the number of threads in use. One thread is often fastest for the tiny models here (no OpenMP
    spin-waiting on small matmuls). torch is imported here, not at module import (the CLI's start-up path).
    """
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
