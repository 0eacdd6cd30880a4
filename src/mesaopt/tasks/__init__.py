"""Task samplers. ``build(spec)`` rebuilds any task from its ``spec()`` dict."""

from __future__ import annotations

from mesaopt.errors import ConfigError
from mesaopt.tasks.base import Task, TaskBatch, sample_x
from mesaopt.tasks.linear import LinearRegression

REGISTRY: dict[str, type[Task]] = {"linear": LinearRegression}


def register(cls: type[Task]) -> type[Task]:
    """Class decorator: make a Task subclass buildable by its ``kind``."""
    REGISTRY[cls.kind] = cls
    return cls


def build(spec: dict) -> Task:
    """Build a task from ``{"kind": ..., **fields}``; ConfigError names an unknown kind."""
    spec = dict(spec)
    kind = spec.pop("kind", "linear")
    _load_optional()
    if kind not in REGISTRY:
        raise ConfigError(f"task.kind must be one of {sorted(REGISTRY)}, got {kind!r}")
    return REGISTRY[kind](**spec)


def _load_optional() -> None:
    """Import the other task families so that they register themselves."""
    import importlib
    import pkgutil

    import mesaopt.tasks as pkg

    for m in pkgutil.iter_modules(pkg.__path__):
        if m.name not in ("base", "linear"):
            importlib.import_module(f"mesaopt.tasks.{m.name}")


__all__ = ["Task", "TaskBatch", "LinearRegression", "build", "register", "sample_x"]
