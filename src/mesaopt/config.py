"""Config plumbing shared by experiments, training and sweeps: overrides, YAML, one-line errors."""

from __future__ import annotations

import math
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from mesaopt.errors import ConfigError


class StrictModel(BaseModel):
    """Base of every config: unknown fields and NaN/inf are errors, assignments are validated.

    A nested sub-config given as a partial mapping is completed from the field's own default, so that
    ``--set train.lr=1e-3`` keeps every other field of the experiment's default ``train`` config
    (not the sub-config class's bare defaults).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _complete_nested_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, field in cls.model_fields.items():
            value = out.get(name)
            if isinstance(value, dict):
                default = field.get_default(call_default_factory=True)
                if isinstance(default, BaseModel):
                    out[name] = deep_merge(default.model_dump(), value)
        return out


def format_validation_error(err: ValidationError, where: str = "config") -> str:
    """One line naming every bad field, its problem and the offending value."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(root)"
        msg = e["msg"].replace("Value error, ", "")
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif e["type"] == "literal_error" and "expected" in e.get("ctx", {}):
            msg = f"must be one of {e['ctx']['expected']}"
        inp = e.get("input")
        got = "" if isinstance(inp, dict) or e["type"] == "missing" else f" (got {inp!r})"
        parts.append(f"{loc}: {msg}{got}")
    return f"invalid {where}: " + "; ".join(parts)


def validate(cls: type[BaseModel], data: dict, where: str = "config") -> BaseModel:
    """Build ``cls(**data)``; a ValidationError becomes a one-line ConfigError."""
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, where)) from None


def parse_value(text: str) -> Any:
    """A --set value: YAML lists/mappings/null parsed, everything else left as a string for pydantic."""
    t = text.strip()
    if t[:1] in "[{" or t.lower() in ("null", "none", "~"):
        try:
            return yaml.safe_load(t)
        except yaml.YAMLError:
            raise ConfigError(f"cannot parse value {text!r}: not valid YAML") from None
    return text


def parse_assignments(items: list[str] | None) -> dict[str, Any]:
    """Turn ["a.b=1", "lr=3e-4"] into {"a.b": "1", "lr": "3e-4"}; ConfigError for a missing '='."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        k = k.strip()
        if not k:
            raise ConfigError(f"--set expects key=value with a non-empty key, got {item!r}")
        out[k] = parse_value(v)
    return out


def leaf_paths(cls: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted field path of a (nested) pydantic model class."""
    paths = []
    for name, f in cls.model_fields.items():
        ann = f.annotation
        path = f"{prefix}{name}"
        inner = [a for a in get_args(ann) if a is not type(None)]
        if len(inner) == 1 and len(get_args(ann)) == 2 and isinstance(inner[0], type) \
                and issubclass(inner[0], BaseModel):  # Optional[Model]: the field itself and its leaves
            paths.append(path)
            paths.extend(leaf_paths(inner[0], path + "."))
        elif isinstance(ann, type) and issubclass(ann, BaseModel):
            paths.extend(leaf_paths(ann, path + "."))
        else:
            paths.append(path)
    return paths


def resolve_key(cls: type[BaseModel], key: str) -> str:
    """Map a --set key to a dotted field path: exact, or a unique leaf name (``lr`` -> ``train.lr``)."""
    paths = leaf_paths(cls)
    if key in paths:
        return key
    matches = [p for p in paths if p.split(".")[-1] == key or p.endswith("." + key)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ConfigError(f"key {key!r} is ambiguous; use one of {matches}")
    near = [p for p in paths if p.split(".")[-1] == key.split(".")[-1]]  # e.g. train.seed -> seed
    hint = f" (did you mean {' or '.join(near)}?)" if near else ""
    raise ConfigError(f"unknown key {key!r}{hint}; allowed: {', '.join(paths)}")


def set_dotted(data: dict, path: str, value: Any) -> None:
    """Assign ``value`` at dotted ``path`` inside nested dicts, creating levels as needed."""
    parts = path.split(".")
    cur = data
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


def deep_merge(base: dict, extra: dict) -> dict:
    """Recursively merge ``extra`` into a copy of ``base`` (mappings merged, other values replaced)."""
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def build_config(cls: type[BaseModel], *layers: dict, overrides: dict[str, Any] | None = None,
                 where: str = "config") -> BaseModel:
    """Validate ``cls`` from nested dict layers (later wins) and flat/dotted ``overrides`` (win last)."""
    data: dict = {}
    for layer in layers:
        data = deep_merge(data, layer or {})
    for k, v in (overrides or {}).items():
        set_dotted(data, resolve_key(cls, k), v)
    return validate(cls, data, where)


def check_int(name: str, value: Any, minimum: int) -> int:
    """Return ``value`` as int or raise ConfigError unless it is an integer >= minimum."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_float(name: str, value: Any, minimum: float = 0.0, strict: bool = False) -> float:
    """Return ``value`` as float or raise ConfigError unless it is finite and >= (or > if strict) minimum."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
    if ok:
        ok = float(value) > minimum if strict else float(value) >= minimum
    if not ok:
        op = ">" if strict else ">="
        raise ConfigError(f"{name} must be a finite number {op} {minimum}, got {value!r}")
    return float(value)
