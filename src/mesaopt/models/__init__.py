"""Models that are learners. ``build(spec)`` rebuilds any model from its ``spec()`` dict.

Every model class sets a class attribute ``kind`` and implements ``spec() -> dict`` (JSON-able
constructor arguments plus ``"kind"``) so that checkpoints store the config next to the weights.
"""

from __future__ import annotations

import importlib
import pkgutil

import torch

from mesaopt.errors import ConfigError

REGISTRY: dict[str, type[torch.nn.Module]] = {}


def register(cls: type[torch.nn.Module]) -> type[torch.nn.Module]:
    """Class decorator: make a model class buildable from ``{"kind": cls.kind, ...}``."""
    REGISTRY[cls.kind] = cls
    return cls


def _discover() -> None:
    import mesaopt.models as pkg

    for m in pkgutil.iter_modules(pkg.__path__):
        if not m.name.startswith("_"):
            importlib.import_module(f"mesaopt.models.{m.name}")


def build(spec: dict) -> torch.nn.Module:
    """Build a model from ``{"kind": ..., **kwargs}``; ConfigError names an unknown kind."""
    _discover()
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in REGISTRY:
        raise ConfigError(f"model.kind must be one of {sorted(REGISTRY)}, got {kind!r}")
    return REGISTRY[kind](**spec)


def kinds() -> list[str]:
    """Names of all model kinds."""
    _discover()
    return sorted(REGISTRY)


_CLASSES = {"LSA": "lsa", "SoftmaxAttention": "softmax", "GPT": "gpt", "EBT": "ebt"}


def __getattr__(name: str):
    """Lazy access to the model classes (``mesaopt.models.LSA``, ``GPT``, ...) without import cycles."""
    if name in _CLASSES:
        module = importlib.import_module(f"mesaopt.models.{_CLASSES[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'mesaopt.models' has no attribute {name!r}")
