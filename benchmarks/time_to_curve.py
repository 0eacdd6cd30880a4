"""Time to the Garg curve: wall time until a GPT's normalised error on d=20 linear regression is <= 0.05 at 40
in-context examples. Long (not in the default set): ``python -m benchmarks time-to-curve [--budget-s S]``.

Recipe (``RECIPE``, sessions 3-4; seed 0 reaches the target in 72 min, seed 1 in 112 min on one core): a narrow GPT
(6 layers, 4 heads, width 64; ~0.3M parameters) trained with AdamW (lr 5e-4, 200 warmup steps, no weight decay,
gradient clipping at 1) on the prefix objective, batch 64, fp32 (bf16 autocast is slower than fp32 on CPUs without
native bf16 matmul; see the ``gpt`` benchmark), with a *gated* Garg curriculum: stage k trains on 2 + k active
dimensions and 6 + 3k points (capped at 20 / 41) and advances once the training error per active dimension at the
late prefixes (>= 1.5 dims examples) has an exponential moving average below 0.15 (at least 100 steps per stage).
After the last stage the lr follows a cosine to 0.1x over 12000 steps. Higher learning rates (1e-3, 2e-3) and fixed,
fast ramps stay on the initial plateau (``PRE_SESSION3``). Every ``eval_every`` steps the normalised error (MSE / d)
at every prefix length is measured on a fixed 500-sequence evaluation batch and appended, with the wall time, to
``time_to_curve.jsonl`` in the output folder, so a run cut short still leaves its trajectory. The run stops when the
error is <= the target on the evaluation batch *and* on 4000 fresh sequences (the first dip of one fixed batch is
biased low), or at the budget. At every evaluation it atomically saves the weights, AdamW state, data-generator
state, curriculum stage and trajectory (``time_to_curve_model/``, safetensors + JSON; ``--resume`` continues from
there to the same numbers) and at the end it reports the fresh-sequence curve.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch

from benchmarks.common import machine, out_dir

RECIPE = {"d": 20, "points": 41, "layers": 6, "heads": 4, "width": 64, "batch": 64, "lr": 5e-4, "warmup": 200,
          "weight_decay": 0.0, "grad_clip": 1.0,
          "dims": {"start": 2, "end": 20, "inc": 1, "interval": 1},
          "curriculum_points": {"start": 6, "end": 41, "inc": 3, "interval": 1},
          "gate": {"threshold": 0.15, "min_steps": 100, "ema": 0.9},
          "decay": {"steps": 12000, "min_ratio": 0.1},
          "eval_every": 200, "eval_batch": 500, "at": 40, "seed": 0, "max_steps": 500_000}
QUICK = {**RECIPE, "d": 4, "points": 9, "layers": 1, "heads": 2, "width": 16, "batch": 16, "warmup": 2,
         "dims": {"start": 2, "end": 4, "inc": 1, "interval": 1},
         "curriculum_points": {"start": 5, "end": 9, "inc": 2, "interval": 1},
         "gate": {"threshold": 100.0, "min_steps": 2, "ema": 0.5}, "decay": {"steps": 3, "min_ratio": 0.1},
         "eval_every": 3, "eval_batch": 64, "fresh_batch": 64,
         "at": 8, "max_steps": 9}
PRE_SESSION3 = {"d": 20, "points": 41, "layers": 6, "heads": 2, "width": 64, "batch": 64, "lr": 1e-3, "warmup": 500,
                "dims": {"start": 5, "end": 20, "inc": 1, "interval": 200},
                "curriculum_points": {"start": 11, "end": 41, "inc": 2, "interval": 200},
                "eval_every": 200, "eval_batch": 1000, "at": 40, "seed": 0, "max_steps": 500_000}
"""The session-1/2 recipe (fixed 10x-compressed Garg ramps, lr 1e-3 / 2e-3): never left the plateau."""


def fit_extrapolation(traj: list[dict], target: float) -> dict | None:
    """Log-log linear fit of error vs wall time over the trajectory's last half (after the curriculum ends).

    Returns the slope and the predicted wall seconds at which the error reaches ``target`` (None if no trend).
    """
    pts = [(r["wall_s"], r["err_at"]) for r in traj if r.get("full_curriculum") and r["err_at"] > 0]
    pts = pts[len(pts) // 2:]
    if len(pts) < 3:
        return None
    xs = [math.log(t) for t, _ in pts]
    ys = [math.log(e) for _, e in pts]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return None
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var
    if slope >= 0:
        return {"slope": slope, "predicted_wall_s": None, "points_used": len(pts)}
    pred = math.exp(mx + (math.log(target) - my) / slope)
    return {"slope": round(slope, 4), "predicted_wall_s": round(pred, 1), "points_used": len(pts)}


class _Stages:
    """Curriculum and lr schedule of a recipe: fixed Garg ramps, or stages that advance when the model has learnt.

    Fixed (no ``gate`` in the recipe): ``dims`` and ``curriculum_points`` ramps as in Garg et al. Gated: stage k
    has ``dims.start + k * dims.inc`` active dimensions and ``curriculum_points.start + k * curriculum_points.inc``
    points (both capped); the stage advances once it has run ``gate.min_steps`` steps and an exponential moving
    average (factor ``gate.ema``) of the training error per active dimension at the prefixes with at least
    1.5 ``dims`` examples (the target is read at 2 ``dims``) is below ``gate.threshold``. The lr warms up
    linearly, stays constant, and after the full curriculum optionally follows a cosine over ``decay.steps`` to
    ``decay.min_ratio`` (then stays there).
    """

    def __init__(self, rc: dict, d: int, points: int) -> None:
        self.rc, self.d, self.points = rc, d, points
        self.gate = rc.get("gate")
        self.k, self.since, self.ema, self.full_step = 0, 0, None, None
        dm, pt = rc["dims"], rc["curriculum_points"]
        self.n_stages = max(-(-(dm["end"] - dm["start"]) // max(dm["inc"], 1)),
                            -(-(pt["end"] - pt["start"]) // max(pt["inc"], 1)))
        if not self.gate:
            self.full_step = self.n_stages * max(dm["interval"], pt["interval"]) + 1

    def at(self, step: int) -> tuple[int, int]:
        """(active dims, points) for 1-based ``step``."""
        dm, pt = self.rc["dims"], self.rc["curriculum_points"]
        if self.gate:
            k = self.k
            return (min(dm["start"] + dm["inc"] * k, dm["end"], self.d),
                    min(pt["start"] + pt["inc"] * k, pt["end"], self.points))
        return (min(dm["start"] + dm["inc"] * ((step - 1) // dm["interval"]), dm["end"], self.d),
                min(pt["start"] + pt["inc"] * ((step - 1) // pt["interval"]), pt["end"], self.points))

    def observe(self, step: int, err: torch.Tensor, dims: int) -> None:
        """Feed the step's squared errors (B, T); advances a gated curriculum."""
        if not self.gate or self.full_step is not None:
            return
        lo = min(err.shape[1] - 1, (3 * dims) // 2)
        e = err[:, lo:].mean().item() / dims
        a = self.gate.get("ema", 0.9)
        self.ema = e if self.ema is None else a * self.ema + (1 - a) * e
        self.since += 1
        if self.since >= self.gate.get("min_steps", 100) and self.ema < self.gate["threshold"]:
            self.k, self.since, self.ema = self.k + 1, 0, None
            if self.k >= self.n_stages:
                self.full_step = step + 1

    def state(self) -> dict:
        """JSON-able progress (stage index, steps in it, moving average, step the full task began)."""
        return {"k": self.k, "since": self.since, "ema": self.ema, "full_step": self.full_step}

    def load(self, state: dict) -> None:
        """Restore the progress saved by ``state()`` (resuming a run)."""
        self.k, self.since, self.ema, self.full_step = state["k"], state["since"], state["ema"], state["full_step"]

    def full(self, step: int) -> bool:
        """Whether ``step`` trained on the full task (all dims, all points)."""
        return self.full_step is not None and step >= self.full_step

    def lr_factor(self, step: int) -> float:
        """Multiplier of the peak lr at 1-based ``step``."""
        warm = self.rc.get("warmup", 0)
        if step <= warm:
            return step / warm
        dec = self.rc.get("decay")
        if not dec or self.full_step is None or step < self.full_step:
            return 1.0
        p = min(1.0, (step - self.full_step) / dec["steps"])
        m = dec.get("min_ratio", 0.1)
        return m + (1 - m) * 0.5 * (1 + math.cos(math.pi * p))


def run(quick: bool = False, out: str | Path | None = None, budget_s: float = 7200.0, target: float = 0.05,
        plot: bool = True, recipe: dict | None = None, progress: bool = False, seed: int | None = None,
        resume: bool = False, ckpt_every: int = 1) -> dict:
    """Train with the recipe until err@40 <= target or the budget ends; returns trajectory, time and extrapolation.

    ``seed`` overrides the recipe's seed. A checkpoint (model, AdamW, data generator, curriculum, trajectory) is
    written atomically every ``ckpt_every`` evaluations; ``resume=True`` continues from it (the wall time and the
    budget count the earlier segments too) and gives the same numbers as an uninterrupted run.
    """
    import mesaopt as mo
    from mesaopt.models.gpt import GPT
    from mesaopt.train.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
    from mesaopt.train.curriculum import zero_inactive_dims

    rc = dict(recipe or (QUICK if quick else RECIPE))
    if seed is not None:
        rc["seed"] = seed
    out = out_dir(out)
    log = out / ("time_to_curve-quick.jsonl" if quick else "time_to_curve.jsonl")
    ck_dir = out / ("time_to_curve_model-quick" if quick else "time_to_curve_model")
    d, points = rc["d"], rc["points"]
    task = mo.tasks.LinearRegression(d=d)
    model = GPT(d=d, n_positions=points, layers=rc["layers"], heads=rc["heads"], width=rc["width"], seed=rc["seed"])
    opt = torch.optim.AdamW(model.parameters(), lr=rc["lr"], weight_decay=rc.get("weight_decay", 0.01))
    gen = torch.Generator().manual_seed(rc["seed"])
    eb = task.sample(rc["eval_batch"], points, torch.Generator().manual_seed(10_000 + rc["seed"]))
    stage = _Stages(rc, d, points)
    traj: list[dict] = []
    reached, step, train_s, wall0 = None, 0, 0.0, 0.0
    resumed = resume and find_checkpoint(ck_dir, repair=True) is not None
    if resumed:
        st = load_checkpoint(ck_dir, model=model, optimizer=opt, generators={"data": gen}, restore_torch_rng=True)
        ex = st["extra"]
        saved = {k: v for k, v in ex.get("recipe", {}).items() if k != "max_steps"}
        if saved != {k: v for k, v in rc.items() if k != "max_steps"}:
            diff = sorted(k for k in set(saved) | set(rc) if k != "max_steps" and saved.get(k) != rc.get(k))
            raise ValueError(f"resume: the checkpoint in '{ck_dir}' was trained with a different recipe "
                             f"(fields {diff}); use another --out or drop --resume")
        step, train_s, wall0, traj = st["step"], ex["train_s"], ex["wall_s"], ex["trajectory"]
        stage.load(ex["stage"])
        reached = next((r for r in traj if r.get("err_at_fresh", math.inf) <= target), None)
        if progress:
            print(f"resumed at step {step} ({wall0:.0f}s so far)", file=sys.stderr, flush=True)
    log.write_text("".join(json.dumps(r) + "\n" for r in traj))

    def checkpoint() -> Path:
        return save_checkpoint(ck_dir, model, step, optimizer=opt, task=task, generators={"data": gen},
                               extra={"benchmark": "time-to-curve", "recipe": rc, "stage": stage.state(),
                                      "train_s": train_s, "wall_s": round(time.perf_counter() - t0, 2),
                                      "trajectory": traj})

    t0 = time.perf_counter() - wall0
    while reached is None and step < rc["max_steps"]:
        step += 1
        ts = time.perf_counter()
        for grp in opt.param_groups:
            grp["lr"] = rc["lr"] * stage.lr_factor(step)
        dims, pts = stage.at(step)
        b = zero_inactive_dims(task, task.sample(rc["batch"], pts, gen), dims)
        err = (model.prefix(b.xs, b.ys) - b.ys).pow(2)
        loss = err.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if rc.get("grad_clip"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), rc["grad_clip"])
        opt.step()
        stage.observe(step, err.detach(), dims)
        train_s += time.perf_counter() - ts
        wall = time.perf_counter() - t0
        if step % rc["eval_every"] == 0 or wall >= budget_s:
            model.eval()
            with torch.no_grad():
                curve = ((model.prefix(eb.xs, eb.ys) - eb.ys).pow(2).mean(0) / d).tolist()
            model.train()
            rec = {"step": step, "wall_s": round(time.perf_counter() - t0, 2), "train_s": round(train_s, 2),
                   "train_loss": loss.detach().item(), "dims": dims, "points": pts, "lr": opt.param_groups[0]["lr"],
                   "err_at": curve[rc["at"]], "err_curve": [round(e, 5) for e in curve],
                   "full_curriculum": stage.full(step)}
            if rec["full_curriculum"] and rec["err_at"] <= target:
                # confirm on the fresh set: stopping at the first dip of one fixed batch is biased low
                rec["err_at_fresh"] = _fresh_curve(model, task, rc)[rc["at"]]
                rec["wall_s"] = round(time.perf_counter() - t0, 2)
            traj.append(rec)
            with log.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            if progress:
                print(f"step {step} {rec['wall_s']:.0f}s dims {dims} pts {pts} loss {rec['train_loss']:.3f} "
                      f"err@{rc['at']} {rec['err_at']:.4f}"
                      + (f" fresh {rec['err_at_fresh']:.4f}" if "err_at_fresh" in rec else ""),
                      file=sys.stderr, flush=True)
            if rec.get("err_at_fresh", math.inf) <= target:
                reached = rec
                break
            if wall >= budget_s:
                break
            if ckpt_every and len(traj) % ckpt_every == 0:
                checkpoint()
    ckpt = checkpoint()
    fresh = _fresh_curve(model, task, rc)
    res = {"benchmark": "time-to-curve", "recipe": rc, "target": target, "budget_s": budget_s,
           "reached": reached is not None, "time_to_target_s": reached["wall_s"] if reached else None,
           "steps": step, "s_per_step": round(train_s / max(step, 1), 4),
           "final_err_at": traj[-1]["err_at"] if traj else None, "machine": machine(),
           "extrapolation": None if reached else fit_extrapolation(traj, target),
           "trajectory": [{k: r[k] for k in ("step", "wall_s", "err_at", "train_loss")} for r in traj],
           "final_err_at_fresh": fresh[rc["at"]], "final_curve_fresh": [round(e, 5) for e in fresh],
           "fresh_sequences": rc.get("fresh_batch", 4000), "model": str(ckpt), "log": str(log),
           "resumed_at_step": int(st["step"]) if resumed else None}
    if plot and traj:
        res["plot"] = str(_plot(traj, target, rc["at"], out, quick, fresh=fresh))
    return res


