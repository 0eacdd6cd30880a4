"""TrainConfig / TrainJob validation and the lr schedules against closed forms."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from mesaopt.config import build_config
from mesaopt.errors import ConfigError
from mesaopt.train import TrainConfig, TrainJob, lr_factor


def test_defaults_valid():
    cfg = TrainConfig()
    assert cfg.optimizer == "adamw" and cfg.objective == "query" and cfg.grad_clip is None
    assert cfg.torch_dtype.is_floating_point


@pytest.mark.parametrize("field,value", [
    ("lr", 0.0), ("lr", -1e-3), ("lr", float("nan")), ("lr", float("inf")), ("steps", 0), ("batch_size", 0),
    ("grad_clip", 0.0), ("grad_clip", -1.0), ("betas", (0.9, 1.0)), ("eps", 0.0), ("optimizer", "lion"),
    ("schedule", "cyclic"), ("objective", "all"), ("loss", "l1"), ("dtype", "int8"), ("min_lr_ratio", 1.5),
    ("nan_check_every", 0), ("log_every", 0), ("device", "not-a-device"), ("unknown_field", 1),
])
def test_bad_fields_rejected(field, value):
    with pytest.raises(ValidationError):
        TrainConfig(**{field: value})


def test_cross_field_rules():
    with pytest.raises(ValidationError, match="n_points must be > n_queries"):
        TrainConfig(n_points=1)
    assert TrainConfig(n_points=1, objective="prefix").n_points == 1
    with pytest.raises(ValidationError, match="warmup_steps"):
        TrainConfig(schedule="warmup_cosine")
    with pytest.raises(ValidationError, match="must be <= steps"):
        TrainConfig(steps=5, warmup_steps=6)
    with pytest.raises(ValidationError, match="momentum"):
        TrainConfig(momentum=0.9)


def test_build_config_one_line_error_names_field():
    with pytest.raises(ConfigError) as e:
        build_config(TrainJob, {"model": {"kind": "lsa"}}, overrides={"lr": "-1"})
    msg = str(e.value)
    assert "train.lr" in msg and "\n" not in msg
    job = build_config(TrainJob, {"model": {"kind": "lsa", "d": 3}}, overrides={"steps": "7", "train.lr": "0.5"})
    assert job.train.steps == 7 and job.train.lr == 0.5 and job.task == {"kind": "linear"}
    with pytest.raises(ConfigError, match="kind"):
        build_config(TrainJob, {"model": {"d": 3}})


def _ref_factor(schedule, t, total, warmup, m):
    """Independent spelling of the schedules (degrees of freedom written out explicitly)."""
    if t < warmup:
        return (t + 1) / warmup
    frac = (t - warmup) / (total - warmup)
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return m + (1 - m) * (math.cos(math.pi * frac) + 1) / 2
    if schedule == "linear":
        return 1 - (1 - m) * frac
    raise AssertionError


@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear"])
@pytest.mark.parametrize("warmup,m", [(0, 0.0), (7, 0.1)])
def test_schedules_closed_form(schedule, warmup, m):
    total = 50
    for t in range(total):
        assert lr_factor(schedule, t, total, warmup, m) == pytest.approx(_ref_factor(schedule, t, total, warmup, m),
                                                                         abs=1e-12)
    assert lr_factor("warmup_cosine", 3, 20, 4, 0.0) == pytest.approx(1.0)  # last warmup step = peak
    assert lr_factor("cosine", 0, 10, 0, 0.2) == 1.0
    assert lr_factor("cosine", 5, 10, 0, 0.2) == pytest.approx(0.6)  # half way: (1 + m) / 2
    assert lr_factor("inverse_sqrt", 15, 100, 4, 0.0) == pytest.approx(0.5)  # sqrt(4 / 16)


def test_unknown_schedule_in_factor():
    with pytest.raises(ConfigError, match="schedule"):
        lr_factor("cyclic", 0, 10)
