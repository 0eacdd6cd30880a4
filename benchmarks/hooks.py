"""Hook points: cost of a training step with hook points vs the same model with hooks disabled, per model family.

Four variants (and an A/A control) of one AdamW training step (forward + backward + update) on the same model
and batch, timed round-robin in the same process:

* ``disabled``: no hook active, the model's ordinary (fused) path -- what training runs;
* ``idle``: the hooked path with every hook point called but no function attached (``with model.hooks():``);
* ``noop``: the hooked path with a function that returns None attached to every hook point but ``hook_pattern``;
* ``unfused``: the same on every hook point, ``hook_pattern`` included -- GPT and EBT then form the attention
  pattern explicitly instead of calling fused SDPA (the path ``run_with_cache`` takes).

Ratios ``idle / disabled`` and ``noop / disabled`` are the overhead of having hook points in the step (target
<= 1.02 for the token-level models); ``unfused / disabled`` is the price of materialising the pattern.
LSA's hooked path is a different algorithm (per-token keys, values and an N x N linear pattern instead of the
(D, D) statistic), so its ratio is the price of materialising them, paid only while hooks are active.
The ``disabled`` path differs from the pre-hook code by one attribute check per call;
``flag_check_fraction`` is that check's measured cost as a fraction of the disabled step, and
``idle_calls_fraction`` = (hook-point calls per hooked step) x (cost of one idle call) / (disabled step): the
load-independent part of the ``idle`` overhead. ``control`` repeats
``disabled`` at the end of every round: ``ratio_control`` (ideally 1) shows the timing noise of the run.
"""

from __future__ import annotations

import contextlib
import timeit
from pathlib import Path

import torch

from benchmarks.common import compare

FULL = {"repeats": 7, "min_time": 1.0, "models": {
    "lsa": {"kind": "lsa", "d": 10, "layers": 4, "heads": 1, "b": 2048, "n": 10, "q": 1},
    "softmax": {"kind": "softmax", "d": 10, "layers": 2, "heads": 2, "b": 512, "n": 20, "q": 1},
    "gpt": {"kind": "gpt", "d": 20, "n_positions": 41, "layers": 12, "heads": 8, "width": 256, "b": 64, "n": 40,
            "q": 1},
    "ebt": {"kind": "ebt", "d": 5, "dim": 64, "layers": 2, "heads": 4, "steps": 4, "b": 128, "n": 20, "q": 4},
}}
QUICK = {"repeats": 2, "min_time": 0.0, "models": {
    "lsa": {"kind": "lsa", "d": 3, "layers": 2, "heads": 1, "b": 16, "n": 5, "q": 1},
    "softmax": {"kind": "softmax", "d": 3, "layers": 1, "heads": 1, "b": 16, "n": 5, "q": 1},
    "gpt": {"kind": "gpt", "d": 3, "n_positions": 6, "layers": 1, "heads": 2, "width": 16, "b": 8, "n": 5, "q": 1},
    "ebt": {"kind": "ebt", "d": 3, "dim": 16, "layers": 1, "heads": 2, "steps": 2, "b": 8, "n": 5, "q": 2},
}}


def _setup(cfg: dict):
    """(model, step closures per variant) for one model config."""
    from mesaopt import models

    spec = {k: v for k, v in cfg.items() if k not in ("b", "n", "q")}
    m = models.build(spec)
    m.train()
    g = torch.Generator().manual_seed(0)
    b, n, q, d = cfg["b"], cfg["n"], cfg["q"], cfg["d"]
    cx, cy = torch.randn(b, n, d, generator=g), torch.randn(b, n, generator=g)
    qx, qy = torch.randn(b, q, d, generator=g), torch.randn(b, q, generator=g)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-5)

    def noop(x: torch.Tensor, name: str) -> None:
        return None

    def step(ctx) -> None:
        with ctx():
            loss = (m(cx, cy, qx) - qy).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    fns = {"disabled": lambda: step(contextlib.nullcontext), "idle": lambda: step(m.hooks),
           "noop": lambda: step(lambda: m.hooks([(lambda name: not name.endswith("hook_pattern"), noop)])),
           "unfused": lambda: step(lambda: m.hooks([(lambda name: True, noop)])),
           "control": lambda: step(contextlib.nullcontext)}  # ``disabled`` again, last in each round: A/A noise
    return m, fns


def _calls_per_step(m, fns: dict) -> int:
    """How many hook-point calls one hooked training step makes (counted with a hook on every point)."""
    count = [0]

    def tick(x: torch.Tensor, name: str) -> None:
        count[0] += 1

    m.add_hook(lambda name: True, tick)
    try:
        fns["disabled"]()  # persistent hooks: the plain call takes the hooked path
    finally:
        m.reset_hooks()
    return count[0]


def run(quick: bool = False, out: str | Path | None = None, peaks: dict | None = None, plot: bool = True) -> dict:
    """Step times and overhead ratios of hook points per model family; returns the JSON dict."""
    cfg = QUICK if quick else FULL
    rows = {}
    for name, mcfg in cfg["models"].items():
        m, fns = _setup(mcfg)
        secs = compare(fns, repeats=cfg["repeats"], warmup=1, min_time=cfg["min_time"])
        n_check = 200_000
        check_s = timeit.timeit(lambda m=m: m.hooks_active, number=n_check) / n_check
        calls = _calls_per_step(m, fns)
        hp, x = next(iter(m.hook_dict().values())), torch.zeros(1)
        idle_call_s = timeit.timeit(lambda hp=hp, x=x: hp(x), number=n_check) / n_check
        rows[name] = {"shape": mcfg, "hook_points": len(m.hook_names()),
                      **{f"{k}_s": round(v, 6) for k, v in secs.items()},
                      "ratio_idle": round(secs["idle"] / secs["disabled"], 4),
                      "ratio_noop": round(secs["noop"] / secs["disabled"], 4),
                      "ratio_unfused": round(secs["unfused"] / secs["disabled"], 4),
                      "ratio_control": round(secs["control"] / secs["disabled"], 4),
                      "flag_check_fraction": float(f"{4 * check_s / secs['disabled']:.3g}"),  # <= 4 checks a step
                      "hook_calls_per_step": calls, "idle_call_s": float(f"{idle_call_s:.3g}"),
                      "idle_calls_fraction": float(f"{calls * idle_call_s / secs['disabled']:.3g}")}
    return {"rows": rows, "target_ratio": 1.02}
