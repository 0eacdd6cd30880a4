"""Experiment registry and runner: each experiment is a pydantic Config plus ``fn(cfg, ctx) -> metrics``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from rich.console import Console

import mesaopt
from mesaopt.config import StrictModel, build_config
from mesaopt.errors import CheckpointError, ConfigError
from mesaopt.io import RESULTS_FILE, atomic_write_json, atomic_write_text, load_yaml, to_json
from mesaopt.registry import Registry
from mesaopt.runtime import threads

CONFIG_FILE = "config.yaml"


class ExperimentConfig(StrictModel):
    """Fields every experiment has: the seed and the torch device."""

    seed: int = Field(0, ge=0, description="master seed; train/eval seeds are derived from it")
    device: str = Field("cpu", description="torch device, e.g. cpu or cuda")
    threads: int | None = Field(None, ge=1, description="torch intra-op CPU threads for this run (None = torch's "
                                                        "default); 1 is fastest for tiny models")


@dataclass
class RunContext:
    """What an experiment function gets besides its config: where to write and how to report."""

    out: Path
    resume: bool = False
    progress: bool = True
    console: Console = field(default_factory=lambda: Console(stderr=True))

    def path(self, name: str) -> Path:
        """Absolute path of an artifact inside the run folder (parents created)."""
        p = self.out / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p


@dataclass(frozen=True)
class Experiment:
    """A registered experiment: name, one-line description, config class, quick overrides, function."""

    name: str
    description: str
    config_cls: type[ExperimentConfig]
    fn: Callable[[Any, RunContext], dict[str, float]]
    quick: dict[str, Any]


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
        """The JSON object written to results.json (and printed by ``--json``)."""
        return {"experiment": self.experiment, "version": self.version, "seed": self.seed,
                "config": self.config, "metrics": self.metrics, "wall_s": self.wall_s,
                "artifacts": self.artifacts}

    def to_json(self) -> str:
        """results.json as a string."""
        return to_json(self.to_dict())


REGISTRY: Registry[Experiment] = Registry("unknown experiment {name!r}; choose one of: {joined}",
                                          "mesaopt.experiments")


def register(name: str, description: str, config: type[ExperimentConfig],
             quick: dict[str, Any] | None = None) -> Callable:
    """Decorator registering ``fn(cfg, ctx) -> metrics`` as experiment ``name``."""

    def deco(fn: Callable) -> Callable:
        REGISTRY.add(name, Experiment(name, description, config, fn, dict(quick or {})))
        return fn

    return deco


def names() -> list[str]:
    """Sorted names of all registered experiments."""
    return REGISTRY.names()


def get(name: str) -> Experiment:
    """The experiment called ``name``; ConfigError lists the known names otherwise."""
    return REGISTRY.get(name)


def make_config(name: str, overrides: dict[str, Any] | None = None, config_path: str | Path | None = None,
                quick: bool = False) -> ExperimentConfig:
    """Config of ``name``: defaults < quick overrides < YAML file < ``overrides`` (flat or dotted keys)."""
    exp = get(name)
    quick_layer: dict = {}
    if quick:
        from mesaopt.config import set_dotted
        for k, v in exp.quick.items():
            set_dotted(quick_layer, k, v)
    file_layer = load_yaml(config_path) if config_path is not None else {}
    if isinstance(file_layer.get("experiment"), str):
        file_layer = {k: v for k, v in file_layer.items() if k != "experiment"}
    return build_config(exp.config_cls, quick_layer, file_layer, overrides=overrides,
                        where=f"config for {name}")


def upgrade_saved_config(cls: type[ExperimentConfig], data: dict) -> dict:
    """A saved config without ``train.seed`` etc.: folders written before ``train_settings`` listed the fields
    the experiment owns, whose values the run ignored; dropping them resumes the same run."""
    from mesaopt.train.settings import TrainSettings

    field = cls.model_fields.get("train")
    ann = field.annotation if field is not None else None
    if not (isinstance(ann, type) and issubclass(ann, TrainSettings) and isinstance(data.get("train"), dict)):
        return data
    return {**data, "train": {k: v for k, v in data["train"].items() if k not in ann.owned}}


def default_out(name: str) -> Path:
    """runs/NAME-<timestamp>/ under the current directory."""
    return Path("runs") / f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def list_artifacts(out: Path) -> list[str]:
    """Relative paths of every file in the run folder except results.json and temp files."""
    files = []
    for p in sorted(out.rglob("*")):
        if p.is_file() and p.name != RESULTS_FILE and not p.name.startswith("."):
            files.append(p.relative_to(out).as_posix())
    return files


def run(name: str, overrides: dict[str, Any] | None = None, out: str | Path | None = None,
        quick: bool = False, config_path: str | Path | None = None, resume: bool = False,
        progress: bool = True, config: ExperimentConfig | None = None) -> Results:
    """Run experiment ``name`` into ``out`` and write results.json; ``resume`` continues a killed run."""
    exp = get(name)
    if resume:
        if out is None:
            raise ConfigError("--resume needs --out DIR pointing at the run to continue")
        out = Path(out)
        saved = out / CONFIG_FILE
        if not saved.is_file():
            raise CheckpointError(f"cannot resume: '{out}' has no {CONFIG_FILE} (not a mesaopt run folder)")
        if overrides or config_path is not None:
            raise ConfigError("--resume continues the config saved in the run folder; drop --set/-c")
        data = load_yaml(saved)
        if data.pop("experiment", name) != name:
            raise ConfigError(f"cannot resume: '{out}' holds a run of a different experiment, not {name!r}")
        cfg = build_config(exp.config_cls, upgrade_saved_config(exp.config_cls, data),
                           where=f"saved config in {saved}")
    else:
        cfg = config if config is not None else make_config(name, overrides, config_path, quick)
        out = Path(out) if out is not None else default_out(name)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out '{out}' exists and is not a directory")
    if not resume and (out / CONFIG_FILE).exists():
        raise ConfigError(f"--out '{out}' already holds a run; continue it with --resume or choose a fresh --out")
    out.mkdir(parents=True, exist_ok=True)
    import yaml

    atomic_write_text(out / CONFIG_FILE, yaml.safe_dump({"experiment": name, **cfg.model_dump(mode="json")},
                                                        sort_keys=False))
    ctx = RunContext(out=out, resume=resume, progress=progress)
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    with threads(cfg.threads):
        metrics = exp.fn(cfg, ctx)
    wall = time.perf_counter() - t0
    results = Results(experiment=name, version=mesaopt.__version__, seed=cfg.seed,
                      config=cfg.model_dump(mode="json"), metrics={k: metrics[k] for k in sorted(metrics)},
                      wall_s=round(wall, 3), artifacts=list_artifacts(out), out=out)
    atomic_write_json(out / RESULTS_FILE, results.to_dict())
    return results
