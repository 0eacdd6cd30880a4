"""Checkpoints: safetensors weights + optimizer tensors and a JSON state, written atomically (no pickle).

Layout of ``<run>/ckpt/`` (format_version 1)::

    model.safetensors       model.state_dict()
    optimizer.safetensors   every tensor of optimizer.state_dict()["state"], keyed "state.<param idx>.<name>"
    state.json              format_version, step, model spec, task spec, train config, RNG states (base64),
                            scheduler state, optimizer param_groups + non-tensor state, extra (trainer counters),
                            sha256 {file name: hex digest} of every tensor file (verified on load)

Integrity: every ``.safetensors`` file is hashed when written and checked against ``state.json["sha256"]``
before it is read; a flipped byte or a truncated file raises CheckpointError naming the file. Checkpoints
written before the hashes existed (no ``sha256`` key) load without the check.

A checkpoint is written into ``ckpt.tmp/`` and swapped in with two renames (``ckpt`` -> ``ckpt.old``,
``ckpt.tmp`` -> ``ckpt``); ``state.json`` is written last, so a directory holding it is complete. A reader
that finds no ``ckpt/`` (a kill between the renames) uses the complete ``ckpt.tmp/`` or else ``ckpt.old/``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

import mesaopt
from mesaopt.errors import CheckpointError, ConfigError
from mesaopt.io import atomic_write_bytes, atomic_write_json, read_json_object

FORMAT_VERSION = 1
CKPT_DIR = "ckpt"
MODEL_FILE = "model.safetensors"
OPTIM_FILE = "optimizer.safetensors"
EXTRA_FILE = "extra.safetensors"
STATE_FILE = "state.json"
_TMP_SUFFIX = ".tmp"
_OLD_SUFFIX = ".old"


# --------------------------------------------------------------------------- RNG state (no pickle)

def generator_state(gen: torch.Generator) -> dict:
    """JSON-able state of a torch.Generator: {"device": str, "state": base64 of its ByteTensor state}."""
    raw = gen.get_state().cpu().numpy().tobytes()
    return {"device": str(gen.device), "state": base64.b64encode(raw).decode("ascii")}


def set_generator_state(gen: torch.Generator, state: dict) -> None:
    """Restore a generator from ``generator_state`` output; CheckpointError on a device/format mismatch."""
    if state.get("device") != str(gen.device):
        raise CheckpointError(f"checkpoint RNG state is for device {state.get('device')!r}, "
                              f"but the run uses {str(gen.device)!r}; resume on the same device")
    try:
        raw = base64.b64decode(state["state"])
        gen.set_state(torch.frombuffer(bytearray(raw), dtype=torch.uint8).clone())
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise CheckpointError(f"checkpoint RNG state cannot be restored: {e}") from None


# --------------------------------------------------------------------------- directory handling

def _complete(d: Path) -> bool:
    return d.is_dir() and (d / STATE_FILE).is_file()


def find_checkpoint(path: str | os.PathLike, repair: bool = False) -> Path | None:
    """The checkpoint directory for a run folder or a ckpt folder (None if there is none).

    Recovers from a kill between the two renames of a checkpoint swap: without ``ckpt/`` the complete
    ``ckpt.tmp/`` (newer) or ``ckpt.old/`` is used; with ``repair=True`` it is renamed to ``ckpt/`` and
    leftovers are removed.
    """
    p = Path(path)
    if _complete(p) and not (p / CKPT_DIR).is_dir():
        return p  # a ckpt folder itself
    ck, tmp, old = p / CKPT_DIR, p / (CKPT_DIR + _TMP_SUFFIX), p / (CKPT_DIR + _OLD_SUFFIX)
    if _complete(ck):
        found = ck
    elif _complete(tmp):
        found = tmp
    elif _complete(old):
        found = old
    else:
        return None
    if repair:
        if found is not ck:
            if ck.exists():
                shutil.rmtree(ck)
            os.replace(found, ck)
            found = ck
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover)
    return found


def _resolve(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint path '{p}' does not exist")
    if not p.is_dir():
        raise CheckpointError(f"checkpoint path '{p}' is not a directory")
    found = find_checkpoint(p)
    if found is None:
        raise CheckpointError(f"no checkpoint in '{p}' (expected {STATE_FILE} there or in '{p / CKPT_DIR}')")
    return found


def _write_safetensors(path: Path, tensors: dict[str, torch.Tensor]) -> str:
    """Write the tensors atomically; returns the sha256 hex digest of the file's bytes."""
    data = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    raw = st_save(data, metadata={"format_version": str(FORMAT_VERSION)})
    atomic_write_bytes(path, raw)
    return hashlib.sha256(raw).hexdigest()


