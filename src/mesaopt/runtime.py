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


CPUINFO = "/proc/cpuinfo"
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bf16 dot products natively (AVX512-BF16 or AMX-BF16), so bf16 autocast is fast.

    Without them (e.g. AVX2-only CPUs) torch emulates bf16 matmuls, measured 35x slower than fp32. ``cpuinfo``:
    the text of a /proc/cpuinfo to read instead of this machine's (tests). On this machine torch's own probe is
    asked first; the cpuinfo flags are the fallback (and the only source for ``cpuinfo=``).
    """
    if cpuinfo is None:
        import torch

        probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
        amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
        if callable(probe) and probe():
            return True
        if callable(amx) and amx():
            return True
        try:
            with open(CPUINFO, encoding="utf-8") as f:
                cpuinfo = f.read()
        except OSError:
            return False
    flags = {w for line in cpuinfo.splitlines() if line.startswith("flags") for w in line.split(":", 1)[-1].split()}
    return any(f in flags for f in NATIVE_BF16_FLAGS)


def resolve_amp(amp: str | None, device: str = "cpu") -> str | None:
    """The autocast mode to use: ``"auto"`` -> ``"bf16"`` on a CPU with native bf16 (``native_bf16()``), else None
    (fp32); ``"bf16"`` and None are returned as given. Non-CPU devices: ``"auto"`` -> None (not measured here)."""
    if amp != "auto":
        return amp
    return "bf16" if str(device).startswith("cpu") and native_bf16() else None
