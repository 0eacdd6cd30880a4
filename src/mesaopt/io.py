"""Atomic writes (temp file + rename), the results.json contract (``Results``) and safe YAML loading.

The run-folder layout lives here so every layer that writes a run (``experiments``, ``train.job``) shares it
without importing ``experiments``: ``config.yaml`` (``CONFIG_FILE``), ``results.json`` (``RESULTS_FILE``, the
``Results`` object) and the list of artifacts (``list_artifacts``).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mesaopt.errors import CheckpointError, ConfigError

RESULTS_FILE = "results.json"
RESULTS_KEYS = ("experiment", "version", "seed", "config", "metrics", "wall_s", "artifacts")
CONFIG_FILE = "config.yaml"


def _umask() -> int:
    """The process umask (read from /proc where possible: setting it to probe is not thread-safe)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a temp file in the same folder, fsync, then rename.

    The file gets the mode a plain ``open(path, "w")`` would give (0o666 & ~umask, e.g. 0644), not mkstemp's 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, set | tuple):
        return list(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def _finite_or_none(obj: Any) -> Any:
    """Replace NaN/inf floats with None so the file stays strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite_or_none(v) for v in obj]
    return obj


def to_json(obj: Any, indent: int | None = 2) -> str:
    """Serialise ``obj`` to strict JSON (numpy/torch scalars converted, NaN/inf become null)."""
    return json.dumps(_finite_or_none(json.loads(json.dumps(obj, default=_json_default))), indent=indent)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as strict JSON to ``path`` atomically."""
    return atomic_write_text(path, to_json(obj) + "\n")


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line to ``path`` (used for metrics.jsonl training curves)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(to_json(record, indent=None) + "\n")


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines file; a truncated last line (killed writer) is ignored."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


def load_yaml(path: str | os.PathLike) -> dict:
    """Load a YAML mapping with ``yaml.safe_load``; raise ConfigError naming the file on any problem."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file '{p}' does not exist or is not a file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"config file '{p}' is not valid YAML: {first}") from None
    except OSError as e:
        raise ConfigError(f"config file '{p}' cannot be read: {e.strerror}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{p}' must hold a mapping of field: value, got {type(data).__name__}")
    return data


def read_json_object(path: str | os.PathLike, error: type[Exception] = CheckpointError) -> dict:
    """The JSON object stored in ``path``; ``error`` (one line naming the file) if it is unreadable, not valid JSON
    or not an object."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise error(f"'{p}' is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise error(f"'{p}' must hold a JSON object")
    return data


def read_results(out: str | os.PathLike) -> dict:
    """Read and check ``out/results.json``; raise CheckpointError if it is missing or incomplete."""
    p = Path(out) / RESULTS_FILE
    if not p.is_file():
        raise CheckpointError(f"no {RESULTS_FILE} in '{out}'")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise CheckpointError(f"'{p}' is not valid JSON") from None
    missing = [k for k in RESULTS_KEYS if k not in data]
    if missing:
        raise CheckpointError(f"'{p}' lacks keys {missing}")
    return data


def results_complete(out: str | os.PathLike) -> bool:
    """True if ``out/results.json`` exists and has every key of the results contract."""
    try:
        read_results(out)
    except CheckpointError:
        return False
    return True


@dataclass
class Results:
    """The results.json contract: experiment, version, seed, config, metrics, wall_s, artifacts."""

    experiment: str
    version: str
    seed: int
    config: dict
    metrics: dict[str, float]
    wall_s: float
    artifacts: list[str]
    out: Path

    def to_dict(self) -> dict:
        """The JSON object written to results.json (and printed by ``--json``): the keys of ``RESULTS_KEYS``."""
        return {"experiment": self.experiment, "version": self.version, "seed": self.seed,
                "config": self.config, "metrics": self.metrics, "wall_s": self.wall_s,
                "artifacts": self.artifacts}

    def to_json(self) -> str:
        """results.json as a string."""
        return to_json(self.to_dict())


def list_artifacts(out: str | os.PathLike) -> list[str]:
    """Relative paths of every file in the run folder except results.json and temp files."""
    out = Path(out)
    files = []
    for p in sorted(out.rglob("*")):
        if p.is_file() and p.name != RESULTS_FILE and not p.name.startswith("."):
            files.append(p.relative_to(out).as_posix())
    return files
