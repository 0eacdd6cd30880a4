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


_AVX2_ONLY = ("processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma\n\n"
              "processor\t: 1\nflags\t\t: fpu sse sse2 avx avx2 fma\n")
_BF16 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n"
_AMX = "processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile amx_int8\n"


def test_native_bf16_reads_the_cpu_flags():
    from mesaopt.runtime import native_bf16

    assert not native_bf16(_AVX2_ONLY) and native_bf16(_BF16) and native_bf16(_AMX)
    assert not native_bf16("model name\t: avx512_bf16 in a model name is not a flag\n")
    assert isinstance(native_bf16(), bool)


def test_amp_auto_follows_the_cpu(monkeypatch):
    import torch

    from mesaopt import runtime
    from mesaopt.models.gpt import GPT
    from mesaopt.tasks import LinearRegression
    from mesaopt.train import TrainConfig
    from mesaopt.train.objective import make_loss_fn

    assert runtime.resolve_amp("bf16") == "bf16" and runtime.resolve_amp(None) is None
    assert runtime.resolve_amp("auto", "cuda") is None
    model, batch = GPT(d=3, n_positions=6, layers=1, heads=1, width=8, seed=0), LinearRegression(d=3).sample(
        4, 6, torch.Generator().manual_seed(0))
    cfg = TrainConfig(amp="auto", n_points=6, steps=1)
    seen = {}
    for has in (False, True):
        monkeypatch.setattr(runtime, "native_bf16", lambda has=has: has)
        assert runtime.resolve_amp("auto") == ("bf16" if has else None)
        lin = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
        hook = lin.register_forward_hook(lambda m, i, o, has=has: seen.__setitem__(has, o.dtype))
        make_loss_fn(model, cfg)(batch)
        hook.remove()
    assert seen == {False: torch.float32, True: torch.bfloat16}  # autocast on only where the CPU has bf16
