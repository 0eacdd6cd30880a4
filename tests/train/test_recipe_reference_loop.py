"""The one trainer against a hand-written training loop (the session-4 time-to-curve loop, reduced to its math):
same GPT init, same data stream, AdamW, warmup, gradient clipping, a gated curriculum and a cosine after it.

The reference below re-implements, independently of ``mesaopt.train``, everything the garg-d20 recipe does per step:
stage k has 2 + k active dims and 5 + 2k points; a stage advances once it ran ``MIN_STEPS`` steps and the EMA of
the training error per active dim at prefixes >= 1.5 dims examples is below the threshold; the lr warms up as
step / warmup, then stays at the peak until the first full-task step F, then follows
m + (1 - m) (1 + cos(pi min(1, (step - F) / decay))) / 2. The trainer must give the same losses, step for step,
bit for bit (CPU, fp32), and the same final weights.
"""

from __future__ import annotations

import math

import pytest
import torch

from mesaopt.models.gpt import GPT
from mesaopt.seeding import generator
from mesaopt.tasks import LinearRegression
from mesaopt.train import TrainConfig, train
from mesaopt.train.curriculum import Curriculum, Gate, Ramp

D, POINTS, STEPS, WARMUP, LR, DECAY, FLOOR = 4, 9, 70, 5, 3e-3, 20, 0.1
MIN_STEPS, EMA = 4, 0.5


def _model() -> GPT:
    return GPT(d=D, n_positions=POINTS, layers=1, heads=2, width=16, seed=3)


def _reference(threshold: float) -> tuple[list[float], int | None, GPT]:
    """The recipe as a plain loop: (loss per step, first full-task step list, trained model)."""
    task, model = LinearRegression(d=D), _model()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    gen = generator(0, "train")
    k, since, ema, full = 0, 0, None, None
    n_stages = max(D - 2, math.ceil((POINTS - 5) / 2))
    losses = []
    for step in range(1, STEPS + 1):
        if step <= WARMUP:
            f = step / WARMUP
        elif full is None or step < full:
            f = 1.0
        else:
            f = FLOOR + (1 - FLOOR) * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - full) / DECAY)))
        for g in opt.param_groups:
            g["lr"] = LR * f
        dims, pts = min(2 + k, D), min(5 + 2 * k, POINTS)
        b = task.sample(16, pts, gen)
        xs = b.xs.clone()
        xs[..., dims:] = 0
        # labels of the zeroed inputs: subtract the inactive coordinates' part (noise-free task)
        ys = b.ys - torch.einsum("btd,bd->bt", b.xs[..., dims:], b.params["w"][:, dims:])
        err = (model.prefix(xs, ys) - ys).pow(2)
        loss = err.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if full is None:
            e = err.detach()[:, min(err.shape[1] - 1, (3 * dims) // 2):].mean().item() / dims
            ema = e if ema is None else EMA * ema + (1 - EMA) * e
            since += 1
            if since >= MIN_STEPS and ema < threshold:
                k, since, ema = k + 1, 0, None
                if k >= n_stages:
                    full = step + 1
    return losses, full, model


@pytest.mark.parametrize("threshold", [0.8, 1.0, 3.0])  # stages end on the EMA (0.8), both, on min_steps (3)
def test_trainer_equals_a_hand_written_recipe_loop(threshold):
    ref_losses, ref_full, ref_model = _reference(threshold)
    assert ref_full is not None and ref_full < STEPS - DECAY // 2, "the reference must finish its curriculum"
    cfg = TrainConfig(steps=STEPS, batch_size=16, n_points=POINTS, lr=LR, optimizer="adamw", weight_decay=0.0,
                      warmup_steps=WARMUP, grad_clip=1.0, objective="prefix", loss="mse",
                      schedule="cosine_after_curriculum", decay_steps=DECAY, min_lr_ratio=FLOOR,
                      curriculum=Curriculum(mode="gated", dims=Ramp(start=2, end=D, inc=1),
                                            points=Ramp(start=5, end=POINTS, inc=2),
                                            gate=Gate(threshold=threshold, min_steps=MIN_STEPS, ema=EMA, late=1.5)),
                      log_every=1, eval_every=0, ckpt_every=0, seed=0)
    res = train(_model(), LinearRegression(d=D), cfg)
    got = [h["loss"] for h in res.history if "loss" in h]
    assert res.curriculum_complete_step == ref_full
    assert got == ref_losses
    for (name, p), q in zip(res.model.named_parameters(), ref_model.parameters(), strict=True):
        assert torch.equal(p, q), name
