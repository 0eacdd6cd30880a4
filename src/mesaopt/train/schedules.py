"""Learning-rate schedules as pure functions of the 0-based step: ``lr_factor(...) -> multiplier of the peak lr``."""

from __future__ import annotations

import math

from mesaopt.errors import ConfigError


def lr_factor(schedule: str, t: int, total: int, warmup: int = 0, min_ratio: float = 0.0) -> float:
    """Multiplier of the peak lr for the update with 0-based index ``t`` of ``total`` updates.

    Warmup (any schedule): ``(t + 1) / warmup`` for ``t < warmup``. After it, with
    ``p = (t - warmup) / max(1, total - warmup)`` in [0, 1):
    constant -> 1; cosine / warmup_cosine -> ``m + (1 - m) (1 + cos(pi p)) / 2``;
    linear / warmup_linear -> ``m + (1 - m) (1 - p)``; inverse_sqrt -> ``sqrt(warmup / (t + 1))``
    (floored at ``m``), where ``m = min_ratio``.
    """
    if t < warmup:
        return (t + 1) / warmup
    if schedule == "constant":
        return 1.0
    p = min(1.0, (t - warmup) / max(1, total - warmup))
    if schedule in ("cosine", "warmup_cosine"):
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))
    if schedule in ("linear", "warmup_linear"):
        return min_ratio + (1.0 - min_ratio) * (1.0 - p)
    if schedule == "inverse_sqrt":
        return max(min_ratio, math.sqrt(max(warmup, 1) / (t + 1)))
    raise ConfigError(f"train.schedule must be one of constant, cosine, linear, warmup_cosine, warmup_linear, "
                      f"inverse_sqrt; got {schedule!r}")
