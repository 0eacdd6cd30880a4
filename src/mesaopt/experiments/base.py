"""Experiment registry and runner: each experiment is a pydantic Config plus ``fn(cfg, ctx) -> metrics``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field
from rich.console import Console

import mesaopt
from mesaopt.config import StrictModel, build_config
from mesaopt.errors import CheckpointError, ConfigError
from mesaopt.io import (  # Results, CONFIG_FILE and list_artifacts are re-exported: they used to live here
    CONFIG_FILE,
    RESULTS_FILE,
    Results,
    atomic_write_json,
    atomic_write_text,
    list_artifacts,
    load_yaml,
)
from mesaopt.registry import Registry
from mesaopt.runtime import threads

__all__ = ["CONFIG_FILE", "RESULTS_FILE", "Experiment", "ExperimentConfig", "REGISTRY", "Results", "RunContext",
           "default_out", "get", "list_artifacts", "make_config", "names", "register", "run"]


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


REGISTRY: Registry[Experiment] = Registry("unknown experiment {name!r}; choose one of: {joined}",
                                          "mesaopt.experiments")


def register(name: str, description: str, config: type[ExperimentConfig],
             quick: dict[str, Any] | None = None) -> Callable:
    """Decorator registering ``fn(cfg, ctx) -> metrics`` as experiment ``name``."""

    def deco(fn: Callable) -> Callable:
        REGISTRY.add(name, Experiment(name, description, config, fn, dict(quick or {})))
        return fn

    return deco


def _scan_names() -> set[str] | None:
    """Experiment names registered by the modules of this package, read from their source (no imports).

    None when a module registers a name that is not a string literal (then only importing tells).
    """
    import re

    found: set[str] = set()
    for p in Path(__file__).resolve().parent.glob("*.py"):
        if p.name == "base.py" or p.name.startswith("_"):
            continue
        text = p.read_text(encoding="utf-8", errors="replace")
        names = re.findall(r'@register\(\s*"([^"]+)"', text)
        if text.count("@register(") != len(names):
            return None
        found.update(names)
    return found


def names() -> list[str]:
    """Sorted names of all registered experiments."""
    return REGISTRY.names()


def get(name: str) -> Experiment:
    """The experiment called ``name``; ConfigError lists the known names otherwise."""
    scanned = None if name in REGISTRY else _scan_names()
    if scanned is not None and name not in scanned:  # unknown: answer without importing torch & co.
        raise ConfigError(f"unknown experiment {name!r}; choose one of: {', '.join(sorted(scanned | set(REGISTRY)))}")
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
    """runs/NAME-<timestamp>/ under the current directory (a fresh folder: -2, ... if it exists)."""
    from mesaopt.rundir import timestamped_out

    return timestamped_out(name)


def run(name: str, overrides: dict[str, Any] | None = None, out: str | Path | None = None,
        quick: bool = False, config_path: str | Path | None = None, resume: bool = False,
        progress: bool = True, config: ExperimentConfig | None = None, overwrite: bool = False) -> Results:
    """Run experiment ``name`` into ``out`` and write results.json; ``resume`` continues a killed run.

    With ``resume``, overrides / ``config_path`` / ``quick`` / ``config`` may repeat the original command; they
    must give the saved config (ConfigError names the differing fields). ``overwrite`` replaces an existing
    run folder (the old one is deleted only once the new run has passed its start-up checks). config.yaml is
    written only after those checks (output folder writable, device available).
    """
    from mesaopt.rundir import FolderSwap, as_out_path, check_device, config_diff, ensure_writable_dir, start_stamp

    started = start_stamp()  # also fixes the commit recorded in provenance
    out = as_out_path(out)
    exp = get(name)
    if resume:
        if out is None:
            raise ConfigError("--resume needs --out DIR pointing at the run to continue")
        if overwrite:
            raise ConfigError("--resume continues the run in --out and --overwrite replaces it; give only one")
        saved = out / CONFIG_FILE
        if not saved.is_file():
            raise CheckpointError(f"cannot resume: '{out}' has no {CONFIG_FILE} (not a mesaopt run folder)")
        data = load_yaml(saved)
        if data.pop("experiment", name) != name:
            raise ConfigError(f"cannot resume: '{out}' holds a run of a different experiment, not {name!r}")
        cfg = build_config(exp.config_cls, upgrade_saved_config(exp.config_cls, data),
                           where=f"saved config in {saved}")
        if overrides or config_path is not None or quick or config is not None:
            asked = config if config is not None else make_config(name, overrides, config_path, quick)
            diff = config_diff(cfg.model_dump(mode="json"), asked.model_dump(mode="json"))
            if diff:
                more = f" and {len(diff) - 4} more" if len(diff) > 4 else ""
                raise ConfigError(f"cannot resume '{out}': the command's config differs from the saved one in "
                                  f"{'; '.join(diff[:4])}{more}; repeat the original options, drop them, "
                                  f"or start over with --overwrite")
    else:
        cfg = config if config is not None else make_config(name, overrides, config_path, quick)
        out = out if out is not None else default_out(name)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out '{out}' exists and is not a directory")
    if not resume and not overwrite and (out / CONFIG_FILE).exists():
        raise ConfigError(f"--out '{out}' already holds a run; continue it with --resume, replace it with "
                          f"--overwrite or choose a fresh --out")
    import torch
    import yaml

    check_device(cfg.device)
    swap = FolderSwap(out)
    if overwrite and out.is_dir() and any(out.iterdir()):
        ensure_writable_dir(out.parent)
        swap.begin()
    try:
        ensure_writable_dir(out)
        atomic_write_text(out / CONFIG_FILE, yaml.safe_dump({"experiment": name, **cfg.model_dump(mode="json")},
                                                            sort_keys=False))
    except BaseException:
        swap.rollback()
        raise
    swap.commit()
    ctx = RunContext(out=out, resume=resume, progress=progress)
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    with threads(cfg.threads):
        metrics = exp.fn(cfg, ctx)
    wall = time.perf_counter() - t0
    results = Results(experiment=name, version=mesaopt.__version__, seed=cfg.seed,
                      config=cfg.model_dump(mode="json"), metrics={k: metrics[k] for k in sorted(metrics)},
                      wall_s=round(wall, 3), artifacts=list_artifacts(out), out=out)
    from mesaopt.rundir import provenance

    api_call = (f"mesaopt.experiments.run({name!r}, overrides={overrides!r}, out={str(out)!r}, quick={quick}, "
                f"config_path={config_path!r}, resume={resume}, overwrite={overwrite})")
    atomic_write_json(out / RESULTS_FILE, {**results.to_dict(), "provenance": provenance(started, api_call)})
    return results
