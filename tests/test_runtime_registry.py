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


def test_loss_curve_axes_and_path(tmp_path):
    import json

    from mesaopt import plotting

    p = tmp_path / "metrics.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0, "eval_loss": 0.5},
                                                   {"step": 4, "eval_loss": 0.25}]) + "\n")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    assert plotting.loss_curve(ax, p, ["eval_loss", "loss"]) is ax
    (ev, tr) = ax.get_lines()
    assert list(ev.get_xdata()) == [2, 4] and list(tr.get_ydata()) == [2.0, 1.0] and ax.get_yscale() == "log"
    plt.close(fig)
    plotting.loss_curve(tmp_path / "loss", p)
    assert (tmp_path / "loss.png").is_file() and (tmp_path / "loss.pdf").is_file()
