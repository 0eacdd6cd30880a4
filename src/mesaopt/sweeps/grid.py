"""Sweep specs and grids: parse ``--grid key=v1,v2``, read sweep YAML files, expand to config-hashed trials."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field

from mesaopt.config import StrictModel, validate
from mesaopt.errors import ConfigError
from mesaopt.io import load_yaml

TRIALS_DIR = "trials"
TABLE_FILE = "sweep.parquet"
SPEC_FILE = "sweep.yaml"
Engine = Literal["local", "ray"]


class SweepSpec(StrictModel):
    """A sweep: one experiment, a base config, a grid of overrides and the engine that runs the trials."""

    experiment: str = Field(..., description="registered experiment name (see `mesaopt list`)")
    config: str | None = Field(None, description="base YAML config file of the experiment")
    set: dict[str, Any] = Field(default_factory=dict, description="overrides applied to every trial")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="key -> list of values (cartesian)")
    quick: bool = Field(False, description="apply the experiment's --quick overrides to every trial")
    engine: Engine = Field("local", description="local (worker processes here) | ray")
    address: str | None = Field(None, description="ray cluster address (e.g. auto, ray://host:10001)")
    max_parallel: int | None = Field(None, ge=1, description="trials running at once (local default: cores)")
    cpus_per_trial: float = Field(1.0, gt=0.0, description="CPU cores per trial (torch threads; ray num_cpus)")
    out: str | None = Field(None, description="sweep folder (default runs/sweep-NAME-<hash>)")


@dataclass(frozen=True)
class Trial:
    """One grid point: its grid values, the fully resolved config (JSON-able) and its folder name."""

    params: dict[str, Any]
    config: dict[str, Any]
    hash: str
    name: str

    def dir(self, out: Path) -> Path:
        """The trial's run folder inside sweep folder ``out``."""
        return Path(out) / TRIALS_DIR / self.name


def parse_value(text: str) -> Any:
    """A grid value: YAML scalar/list parsing (``3`` -> int, ``1e-3`` -> float, ``true`` -> bool, else str)."""
    t = text.strip()
    if not t:
        raise ConfigError("--grid values must not be empty (write key=v1,v2,...)")
    try:
        v = yaml.safe_load(t)
    except yaml.YAMLError:
        return t
    if isinstance(v, str) and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+", t):
        v = float(t)  # YAML 1.1 reads 1e-3 as a string
    return v


def split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside [...] or {...} (so list values survive)."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def parse_grid(items: list[str] | None) -> dict[str, list[Any]]:
    """Turn ["lr=1e-3,1e-4", "seed=0,1"] into {"lr": [0.001, 0.0001], "seed": [0, 1]}; ConfigError if malformed."""
    grid: dict[str, list[Any]] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--grid expects key=v1,v2,..., got {item!r}")
        k, v = item.split("=", 1)
        k = k.strip()
        if not k or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.]*", k):
            raise ConfigError(f"--grid key must be a config field name like lr or train.lr, got {k!r} in {item!r}")
        if k in grid:
            raise ConfigError(f"--grid key {k!r} given twice; list all its values once: {k}=v1,v2")
        grid[k] = [parse_value(p) for p in split_top_level(v)]
    return grid


def check_grid(grid: dict[str, Any]) -> dict[str, list[Any]]:
    """Validate a grid mapping (every value a non-empty list without duplicates); scalars become 1-lists."""
    out: dict[str, list[Any]] = {}
    for k, vals in grid.items():
        if not isinstance(vals, list):
            vals = [vals]
        if not vals:
            raise ConfigError(f"grid key {k!r} has no values; give at least one")
        keys = [json.dumps(v, sort_keys=True, default=str) for v in vals]
        if len(set(keys)) != len(keys):
            raise ConfigError(f"grid key {k!r} lists a value twice: {vals}")
        out[str(k)] = list(vals)
    return out


def expand(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Cartesian product of the grid in the given key order: [{k1: a, k2: x}, {k1: a, k2: y}, ...]."""
    if not grid:
        return [{}]
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]


def config_hash(experiment: str, config: dict[str, Any]) -> str:
    """8 hex digits identifying (experiment, resolved config): same config -> same trial folder."""
    blob = json.dumps({"experiment": experiment, "config": config}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:8]


def _slug(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return re.sub(r"[^A-Za-z0-9._+-]", "_", s)


def trial_name(params: dict[str, Any], h: str, max_len: int = 80) -> str:
    """Folder name ``k1=v1,k2=v2-<hash>`` (unsafe characters replaced, long names shortened)."""
    label = ",".join(f"{_slug(k)}={_slug(v)}" for k, v in params.items())[:max_len]
    return f"{label}-{h}" if label else h


def load_spec(path: str | Path, **cli: Any) -> SweepSpec:
    """Read a sweep YAML file; CLI values (non-None) win, ``grid``/``set`` are merged key by key."""
    p = Path(path)
    data = load_yaml(p)
    if data.get("config") is not None:
        cfg = Path(str(data["config"]))
        data["config"] = str(cfg if cfg.is_absolute() else (p.parent / cfg))
    if isinstance(data.get("grid"), dict):
        data["grid"] = check_grid(data["grid"])
    for key in ("grid", "set"):
        if cli.get(key):
            base = data.get(key) or {}
            if not isinstance(base, dict):
                raise ConfigError(f"sweep file '{p}': {key} must be a mapping, got {type(base).__name__}")
            data[key] = {**base, **cli.pop(key)}
        else:
            cli.pop(key, None)
    data.update({k: v for k, v in cli.items() if v is not None and v is not False})
    return validate(SweepSpec, data, where=f"sweep file '{p}'")


def resolve_trials(spec: SweepSpec) -> list[Trial]:
    """Every grid point's validated config and folder name ``<k=v,...>-<hash>``; ConfigError on bad keys."""
    from mesaopt import experiments

    exp = experiments.get(spec.experiment)
    grid = check_grid(spec.grid)
    trials, seen = [], set()
    for params in expand(grid):
        overrides = {**spec.set, **params}
        cfg = experiments.make_config(exp.name, overrides, spec.config, spec.quick).model_dump(mode="json")
        h = config_hash(exp.name, cfg)
        if h in seen:
            raise ConfigError(f"grid points {params} and another give the same config; drop the duplicate values")
        seen.add(h)
        trials.append(Trial(params=params, config=cfg, hash=h, name=trial_name(params, h)))
    return trials


def default_out(spec: SweepSpec, trials: list[Trial]) -> Path:
    """runs/sweep-NAME-<hash of all trial hashes>: re-running the same sweep lands in the same folder."""
    h = hashlib.sha256(",".join(sorted(t.hash for t in trials)).encode()).hexdigest()[:8]
    return Path("runs") / f"sweep-{spec.experiment}-{h}"
