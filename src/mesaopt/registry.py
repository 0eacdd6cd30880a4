"""One registry mechanism for models, tasks, algorithms and experiments: name -> entry, ``build(spec)``."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from mesaopt.errors import ConfigError

T = TypeVar("T")
C = TypeVar("C", bound=type)


class Registry(Generic[T]):
    """Entries by name; the modules of ``package`` are imported on first lookup so that they register.

    ``unknown`` is the one-line ConfigError for a missing name, formatted with ``{name}``, ``{names}`` (the
    sorted known names) and ``{joined}`` (them joined by commas). Mapping-style ``name in reg``,
    ``reg[name]`` and ``sorted(reg)`` see only what is registered so far (no discovery).
    """

    def __init__(self, unknown: str, package: str | None = None, default: str | None = None) -> None:
        self.unknown = unknown
        self.package = package
        self.default = default
        self._entries: dict[str, T] = {}
        self._discovered = package is None

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` as ``name`` (a later registration of the same name replaces it)."""
        self._entries[name] = entry
        return entry

    def register(self, cls: C) -> C:
        """Class decorator: register ``cls`` under its class attribute ``kind``."""
        self.add(cls.kind, cls)
        return cls

    def _discover(self) -> None:
        if self._discovered:
            return
        self._discovered = True
        pkg = importlib.import_module(self.package)
        for m in pkgutil.iter_modules(pkg.__path__):
            if not m.name.startswith("_"):
                importlib.import_module(f"{self.package}.{m.name}")

    def names(self) -> list[str]:
        """Sorted names of every entry (after discovery)."""
        self._discover()
        return sorted(self._entries)

    def get(self, name: Any) -> T:
        """The entry called ``name``; the ``unknown`` ConfigError otherwise."""
        self._discover()
        if name not in self._entries:
            known = sorted(self._entries)
            raise ConfigError(self.unknown.format(name=name, names=known, joined=", ".join(known)))
        return self._entries[name]

    def build(self, spec: dict) -> Any:
        """``entry(**fields)`` for ``spec = {"kind": name, **fields}`` (``kind`` defaults to ``default``)."""
        fields = dict(spec)
        entry = self.get(fields.pop("kind", self.default))
        return entry(**fields)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)
