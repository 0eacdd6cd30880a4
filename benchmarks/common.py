"""Shared helpers: interleaved timing, matmul peaks, FLOP counting, machine info."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from mesaopt.runtime import native_bf16

RESULTS_DIR = Path(__file__).resolve().parent / "results"
"""Stored results the docs cite (copied here by hand with their commit); runs write to ``DEFAULT_OUT``."""
DEFAULT_OUT = Path("runs") / "bench"


def machine() -> dict:
    """Core count, torch threads, load average and CPU capability (numbers are only comparable within a run)."""
    try:
        load = os.getloadavg()
    except OSError:  # pragma: no cover - not on every platform
        load = (float("nan"),) * 3
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:  # pragma: no cover
        pass
    return {"cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "loadavg_1m": round(load[0], 2),
            "cpu": model or platform.processor(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "native_bf16": native_bf16(), "torch": torch.__version__}


def time_once(fn: Callable[[], object]) -> float:
    """Wall seconds of one call."""
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def compare(fns: dict[str, Callable[[], object]], repeats: int = 3, warmup: int = 1,
            min_time: float = 0.0) -> dict[str, float]:
    """Best-of-``repeats`` seconds per call for each fn, measured round-robin so load drifts hit all alike.

    Each repeat calls a function ``k`` times (k chosen so one repeat lasts >= ``min_time``) and records the mean.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    reps = {}
    for name, fn in fns.items():
        t = time_once(fn)
        reps[name] = max(1, int(min_time / max(t, 1e-9))) if min_time > 0 else 1
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            k = reps[name]
            t = time.perf_counter()
            for _ in range(k):
                fn()
            times[name].append((time.perf_counter() - t) / k)
    return {k: min(v) for k, v in times.items()}


def median(xs: list[float]) -> float:
    """Median of a non-empty list."""
    return statistics.median(xs)


def matmul_peaks(n: int = 1024, repeats: int = 5, dtypes: tuple[str, ...] = ("float32", "bfloat16"),
                 budget_s: float = 20.0) -> dict[str, float]:
    """Measured matmul GFLOP/s of an n x n x n product per dtype (best of ``repeats``, interleaved).

    A dtype too slow to run ``repeats`` products of size n within its share of ``budget_s`` (e.g. bf16 on a CPU
    without native bf16 dot products) is measured at a smaller size, reported as ``<dtype>_n``.
    """
    g = torch.Generator().manual_seed(0)
    fns, out = {}, {}
    for name in dtypes:
        dt = getattr(torch, name)
        m0 = min(n, max(128, n // 4))
        a, b = torch.randn(m0, m0, generator=g).to(dt), torch.randn(m0, m0, generator=g).to(dt)
        torch.mm(a, b)
        est = min(time_once(lambda a=a, b=b: torch.mm(a, b)) for _ in range(3)) * (n / m0) ** 3
        share = budget_s / len(dtypes) / (repeats + 1)
        m = n if est <= share else max(m0, int(n * (share / est) ** (1 / 3)))
        a, b = torch.randn(m, m, generator=g).to(dt), torch.randn(m, m, generator=g).to(dt)
        fns[name] = lambda a=a, b=b: torch.mm(a, b)
        out[f"{name}_n"] = m
    secs = compare(fns, repeats=repeats, warmup=1)
    for name, s in secs.items():
        m = out[f"{name}_n"]
        out[f"{name}_gflops"] = round(2 * m**3 / s / 1e9, 2)
    return out


def count_flops(fn: Callable[[], object]) -> int:
    """Matmul FLOPs of one call (forward and any backward inside ``fn``) by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        fn()
    return int(fc.get_total_flops())


def out_dir(path: str | Path | None) -> Path:
    """The results folder (created): ``path`` or ``runs/bench`` under the current directory."""
    p = Path(path) if path is not None else DEFAULT_OUT
    p.mkdir(parents=True, exist_ok=True)
    return p
