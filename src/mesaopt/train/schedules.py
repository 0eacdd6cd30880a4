"""Learning-rate schedules as pure functions of the 0-based step: ``lr_factor(...) -> multiplier of the peak lr``."""

from __future__ import annotations

import math

from mesaopt.errors import ConfigError

SCHEDULES = ("constant", "cosine", "linear", "warmup_cosine", "warmup_linear", "inverse_sqrt",
             "cosine_after_curriculum")


def lr_factor(schedule: str, t: int, total: int, warmup: int = 0, min_ratio: float = 0.0,
              decay_start: int | None = None, decay_steps: int | None = None) -> float:
    """Multiplier of the peak lr for the update with 0-based index ``t`` of ``total`` updates.

    Warmup (any schedule): ``(t + 1) / warmup`` for ``t < warmup``. After it, with
    ``p = (t - warmup) / max(1, total - warmup)`` in [0, 1):
    constant -> 1; cosine / warmup_cosine -> ``m + (1 - m) (1 + cos(pi p)) / 2``;
    linear / warmup_linear -> ``m + (1 - m) (1 - p)``; inverse_sqrt -> ``sqrt(warmup / (t + 1))``
    (floored at ``m``), where ``m = min_ratio``. cosine_after_curriculum -> 1 until the curriculum is complete,
    then ``m + (1 - m) (1 + cos(pi q)) / 2`` with ``q = min(1, (t + 1 - decay_start) / decay_steps)``, where
    ``decay_start`` is the 1-based first step on the full task (None = not reached yet).
    """
    if t < warmup:
        return (t + 1) / warmup
    if schedule == "constant":
        return 1.0
    if schedule == "cosine_after_curriculum":
        if decay_start is None or t + 1 < decay_start:
            return 1.0
        q = min(1.0, (t + 1 - decay_start) / max(1, decay_steps or 1))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * q))
    p = min(1.0, (t - warmup) / max(1, total - warmup))
    if schedule in ("cosine", "warmup_cosine"):
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))
    if schedule in ("linear", "warmup_linear"):
        return min_ratio + (1.0 - min_ratio) * (1.0 - p)
    if schedule == "inverse_sqrt":
        return max(min_ratio, math.sqrt(max(warmup, 1) / (t + 1)))
    raise ConfigError(f"train.schedule must be one of {', '.join(SCHEDULES)}; got {schedule!r}")
