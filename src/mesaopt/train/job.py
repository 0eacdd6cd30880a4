"""``mesaopt train``: build a TrainJob (model x task x train config) from YAML + overrides and run it into a folder."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import yaml

import mesaopt
from mesaopt.config import build_config, set_dotted
from mesaopt.errors import CheckpointError, ConfigError
from mesaopt.io import (
    CONFIG_FILE,
    RESULTS_FILE,
    Results,
    atomic_write_json,
    atomic_write_text,
    list_artifacts,
    load_yaml,
)
from mesaopt.train.checkpoint import find_checkpoint
from mesaopt.train.config import TrainJob
from mesaopt.train.loop import TrainResult, train

EXPERIMENT = "train"


def _parse_spec_value(v: Any) -> Any:
    """--set values for free-form model/task specs: YAML scalars (``3`` -> 3, ``true`` -> True)."""
    if isinstance(v, str):
        for conv in (int, float):  # YAML 1.1 reads "1e-2" as a string
            try:
                return conv(v)
            except ValueError:
                pass
        try:
            return yaml.safe_load(v)
        except yaml.YAMLError:
            return v
    return v


def make_job(config_path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None,
             device: str | None = None) -> TrainJob:
    """TrainJob from a YAML file (model/task/train sections) < ``overrides`` (``lr``, ``train.lr``, ``model.d``).

    The flat key ``d`` sets both ``model.d`` and ``task.d``.
    """
    data = load_yaml(config_path) if config_path is not None else {}
    data = {k: v for k, v in data.items() if k != "experiment"}
    spec_layer: dict = {}
    rest: dict[str, Any] = {}
    for k, v in (overrides or {}).items():
        if k == "d":  # the dimension is shared by the model and the task
            set_dotted(spec_layer, "model.d", _parse_spec_value(v))
            set_dotted(spec_layer, "task.d", _parse_spec_value(v))
        elif k.split(".", 1)[0] in ("model", "task") and "." in k:
            set_dotted(spec_layer, k, _parse_spec_value(v))
        else:
            rest[k] = v
    if device is not None:
        rest["train.device"] = device
    if "model" not in data and "model" not in spec_layer:
        raise ConfigError("the train config needs a 'model: {kind: ..., ...}' section (e.g. kind: lsa)")
    return build_config(TrainJob, data, spec_layer, overrides=rest, where="train config")


def build_job(job: TrainJob) -> tuple[Any, Any]:
    """(model, task) built from the job's specs; ConfigError names a bad spec."""
    from mesaopt import models, tasks
    from mesaopt.config import format_validation_error

    try:
        model = models.build(job.model)
    except TypeError as e:
        raise ConfigError(f"model spec {job.model} cannot be built: {e}") from None
    try:
        task = tasks.build(job.task)
    except TypeError as e:
        raise ConfigError(f"task spec {job.task} cannot be built: {e}") from None
    except Exception as e:  # pydantic ValidationError of the task fields
        if type(e).__name__ == "ValidationError":
            raise ConfigError(format_validation_error(e, "task")) from None
        raise
    return model, task


def default_out() -> Path:
    """runs/train-<timestamp>/ under the current directory (a fresh folder: -2, ... if it exists)."""
    from mesaopt.rundir import timestamped_out

    return timestamped_out("train")


def run_job(job: TrainJob | None = None, out: str | os.PathLike | None = None, resume: bool = False,
            progress: bool = True, overwrite: bool = False) -> Results:
    """Train ``job`` into ``out`` (config.yaml, metrics.jsonl, ckpt/, results.json); ``resume`` continues ``out``.

    ``overwrite`` replaces an existing run folder once the new run has passed its start-up checks (device,
    writable folder); config.yaml is written only after those checks.
    """
    from mesaopt.rundir import FolderSwap, as_out_path, check_device, ensure_writable_dir, provenance, start_stamp

    started = start_stamp()  # also fixes the commit recorded in provenance
    out = as_out_path(out, "--resume" if resume else "--out")
    if resume:
        if out is None:
            raise ConfigError("resume needs the run folder to continue")
        if overwrite:
            raise ConfigError("--resume continues the run and --overwrite replaces it; give only one")
        if not out.is_dir():
            raise CheckpointError(f"cannot resume: run folder '{out}' does not exist")
        saved = out / CONFIG_FILE
        if not saved.is_file():
            raise CheckpointError(f"cannot resume: '{out}' has no {CONFIG_FILE} (not a mesaopt train run)")
        if job is not None:
            raise ConfigError("resume continues the config saved in the run folder; drop -c/--set")
        job = make_job(saved)
    else:
        if job is None:
            raise ConfigError("run_job needs a TrainJob (or resume=True)")
        out = out if out is not None else default_out()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out '{out}' exists and is not a directory")
    model, task = build_job(job)
    if not resume and not overwrite and out.is_dir() and find_checkpoint(out) is not None:
        raise ConfigError(f"'{out}' already holds a checkpoint; continue it with --resume {out}, replace it "
                          f"with --overwrite or use a fresh --out")
    check_device(job.train.device, "train.device")
    swap = FolderSwap(out)
    if overwrite and out.is_dir() and any(out.iterdir()):
        ensure_writable_dir(out.parent)
        swap.begin()
    try:
        ensure_writable_dir(out)
        if not resume:
            atomic_write_text(out / CONFIG_FILE, yaml.safe_dump({"experiment": EXPERIMENT,
                                                                 **job.model_dump(mode="json")}, sort_keys=False))
    except BaseException:
        swap.rollback()
        raise
    swap.commit()
    t0 = time.perf_counter()
    res: TrainResult = train(model, task, job.train, out=out, resume=resume, progress=progress)
    metrics = {k: float(v) for k, v in res.final.items()}
    metrics["steps"] = float(res.step)
    results = Results(experiment=EXPERIMENT, version=mesaopt.__version__, seed=job.train.seed,
                      config=job.model_dump(mode="json"), metrics={k: metrics[k] for k in sorted(metrics)},
                      wall_s=round(time.perf_counter() - t0, 3), artifacts=list_artifacts(out), out=out)
    api_call = f"mesaopt.train.job.run_job(out={str(out)!r}, resume={resume}, overwrite={overwrite})"
    atomic_write_json(out / RESULTS_FILE, {**results.to_dict(), "provenance": provenance(started, api_call)})
    return results
