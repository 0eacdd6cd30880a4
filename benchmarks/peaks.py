"""Measured matmul peaks (float32 and bfloat16 n x n products) of this machine, in GFLOP/s."""

from __future__ import annotations

from benchmarks.common import matmul_peaks


def run(quick: bool = False, out=None, peaks: dict | None = None, plot: bool = False) -> dict:
    """GFLOP/s of an n x n x n matmul per dtype (n=1024; 256 in quick mode); bf16/fp32 ratio."""
    p = peaks if peaks is not None else matmul_peaks(n=256 if quick else 1024, repeats=2 if quick else 5,
                                                  budget_s=1.0 if quick else 20.0)
    return {"benchmark": "peaks", **p, "bf16_over_fp32": round(p["bfloat16_gflops"] / p["float32_gflops"], 3)}
