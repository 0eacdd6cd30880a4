"""Opt-in fast training paths: bf16 autocast (fp32 master weights) and torch.compile give the eager numbers."""

from __future__ import annotations

import pytest
import torch

import mesaopt as mo
from mesaopt.errors import ConfigError
from mesaopt.models.gpt import GPT
from mesaopt.models.lsa import LSA
from mesaopt.train import TrainConfig, train
from mesaopt.train.loop import make_loss_fn


def _cfg(**kw) -> dict:
    return {"steps": 6, "batch_size": 16, "n_points": 9, "lr": 1e-2, "eval_every": 0, "eval_batch_size": 32,
            "log_every": 1, **kw}


def _losses(res) -> list[float]:
    return [r["loss"] for r in res.history if "loss" in r]


def test_amp_requires_float32_master_weights():
    with pytest.raises((ConfigError, ValueError)):
        TrainConfig(amp="bf16", dtype="float64")
    with pytest.raises((ConfigError, ValueError)):
        TrainConfig(amp="fp16")


def test_bf16_autocast_keeps_fp32_weights_and_tracks_fp32_loss():
    task = mo.tasks.LinearRegression(d=4)
    runs = {}
    for amp in (None, "bf16"):
        m = GPT(d=4, n_positions=9, layers=1, heads=2, width=16, seed=0)
        runs[amp] = train(m, task, _cfg(amp=amp, objective="prefix"), progress=False)
        assert all(p.dtype == torch.float32 for p in m.parameters())
    a, b = _losses(runs[None]), _losses(runs["bf16"])
    assert a != b  # autocast really ran in bf16
    for x, y in zip(a, b, strict=True):
        assert abs(x - y) <= 0.05 * abs(x)


def test_autocast_runs_linear_layers_in_bf16():
    m = GPT(d=4, n_positions=9, layers=1, heads=2, width=16, seed=0)
    seen = []
    hook = m.read_out.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    batch = mo.tasks.LinearRegression(d=4).sample(2, 9, torch.Generator().manual_seed(0))
    make_loss_fn(m, TrainConfig(**_cfg(amp="bf16", objective="prefix")))(batch)
    hook.remove()
    assert seen == [torch.bfloat16]


@pytest.mark.slow
def test_compile_gives_eager_numbers():
    task = mo.tasks.LinearRegression(d=3)
    runs = {}
    for comp in (False, True):
        m = LSA(d=3, layers=2, heads=1, init_std=0.1, seed=0)
        runs[comp] = train(m, task, _cfg(compile=comp, objective="prefix", steps=4), progress=False)
    torch.testing.assert_close(torch.tensor(_losses(runs[True])), torch.tensor(_losses(runs[False])),
                               rtol=1e-4, atol=1e-6)
    sd_c, sd_e = runs[True].model.state_dict(), runs[False].model.state_dict()
    for k in sd_e:
        torch.testing.assert_close(sd_c[k], sd_e[k], rtol=1e-4, atol=1e-6)
