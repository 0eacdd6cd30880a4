"""A tiny experiment for sweep tests: metrics derived from the config; can fail, crash, or wait on a file."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from pydantic import Field

from mesaopt.experiments import ExperimentConfig, RunContext, register


class SweepTestConfig(ExperimentConfig):
    """x and seed define the metrics; fail/kill/hold_while make the trial misbehave on purpose."""

    x: float = Field(1.0, description="input")
    fail: bool = Field(False, description="raise RuntimeError")
    kill: bool = Field(False, description="SIGKILL the worker process")
    hold_while: str | None = Field(None, description="sleep while this file exists (max 600 s)")


@register("sweep-test-exp", "test-only experiment for the sweep engine", config=SweepTestConfig,
          quick={"x": 100.0})
def run(cfg: SweepTestConfig, ctx: RunContext) -> dict[str, float]:
    """Metrics y = 2x + seed and seed_sq = seed^2; writes an artifact."""
    if cfg.fail:
        raise RuntimeError(f"boom at x={cfg.x}")
    if cfg.kill:
        os.kill(os.getpid(), signal.SIGKILL)
    if cfg.hold_while:
        t0 = time.monotonic()
        while Path(cfg.hold_while).exists() and time.monotonic() - t0 < 600:
            time.sleep(0.05)
    ctx.path("note.txt").write_text(f"pid {os.getpid()}\n")
    return {"y": 2 * cfg.x + cfg.seed, "seed_sq": float(cfg.seed**2), "pid": float(os.getpid())}
