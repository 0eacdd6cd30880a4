from __future__ import annotations

import pytest
from pydantic import Field

from mesaopt.config import StrictModel, build_config, parse_assignments, resolve_key
from mesaopt.errors import ConfigError


class Inner(StrictModel):
    lr: float = Field(1e-3, gt=0)
    steps: int = Field(10, ge=1)


class Outer(StrictModel):
    d: int = Field(5, ge=1)
    mode: str = "a"
    train: Inner = Inner()


def test_flat_key_resolves_to_unique_nested_field():
    assert resolve_key(Outer, "lr") == "train.lr"
    assert resolve_key(Outer, "train.steps") == "train.steps"
    with pytest.raises(ConfigError, match="unknown key 'bogus'; allowed: d, mode, train.lr, train.steps"):
        resolve_key(Outer, "bogus")


def test_layers_and_overrides_order():
    cfg = build_config(Outer, {"d": 3, "train": {"lr": 0.1}}, {"d": 4}, overrides={"steps": "7", "lr": "1e-2"})
    assert (cfg.d, cfg.train.lr, cfg.train.steps) == (4, 0.01, 7)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"d": "-1"}, "d: Input should be greater than or equal to 1"),
        ({"d": "abc"}, "d: Input should be a valid integer"),
        ({"lr": "nan"}, "train.lr: Input should be a finite number"),
        ({"lr": "inf"}, "train.lr: Input should be a finite number"),
        ({"steps": "0"}, "train.steps: Input should be greater than or equal to 1"),
    ],
)
def test_bad_values_give_one_line_naming_the_field(overrides, fragment):
    with pytest.raises(ConfigError) as ei:
        build_config(Outer, overrides=overrides)
    msg = str(ei.value)
    assert "\n" not in msg and fragment in msg


def test_unknown_field_in_layer():
    with pytest.raises(ConfigError, match="train.momentum: unknown field"):
        build_config(Outer, {"train": {"momentum": 0.9}})


def test_parse_assignments():
    assert parse_assignments(["a=1", "b.c=[1, 2]", "e=x=y"]) == {"a": "1", "b.c": [1, 2], "e": "x=y"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_assignments(["novalue"])
    with pytest.raises(ConfigError, match="non-empty key"):
        parse_assignments(["=3"])


class WithDefaultFactory(StrictModel):
    train: Inner = Field(default_factory=lambda: Inner(lr=0.5, steps=99))


def test_partial_nested_override_keeps_the_fields_own_defaults():
    cfg = build_config(WithDefaultFactory, overrides={"lr": "0.1"})
    assert (cfg.train.lr, cfg.train.steps) == (0.1, 99)
    assert WithDefaultFactory(train={"steps": 3}).train.lr == 0.5
    assert WithDefaultFactory().train.steps == 99