def _fresh_curve(model, task, rc: dict) -> list[float]:
    """Normalised error per prefix length (T,) of the final model on ``fresh_batch`` new sequences (own seed)."""
    gen = torch.Generator().manual_seed(20_000 + rc["seed"])
    n, chunk, total = rc.get("fresh_batch", 4000), 500, None
    model.eval()
    with torch.no_grad():
        for i in range(0, n, chunk):
            b = task.sample(min(chunk, n - i), rc["points"], gen)
            s = (model.prefix(b.xs, b.ys) - b.ys).pow(2).sum(0)
            total = s if total is None else total + s
    return (total / (n * rc["d"])).tolist()


def _plot(traj: list[dict], target: float, at: int, out: Path, quick: bool, fresh: list[float] | None = None) -> Path:
    import matplotlib.pyplot as plt

    from mesaopt.plotting import paper_style, save_figure

    paper_style()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    a1.plot([r["wall_s"] / 60 for r in traj], [r["err_at"] for r in traj], "o-", ms=3)
    a1.axhline(target, color="k", ls=":", label=f"target {target}")
    full = [r["wall_s"] / 60 for r in traj if r.get("full_curriculum")]
    if full:
        a1.axvline(full[0], color="grey", ls="--", lw=1, label="curriculum done (all dims, all points)")
    a1.set(xlabel="wall minutes", ylabel=f"normalised error at N={at}", yscale="log", title="time to the curve")
    a1.legend()
    last = traj[-1]["err_curve"]
    a2.plot(range(len(last)), last, label=f"step {traj[-1]['step']} (eval batch)")
    if fresh is not None:
        a2.plot(range(len(fresh)), fresh, "--", label="same model, 4000 fresh sequences")
    a2.axhline(target, color="k", ls=":")
    a2.set(xlabel="in-context examples N", ylabel="normalised error", yscale="log", title="latest curve")
    a2.legend()
    stem = out / ("time_to_curve-quick" if quick else "time_to_curve")
    save_figure(fig, stem)
    return stem.with_suffix(".png")
