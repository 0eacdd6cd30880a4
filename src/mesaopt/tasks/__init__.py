"""Task samplers. ``build(spec)`` rebuilds any task from its ``spec()`` dict."""

from __future__ import annotations

from mesaopt.registry import Registry
from mesaopt.tasks.base import Task, TaskBatch, sample_x
from mesaopt.tasks.linear import LinearRegression

REGISTRY: Registry[type[Task]] = Registry("task.kind must be one of {names}, got {name!r}", "mesaopt.tasks",
                                          default="linear")
REGISTRY.add("linear", LinearRegression)
register = REGISTRY.register  # class decorator: make a Task subclass buildable by its ``kind``


def build(spec: dict) -> Task:
    """Build a task from ``{"kind": ..., **fields}`` (kind defaults to linear); ConfigError names an unknown kind."""
    return REGISTRY.build(spec)


__all__ = ["Task", "TaskBatch", "LinearRegression", "build", "register", "sample_x"]
