"""Time to the Garg curve: wall time until the d=20 GPT's normalised error at 40 in-context examples is <= 0.05,
confirmed on fresh sequences drawn anew at every check. Long (not in the default set):
``python -m benchmarks time-to-curve [--threads 1] [--seed S] [--max-steps N] [--resume] [--out DIR]``.

This is a thin caller of the ``garg-d20`` experiment (``mesaopt run garg-d20``), whose default config is the
recipe (``mesaopt.experiments.garg_d20.recipe``) and whose trainer (``mesaopt.train.train``: gated curriculum,
cosine after the curriculum, fresh-data stop rule, resume) does all the work. The benchmark only times it: it
runs the experiment into ``OUT/garg-d20-seed{S}/`` (a normal run folder; ``--resume`` continues it with the
same numbers as an uninterrupted run) and reports the wall time and steps to the target, seconds per step, the
trajectory of the eval-batch error from ``metrics.jsonl`` and, when the target was not met, a log-log
extrapolation of the time to reach it.
"""

from __future__ import annotations

import math
from pathlib import Path

from benchmarks.common import machine, out_dir

EXPERIMENT = "garg-d20"


def fit_extrapolation(traj: list[dict], target: float) -> dict | None:
    """Log-log linear fit of error vs wall time over the trajectory's last half (after the curriculum ends).

    ``traj`` rows have ``wall_s``, ``err_at`` and ``full_curriculum``. Returns the slope and the predicted wall
    seconds at which the error reaches ``target`` (None if there are fewer than 3 points or no spread in time).
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


def trajectory(history: list[dict]) -> list[dict]:
    """The eval records of a garg-d20 ``metrics.jsonl``: step, wall_s, err_at (eval batch), fresh check, curriculum."""
    return [{"step": r["step"], "wall_s": r["wall"], "err_at": r["stop_err"],
             "err_at_fresh": r.get("stop_err_fresh"), "full_curriculum": bool(r.get("curriculum_complete")),
             "train_loss": r.get("loss")} for r in history if "stop_err" in r]


def run(quick: bool = False, out: str | Path | None = None, target: float = 0.05, plot: bool = True,
        progress: bool = False, seed: int = 0, resume: bool = False, max_steps: int | None = None,
        threads: int | None = 1) -> dict:
    """Run (or ``resume``) ``garg-d20`` with ``seed`` into ``out/garg-d20-seed{seed}[-quick]``; return the report.

    ``target`` and ``max_steps`` override ``train.stop.target`` / ``train.steps``; ``threads`` the run's torch
    threads (1: the other core can run another seed).
    """
    import mesaopt as mo
    from mesaopt.io import read_jsonl

    folder = out_dir(out) / (f"{EXPERIMENT}-seed{seed}" + ("-quick" if quick else ""))
    # the same overrides on --resume: the run refuses a config that differs from the saved one
    overrides: dict = {"seed": seed, "threads": threads, "train.stop.target": target}
    if max_steps is not None:
        overrides["train.steps"] = max_steps
    res = mo.experiments.run(EXPERIMENT, overrides=overrides or None, out=folder, quick=quick, resume=resume,
                             progress=progress)
    m = res.metrics
    traj = trajectory(read_jsonl(folder / "metrics.jsonl"))
    stop = res.config["train"]["stop"]
    at = stop["at"]
    reached = bool(m["reached"])
    report = {"benchmark": "time-to-curve", "experiment": EXPERIMENT, "run": str(folder), "seed": res.seed,
              "target": stop["target"], "at": at, "reached": reached,
              "time_to_target_s": m["wall_s_to_target"] if reached else None,
              "steps": int(m["steps"]), "steps_to_target": int(m["steps_to_target"]) if reached else None,
              "s_per_step": round(m["train_wall_s"] / max(m["steps"], 1), 4),
              "curriculum_complete_step": m["curriculum_complete_step"],
              "final_err_at_fresh": m[f"err_at_{at}"], "fresh_sequences": res.config["eval_sequences"],
              "extrapolation": None if reached else fit_extrapolation(traj, stop["target"]),
              "trajectory": traj, "machine": machine()}
    if plot:
        report["plot"] = str(folder / "trajectory.png")
    return report
