"""Models that are learners. ``build(spec)`` rebuilds any model from its ``spec()`` dict.

Every model class sets a class attribute ``kind`` and implements ``spec() -> dict`` (JSON-able
constructor arguments plus ``"kind"``) so that checkpoints store the config next to the weights.
"""

from __future__ import annotations

import importlib

import torch

from mesaopt.registry import Registry

REGISTRY: Registry[type[torch.nn.Module]] = Registry("model.kind must be one of {names}, got {name!r}",
                                                     "mesaopt.models")
register = REGISTRY.register  # class decorator: make a model class buildable from {"kind": cls.kind, ...}


def build(spec: dict) -> torch.nn.Module:
    """Build a model from ``{"kind": ..., **kwargs}``; ConfigError names an unknown kind."""
    return REGISTRY.build(spec)


def kinds() -> list[str]:
    """Names of all model kinds."""
    return REGISTRY.names()


_CLASSES = {"LSA": "lsa", "SoftmaxAttention": "softmax", "GPT": "gpt", "EBT": "ebt", "FeatureLSA": "feature_lsa"}


def __getattr__(name: str):
    """Lazy access to the model classes (``mesaopt.models.LSA``, ``GPT``, ...) without import cycles."""
    if name in _CLASSES:
        module = importlib.import_module(f"mesaopt.models.{_CLASSES[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'mesaopt.models' has no attribute {name!r}")