def _expected_sha256(path: Path) -> str | None:
    """The digest of ``path`` recorded in the state.json next to it (None: an old checkpoint without hashes)."""
    try:
        state = json.loads((path.parent / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    hashes = state.get("sha256") if isinstance(state, dict) else None
    if not isinstance(hashes, dict):
        return None
    if path.name not in hashes:
        raise CheckpointError(f"checkpoint file '{path}' is not listed in its {STATE_FILE} (mixed checkpoints?)")
    return hashes[path.name]


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file '{path}' is missing")
    expected = _expected_sha256(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"checkpoint file '{path}' cannot be read: {e.strerror}") from None
    if expected is not None and hashlib.sha256(raw).hexdigest() != expected:
        raise CheckpointError(f"checkpoint file '{path}' is corrupt or truncated: its sha256 does not match "
                              f"{STATE_FILE} ({len(raw)} bytes)")
    try:
        return st_load(raw)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint file '{path}' is corrupt or unreadable: {e}") from None


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- optimizer (de)serialisation

def _split_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for idx, st in sd["state"].items():
        for name, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"state.{idx}.{name}"] = v
            else:
                scalars.setdefault(str(idx), {})[name] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars, "class": type(opt).__name__}


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        _, idx, name = key.split(".", 2)
        state.setdefault(int(idx), {})[name] = v
    for idx, st in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(st)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


# --------------------------------------------------------------------------- public API

