"""Shareable model folders: ``model.save_pretrained(dir)`` / ``mesaopt.load(dir)`` / ``Model.from_pretrained(dir)``.

A model folder holds only what rebuilds the model, no run, optimizer or RNG state::

    model.safetensors   model.state_dict() (no pickle)
    config.json         {"format": "mesaopt-model", "format_version": 1, "model": model.spec(), "dtype",
                         "weights": {"file": "model.safetensors", "sha256": hex digest}, "mesaopt_version",
                         "torch_version", "metadata": {...}}

``model.spec()`` is what ``mesaopt.models.build(spec)`` takes. The weights are written first and ``config.json``
last (both atomically), so a folder with a config.json is complete; on load the sha256 of the weights file is
checked before it is parsed (a flipped byte is a ``CheckpointError``, CLI exit 2), and an unknown format or
format_version is refused with a message naming what this mesaopt reads. A run's checkpoint converts with
``mesaopt.export(run_dir, out_dir)`` (``mesaopt.train.checkpoint.export_pretrained``; CLI ``mesaopt export``).

**Shipped models**: trained model folders ship inside the package (``mesaopt/weights/NAME/``, package data), so
nothing is downloaded at run time. ``shipped_names()`` lists them, ``shipped(name)`` is a folder's path and
``mesaopt.load(name)`` loads one when ``name`` is not an existing folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from mesaopt.errors import CheckpointError, ConfigError
from mesaopt.io import atomic_write_bytes, atomic_write_json

__all__ = ["save_pretrained", "load_pretrained", "read_config", "PretrainedMixin", "FORMAT", "FORMAT_VERSION",
           "CONFIG_FILE", "WEIGHTS_FILE", "shipped", "shipped_names", "resolve"]

FORMAT = "mesaopt-model"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_DTYPES = ("float32", "float64", "bfloat16", "float16")


def shipped_names() -> list[str]:
    """Names of the model folders shipped with the package (sorted), e.g. ``["garg-d20"]``."""
    root = Path(__file__).resolve().parent.parent / "weights"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / CONFIG_FILE).is_file())


def shipped(name: str) -> Path:
    """The folder of the shipped model ``name``; ConfigError listing the shipped names for an unknown one."""
    names = shipped_names()
    if name not in names:
        raise ConfigError(f"no shipped model {name!r}; shipped models: {', '.join(names) or '(none)'}")
    return Path(__file__).resolve().parent.parent / "weights" / name


def resolve(path: str | os.PathLike) -> Path:
    """``path`` if it exists or has a folder part, else the shipped model of that name (``shipped``).

    A bare name that is neither an existing folder nor a shipped model is a ConfigError listing the shipped names.
    """
    p = Path(path)
    if p.exists() or len(p.parts) != 1:
        return p
    if p.name in shipped_names():
        return shipped(p.name)
    raise ConfigError(f"'{path}' is neither an existing folder nor a shipped model; shipped models: "
                      f"{', '.join(shipped_names()) or '(none)'}")


def save_pretrained(model: torch.nn.Module, path: str | os.PathLike, metadata: dict | None = None) -> Path:
    """Write ``model`` (any registered model with ``spec()``) to the folder ``path``; returns the folder.

    ``metadata`` (JSON-able, e.g. the task spec a run trained on) is stored as is under ``"metadata"``.
    """
    import mesaopt

    if not callable(getattr(model, "spec", None)):
        raise ConfigError(f"{type(model).__name__} has no spec(); only registered mesaopt models can be saved")
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"'{out}' exists and is not a folder")
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    dtypes = {str(v.dtype).removeprefix("torch.") for v in tensors.values() if v.is_floating_point()}
    data = st_save(tensors, metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)})
    atomic_write_bytes(out / WEIGHTS_FILE, data)
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": model.spec(),
              "dtype": dtypes.pop() if len(dtypes) == 1 else "float32",
              "weights": {"file": WEIGHTS_FILE, "sha256": hashlib.sha256(data).hexdigest()},
              "mesaopt_version": mesaopt.__version__, "torch_version": torch.__version__,
              "metadata": metadata or {}}
    atomic_write_json(out / CONFIG_FILE, config)  # written last: marks the folder complete
    return out


def read_config(path: str | os.PathLike) -> dict:
    """The checked ``config.json`` of a model folder; CheckpointError if missing, malformed or of unknown format."""
    import mesaopt

    p = Path(path)
    if not p.is_dir():
        raise CheckpointError(f"model folder '{p}' does not exist or is not a folder")
    cp = p / CONFIG_FILE
    if not cp.is_file():
        hint = (" (it is a run folder: convert it with `mesaopt export RUN_DIR OUT_DIR` or mesaopt.export)"
                if (p / "ckpt").is_dir() or (p / "state.json").is_file() else "")
        raise CheckpointError(f"no {CONFIG_FILE} in '{p}': not a model folder written by save_pretrained{hint}")
    try:
        cfg = json.loads(cp.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise CheckpointError(f"'{cp}' is not valid JSON: {e}") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        got = cfg.get("format") if isinstance(cfg, dict) else type(cfg).__name__
        raise CheckpointError(f"'{cp}' is not a mesaopt model config (format {got!r}, expected {FORMAT!r})")
    ver = cfg.get("format_version")
    if ver != FORMAT_VERSION:
        raise CheckpointError(f"unknown model format_version {ver!r} in '{cp}': this mesaopt "
                              f"{mesaopt.__version__} reads format_version {FORMAT_VERSION} (written by mesaopt "
                              f"{cfg.get('mesaopt_version', '?')}); use a matching mesaopt version")
    spec, weights = cfg.get("model"), cfg.get("weights")
    if not isinstance(spec, dict) or "kind" not in spec:
        raise CheckpointError(f"'{cp}' has no model spec with a 'kind'")
    if not isinstance(weights, dict) or not isinstance(weights.get("sha256"), str):
        raise CheckpointError(f"'{cp}' lacks weights.sha256")
    if cfg.get("dtype", "float32") not in _DTYPES:
        raise CheckpointError(f"'{cp}' has dtype {cfg.get('dtype')!r}; expected one of {list(_DTYPES)}")
    return cfg


def _read_weights(folder: Path, cfg: dict) -> dict[str, torch.Tensor]:
    wp = folder / cfg["weights"].get("file", WEIGHTS_FILE)
    if wp.parent != folder:
        raise CheckpointError(f"weights file {cfg['weights'].get('file')!r} must be inside '{folder}'")
    try:
        data = wp.read_bytes()
    except OSError as e:
        raise CheckpointError(f"weights file '{wp}' cannot be read: {e.strerror or e}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != cfg["weights"]["sha256"]:
        raise CheckpointError(f"weights file '{wp}' is corrupt or was modified: sha256 {digest[:16]}... does not "
                              f"match {cfg['weights']['sha256'][:16]}... in {CONFIG_FILE}")
    try:
        return st_load(data)
    except (SafetensorError, ValueError) as e:
        raise CheckpointError(f"weights file '{wp}' is unreadable: {e}") from None


def load_pretrained(path: str | os.PathLike, device: torch.device | str = "cpu",
                    kind: str | None = None) -> torch.nn.Module:
    """The model in the folder ``path`` (from ``save_pretrained``), in eval mode on ``device``.

    ``path``: a model folder, or the name of a shipped model (``shipped_names()``) when no such folder exists.
    ``kind``: refuse a folder holding another model kind (``LSA.from_pretrained`` passes ``"lsa"``).
    """
    from mesaopt import models

    folder = resolve(path)
    cfg = read_config(folder)
    spec = cfg["model"]
    if kind is not None and spec["kind"] != kind:
        raise CheckpointError(f"'{folder}' holds a {spec['kind']!r} model, not {kind!r}; load it with mesaopt.load")
    tensors = _read_weights(folder, cfg)
    try:
        model = models.build(spec)
    except (ConfigError, TypeError, ValueError) as e:
        raise CheckpointError(f"cannot build model from '{folder / CONFIG_FILE}' spec {spec}: "
                              f"{' '.join(str(e).split())}") from None
    model.to(device=device, dtype=getattr(torch, cfg.get("dtype", "float32")))
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    bad = [k for k in expected if k in tensors and tuple(tensors[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or bad:
        raise CheckpointError(f"weights in '{folder}' do not fit the model spec: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}, wrong shape {bad[:5]}")
    with torch.no_grad():
        for k, v in expected.items():
            v.copy_(tensors[k].to(device=v.device, dtype=v.dtype))
    model.eval()
    return model


class PretrainedMixin:
    """``save_pretrained(dir)`` and ``from_pretrained(dir)`` for a registered model class."""

    def save_pretrained(self, path: str | os.PathLike, metadata: dict | None = None) -> Path:
        """Write this model to the folder ``path`` (config.json + model.safetensors); returns the folder."""
        return save_pretrained(self, path, metadata)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: torch.device | str = "cpu") -> Any:
        """The model saved in ``path``; CheckpointError if the folder holds another kind, is corrupt or unknown."""
        return load_pretrained(path, device=device, kind=getattr(cls, "kind", None))
