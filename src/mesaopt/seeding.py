"""Explicit, stable seed derivation: one master seed, named sub-streams (train, eval, pool, ...)."""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *names: str | int) -> int:
    """A 63-bit seed determined by ``seed`` and the stream ``names`` (stable across runs and machines)."""
    h = hashlib.sha256(repr((int(seed),) + tuple(names)).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def generator(seed: int, *names: str | int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch.Generator on ``device`` seeded with ``derive_seed(seed, *names)``."""
    return torch.Generator(device=device).manual_seed(derive_seed(seed, *names))
