"""The shared small mechanisms: ``runtime.threads`` and ``registry.Registry``."""

from __future__ import annotations

import pytest
import torch

from mesaopt import models, tasks
from mesaopt.errors import ConfigError
from mesaopt.registry import Registry
from mesaopt.runtime import threads


def test_threads_sets_and_restores():
    before = torch.get_num_threads()
    with threads(1) as n:
        assert n == 1 == torch.get_num_threads()
    assert torch.get_num_threads() == before
    with threads(None) as n:
        assert n == before
    with pytest.raises(RuntimeError), threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_registry_build_get_and_unknown():
    reg: Registry[type] = Registry("thing must be one of {names}, got {name!r}", default="a")

    @reg.register
    class A:
        kind = "a"

        def __init__(self, x: int = 0) -> None:
            self.x = x

    assert "a" in reg and reg["a"] is A and reg.names() == ["a"] and len(reg) == 1
    assert reg.build({"x": 3}).x == 3 and isinstance(reg.build({"kind": "a"}), A)
    with pytest.raises(ConfigError, match=r"thing must be one of \['a'\], got 'b'"):
        reg.get("b")


def test_package_registries_discover_their_modules():
    assert {"lsa", "gpt"} <= set(models.kinds())
    assert tasks.build({"kind": "linear", "d": 3}).d == 3 and tasks.build({"d": 2}).d == 2
    with pytest.raises(ConfigError, match="task.kind must be one of"):
        tasks.build({"kind": "nope"})