def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, step: int,
                    optimizer: torch.optim.Optimizer | None = None, task: Any = None, train_cfg: Any = None,
                    generators: dict[str, torch.Generator] | None = None, scheduler: dict | None = None,
                    extra: dict | None = None, extra_tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Atomically write a checkpoint to ``path/ckpt/`` (``path`` = the run folder); returns the ckpt dir.

    ``extra_tensors`` (e.g. a loss hook's replay buffer) go to ``extra.safetensors``; read them back with
    ``load_extra_tensors``."""
    run = Path(path)
    run.mkdir(parents=True, exist_ok=True)
    find_checkpoint(run, repair=True)  # finish an interrupted swap before starting a new one
    ck, tmp, old = run / CKPT_DIR, run / (CKPT_DIR + _TMP_SUFFIX), run / (CKPT_DIR + _OLD_SUFFIX)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    hashes = {MODEL_FILE: _write_safetensors(tmp / MODEL_FILE, model.state_dict())}
    optim_meta = None
    if optimizer is not None:
        tensors, optim_meta = _split_optimizer(optimizer)
        hashes[OPTIM_FILE] = _write_safetensors(tmp / OPTIM_FILE, tensors)
    if extra_tensors:
        hashes[EXTRA_FILE] = _write_safetensors(tmp / EXTRA_FILE,
                                                {k: v.detach().contiguous() for k, v in extra_tensors.items()})
    spec = model.spec() if hasattr(model, "spec") else None
    state = {
        "format_version": FORMAT_VERSION,
        "step": int(step),
        "model": spec,
        "task": task.spec() if hasattr(task, "spec") else task,
        "train": train_cfg.model_dump(mode="json") if hasattr(train_cfg, "model_dump") else train_cfg,
        "rng": {name: generator_state(g) for name, g in (generators or {}).items()},
        "torch_rng": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode("ascii"),
        "scheduler": scheduler,
        "optimizer": optim_meta,
        "extra": extra or {},
        "mesaopt_version": mesaopt.__version__,
        "torch_version": torch.__version__,
        "sha256": hashes,
    }
    atomic_write_json(tmp / STATE_FILE, state)  # written last: marks the directory complete
    _fsync_dir(tmp)
    if ck.exists():
        os.replace(ck, old)
    os.replace(tmp, ck)
    _fsync_dir(run)
    if old.exists():
        shutil.rmtree(old)
    return ck


def read_state(path: str | os.PathLike) -> tuple[Path, dict]:
    """(ckpt dir, parsed state.json) for a run or ckpt folder; CheckpointError if missing/unknown version."""
    ck = _resolve(path)
    sp = ck / STATE_FILE
    state = read_json_object(sp)
    ver = state.get("format_version")
    if ver != FORMAT_VERSION:
        raise CheckpointError(f"unknown checkpoint format_version {ver!r} in '{sp}' "
                              f"(this mesaopt {mesaopt.__version__} reads {FORMAT_VERSION})")
    for key in ("step", "model"):
        if key not in state:
            raise CheckpointError(f"'{sp}' lacks the key {key!r}")
    return ck, state


def load_weights(model: torch.nn.Module, ckpt: Path) -> None:
    """Copy ``ckpt/model.safetensors`` into ``model``; CheckpointError on missing/extra keys or shape mismatch."""
    tensors = _read_safetensors(ckpt / MODEL_FILE)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"checkpoint '{ckpt}' does not fit the model: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    for k, v in expected.items():
        if tuple(tensors[k].shape) != tuple(v.shape):
            raise CheckpointError(f"checkpoint tensor {k!r} has shape {tuple(tensors[k].shape)} but the model "
                                  f"expects {tuple(v.shape)} ('{ckpt}')")
    with torch.no_grad():
        for k, v in expected.items():
            v.copy_(tensors[k].to(device=v.device, dtype=v.dtype))


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module | None = None,
                    optimizer: torch.optim.Optimizer | None = None,
                    generators: dict[str, torch.Generator] | None = None, restore_torch_rng: bool = False) -> dict:
    """Read a checkpoint (run or ckpt folder) and restore what is given; returns state.json (+ "path")."""
    ck, state = read_state(path)
    if model is not None:
        load_weights(model, ck)
    if optimizer is not None:
        meta = state.get("optimizer")
        if meta is None:
            raise CheckpointError(f"checkpoint '{ck}' has no optimizer state")
        if meta.get("class") != type(optimizer).__name__:
            raise CheckpointError(f"checkpoint optimizer is {meta.get('class')}, the run uses "
                                  f"{type(optimizer).__name__}")
        sd = _join_optimizer(_read_safetensors(ck / OPTIM_FILE), meta)
        try:
            optimizer.load_state_dict(sd)
        except (ValueError, KeyError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"checkpoint optimizer state does not fit ('{ck}'): {first}") from None
    for name, g in (generators or {}).items():
        if name not in state.get("rng", {}):
            raise CheckpointError(f"checkpoint '{ck}' has no RNG state {name!r}")
        set_generator_state(g, state["rng"][name])
    if restore_torch_rng and state.get("torch_rng"):
        torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(state["torch_rng"])),
                                             dtype=torch.uint8).clone())
    state["path"] = str(ck)
    return state


def load_extra_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``extra_tensors`` saved with a checkpoint (run or ckpt folder); empty if there are none."""
    ck, _ = read_state(path)
    return _read_safetensors(ck / EXTRA_FILE) if (ck / EXTRA_FILE).is_file() else {}


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    """(model rebuilt from the checkpoint's spec with its weights, in eval mode, state.json) for a run/ckpt dir."""
    from mesaopt import models

    ck, state = read_state(path)
    spec = state.get("model")
    if not isinstance(spec, dict) or "kind" not in spec:
        raise CheckpointError(f"checkpoint '{ck}' has no model spec with a 'kind'")
    try:
        model = models.build(spec)
    except (ConfigError, TypeError, ValueError) as e:
        first = " ".join(str(e).split())
        raise CheckpointError(f"cannot build model from checkpoint spec {spec}: {first}") from None
    dtype = None
    train = state.get("train")
    if isinstance(train, dict) and train.get("dtype") in ("float32", "float64", "bfloat16"):
        dtype = getattr(torch, train["dtype"])
    model.to(device=device, dtype=dtype)
    load_weights(model, ck)
    model.eval()
    state["path"] = str(ck)
    return model, state


def export_pretrained(run_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write the model of a run's checkpoint to a shareable model folder (``mesaopt.models.pretrained``).

    The folder's metadata keeps the checkpoint's step, task spec and training ``n_points`` (what ``mesaopt patch``
    and friends need to rebuild the task), never its optimizer or RNG state. Returns ``Path(out_dir)``.
    """
    from mesaopt.models.pretrained import save_pretrained

    model, state = load_model(run_dir)
    train = state.get("train") if isinstance(state.get("train"), dict) else {}
    points = (train.get("curriculum") or {}).get("points") if isinstance(train.get("curriculum"), dict) else None
    n_points = points["end"] if isinstance(points, dict) and isinstance(points.get("end"), int) \
        else train.get("n_points")
    meta = {"source": str(Path(state["path"]).resolve()), "step": state.get("step"), "task": state.get("task"),
            "n_points": n_points}
    return save_pretrained(model, out_dir, metadata=meta)
