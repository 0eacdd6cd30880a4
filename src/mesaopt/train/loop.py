"""The training loop: fit any learner model on any task with a fixed eval batch, checkpoints, resume, NaN guard."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.progress import Progress

from mesaopt.config import validate
from mesaopt.errors import CheckpointError, ConfigError, TrainingDiverged
from mesaopt.io import append_jsonl, atomic_write_text, read_jsonl, to_json
from mesaopt.seeding import derive_seed, generator
from mesaopt.train.checkpoint import (
    CKPT_DIR,
    find_checkpoint,
    load_checkpoint,
    load_extra_tensors,
    read_state,
    save_checkpoint,
)
from mesaopt.train.config import RESUME_MUTABLE, TrainConfig
from mesaopt.train.curriculum import CurriculumState, curriculum_batch, zero_inactive_dims
from mesaopt.train.objective import (
    LossHook,
    LossOutput,
    grad_norm,
    make_loss_fn,
    make_optimizer,
    objective_loss,
    param_groups,
)
from mesaopt.train.progress import TrainBar
from mesaopt.train.schedules import lr_factor
from mesaopt.train.stop import check_stop_rule, error_curve, fresh_curve

METRICS_FILE = "metrics.jsonl"
EvalFn = Callable[[torch.nn.Module, int], dict[str, float]]


@dataclass
class TrainResult:
    """What ``train`` returns: the trained model, the metrics records, the last step and final metrics."""

    model: torch.nn.Module
    history: list[dict]
    step: int
    final: dict[str, float] = field(default_factory=dict)
    out: Path | None = None
    wall_s: float = 0.0
    resumed_from: int | None = None
    completed: bool = True
    stopped_at: int | None = None
    curriculum_complete_step: int | None = None


# --------------------------------------------------------------------------- building blocks

def sample_train_batch(task: Any, cfg: TrainConfig, step: int, gen: torch.Generator,
                       device: torch.device, dtype: torch.dtype, stage: tuple[int, int] | None = None) -> Any:
    """The training TaskBatch for 1-based ``step``: xs (B, T, d), ys (B, T).

    With ``cfg.curriculum`` the number of points and of active (non-zeroed) dims follow it: ``stage`` =
    (dims, points) from the run's ``CurriculumState`` (gated mode), else the fixed ramps at ``step``.
    """
    if cfg.curriculum is None:
        return task.sample(cfg.batch_size, cfg.n_points, gen, device, dtype)
    if stage is None:
        return curriculum_batch(task, cfg.curriculum, cfg.batch_size, cfg.n_points, step, gen, device, dtype)
    dims, points = stage
    return zero_inactive_dims(task, task.sample(cfg.batch_size, points, gen, device, dtype), dims)


def _evaluate(model: torch.nn.Module, batch: Any, cfg: TrainConfig, eval_fn: EvalFn | None,
              step: int) -> dict[str, float]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            rec = {"eval_loss": float(objective_loss(model, batch, cfg).item())}
        if eval_fn is not None:
            extra = eval_fn(model, step)
            for k, v in (extra or {}).items():
                rec[k] = float(v)
    finally:
        model.train(was_training)
    return rec


def _jsonable(obj: Any) -> Any:
    return json.loads(to_json(obj, indent=None))


def _check_resumable(saved: dict, cfg: TrainConfig, model: torch.nn.Module, task: Any, ck: Path) -> None:
    if hasattr(model, "spec") and saved.get("model") != _jsonable(model.spec()):
        raise CheckpointError(f"cannot resume: model spec {model.spec()} differs from the checkpoint's "
                              f"{saved.get('model')} ('{ck}')")
    if hasattr(task, "spec") and saved.get("task") is not None and saved["task"] != _jsonable(task.spec()):
        raise CheckpointError(f"cannot resume: task spec differs from the checkpoint's ('{ck}')")
    old = saved.get("train") or {}
    new = cfg.model_dump(mode="json")
    diff = [k for k in new if k not in RESUME_MUTABLE and k in old and old[k] != new[k]]
    if diff:
        k = diff[0]
        raise CheckpointError(f"cannot resume: train.{k} is {new[k]!r} but the checkpoint used {old[k]!r} "
                              f"(only {', '.join(RESUME_MUTABLE)} may change)")


def _open_tensorboard(out: Path | None, purge_step: int | None) -> Any:
    if out is None:
        raise ConfigError("train.tensorboard=true needs an output folder (out=...)")
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("train.tensorboard=true needs the tensorboard package: "
                          "pip install 'mesaopt[tensorboard]'") from None
    return SummaryWriter(log_dir=str(out / "tb"), purge_step=purge_step)


# --------------------------------------------------------------------------- the loop

def train(model: torch.nn.Module, task: Any, cfg: TrainConfig | dict, out: str | os.PathLike | None = None,
          resume: bool = False, eval_fn: EvalFn | None = None, progress: bool | Progress = True,
          stop_at: int | None = None, loss_hook: LossHook | None = None) -> TrainResult:
    """Fit ``model`` on sequences from ``task`` per ``cfg``; metrics/ckpt go to ``out`` (None = in memory only).

    ``cfg.curriculum`` grows the active dims / points (fixed ramps or gated stages), ``cfg.schedule``
    ``cosine_after_curriculum`` decays the lr once it is complete, ``cfg.stop`` ends the run early once the
    target error is met on the eval batch and on fresh data, ``cfg.lr_multipliers`` set per-parameter lrs.
    ``loss_hook`` replaces the built-in objective with a model family's own (``mesaopt.train.objective``).
    ``resume=True`` continues from ``out/ckpt`` to bitwise the same weights as an uninterrupted run (a
    run without a checkpoint yet starts from scratch). ``stop_at`` stops (and checkpoints) after that step.
    ``progress``: True = own rich bar on stderr, False = silent, a live ``rich.progress.Progress`` = add a row to it.
    Raises TrainingDiverged when the loss or grad norm becomes non-finite (the last good checkpoint is kept).
    """
    if isinstance(cfg, dict):
        cfg = validate(TrainConfig, cfg, where="train config")
    # the global CPU RNG (dropout, ...) is seeded from the config inside a fork: deterministic per config and the
    # caller's RNG state is left untouched; resume restores the checkpointed state instead
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(derive_seed(cfg.seed, "torch"))
        return _train(model, task, cfg, out, resume, eval_fn, progress, stop_at, loss_hook)


class _Trainer:
    """One training run: set-up (optimizer, data streams, curriculum, resume), the step loop, records, checkpoints."""

    def __init__(self, model: torch.nn.Module, task: Any, cfg: TrainConfig, out: str | os.PathLike | None,
                 eval_fn: EvalFn | None, loss_hook: LossHook | None) -> None:
        try:
            self.device = torch.device(cfg.device)
            torch.empty(0, device=self.device)
        except (RuntimeError, AssertionError) as e:
            raise ConfigError(f"train.device {cfg.device!r} is not available here: "
                              f"{str(e).splitlines()[0]}") from None
        if loss_hook is None and cfg.objective == "prefix" and not callable(getattr(model, "prefix", None)):
            raise ConfigError(f"train.objective 'prefix' needs a model with a prefix() method; "
                              f"{type(model).__name__} has none (use objective 'query')")
        if cfg.stop is not None:
            check_stop_rule(cfg.stop, model, task, cfg.n_points)
        self.model, self.task, self.cfg, self.eval_fn, self.hook = model, task, cfg, eval_fn, loss_hook
        self.dtype = cfg.torch_dtype
        model.to(device=self.device, dtype=self.dtype)
        model.train()
        groups = param_groups(model, cfg)
        self.params = [p for g in groups for p in g["params"]]
        self.opt = make_optimizer(groups, cfg)
        self.gens = {"train": generator(cfg.seed, "train", device=self.device),
                     "eval": generator(cfg.seed, "eval", device=self.device)}
        if loss_hook is not None:
            self.gens["hook"] = generator(cfg.seed, "loss-hook", device=self.device)
        if cfg.stop is not None:
            self.gens["stop"] = generator(cfg.seed, "stop-fresh", device=self.device)
        self.loss_fn = make_loss_fn(model, cfg, loss_hook, self.gens.get("hook"))
        self.eval_batch = task.sample(cfg.eval_batch_size, cfg.n_points, self.gens["eval"], self.device, self.dtype)
        self.cur = None
        if cfg.curriculum is not None:
            if getattr(task, "d", None) is None:
                raise ConfigError("train.curriculum needs a task with a dimension field d")
            self.cur = CurriculumState(cfg.curriculum, task.d, cfg.n_points, cfg.objective)
        self.out = Path(out) if out is not None else None
        self.metrics_path = self.out / METRICS_FILE if self.out is not None else None
        self.start, self.history, self.resumed_from, self.stopped_at = 0, [], None, None
        self.loss_sum, self.loss_count, self.wall_offset, self.last_good = None, 0, 0.0, None
        self.writer, self.t0 = None, time.perf_counter()

    # ------------------------------------------------------------------ set-up and resume
    def prepare(self, resume: bool) -> None:
        """Create the run folder and, with ``resume``, restore the checkpoint (weights, optimizer, RNGs, counters)."""
        out = self.out
        if resume and out is None:
            raise ConfigError("resume=True needs the run folder (out=...) holding the checkpoint")
        if out is None:
            return
        if out.exists() and not out.is_dir():
            raise ConfigError(f"out '{out}' exists and is not a directory")
        out.mkdir(parents=True, exist_ok=True)
        ck = find_checkpoint(out, repair=True)
        if ck is not None and not resume:
            _, st = read_state(ck)
            raise ConfigError(f"'{out}' already holds a checkpoint at step {st['step']}; "
                              f"resume it (--resume / resume=True) or use a fresh output folder")
        if ck is None:
            for stale in (self.metrics_path, out / "tb"):
                if stale.is_dir():
                    shutil.rmtree(stale)
                elif stale.exists():
                    stale.unlink()
            return
        _, saved = read_state(ck)
        _check_resumable(saved, self.cfg, self.model, self.task, ck)
        saved = load_checkpoint(ck, self.model, self.opt, generators=self.gens, restore_torch_rng=True)
        self.start = self.resumed_from = self.last_good = int(saved["step"])
        extra = saved.get("extra") or {}
        self.loss_count = int(extra.get("loss_count", 0))
        if self.loss_count:
            self.loss_sum = torch.tensor(float(extra["loss_sum"]), device=self.device, dtype=torch.float32)
        self.wall_offset = float(extra.get("wall_s", 0.0))
        self.stopped_at = extra.get("stopped_at")
        if self.cur is not None and extra.get("curriculum") is not None:
            self.cur.load(extra["curriculum"])
        if self.hook is not None and callable(getattr(self.hook, "load_state_tensors", None)):
            self.hook.load_state_tensors(load_extra_tensors(ck))
        if self.metrics_path.is_file():
            self.history = [r for r in read_jsonl(self.metrics_path) if r.get("step", math.inf) <= self.start]
        atomic_write_text(self.metrics_path, "".join(to_json(r, indent=None) + "\n" for r in self.history))

    def wall(self) -> float:
        """Seconds of training so far, earlier (resumed) segments included."""
        return self.wall_offset + time.perf_counter() - self.t0

    def emit(self, rec: dict) -> None:
        """Append a metrics record (history, metrics.jsonl, TensorBoard)."""
        self.history.append(rec)
        if self.metrics_path is not None:
            append_jsonl(self.metrics_path, rec)
        if self.writer is not None:
            for k, v in rec.items():
                if k not in ("step", "wall") and isinstance(v, int | float):
                    self.writer.add_scalar(k, v, rec["step"])

    def checkpoint(self, step: int) -> None:
        """Write an atomic checkpoint of everything a bit-for-bit resume needs (no-op without ``out``)."""
        if self.out is None:
            return
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            raise TrainingDiverged(f"weights became non-finite by step {step}; " + _kept(self.out, self.last_good))
        hook_state = getattr(self.hook, "state_tensors", None)
        save_checkpoint(self.out, self.model, step, optimizer=self.opt, task=self.task, train_cfg=self.cfg,
                        generators=self.gens,
                        scheduler={"name": self.cfg.schedule, "step": step, "base_lr": self.cfg.lr,
                                   "last_lr": self.opt.param_groups[0]["lr"]},
                        extra={"loss_sum": float(self.loss_sum.item()) if self.loss_sum is not None else 0.0,
                               "loss_count": self.loss_count, "wall_s": self.wall(), "stopped_at": self.stopped_at,
                               "curriculum": self.cur.state() if self.cur is not None else None},
                        extra_tensors=hook_state() if callable(hook_state) else None)
        self.last_good = step

    # ------------------------------------------------------------------ one step and its records
    def lr_at(self, step: int) -> float:
        """Peak-lr multiple for 1-based ``step`` (the curriculum's first full-task step starts a post-decay)."""
        c = self.cfg
        full = self.cur.full if self.cur is not None else None
        return c.lr * lr_factor(c.schedule, step - 1, c.steps, c.warmup_steps, c.min_lr_ratio, full, c.decay_steps)

    def step(self, step: int, pending: list) -> tuple[LossOutput, torch.Tensor, float, tuple[int, int] | None]:
        """One optimizer update; returns the loss output, grad norm, lr and the curriculum stage it trained on."""
        lr = self.lr_at(step)
        for g in self.opt.param_groups:
            g["lr"] = lr * g.get("lr_mult", 1.0)
        stage = self.cur.at(step) if self.cur is not None else None
        batch = sample_train_batch(self.task, self.cfg, step, self.gens["train"], self.device, self.dtype, stage)
        lo = self.loss_fn(batch)
        self.opt.zero_grad(set_to_none=True)
        lo.loss.backward()
        gn = grad_norm(self.params, self.cfg.grad_clip)
        self.opt.step()
        if self.cur is not None:
            self.cur.observe(step, lo.sq_err, stage[0])
        # NaN guard without a per-step host sync: keep this step's loss and grad norm for the next check step
        ld = lo.loss.detach()
        ld = ld if ld.dtype == torch.float32 else ld.float()
        pending.append((step, ld, gn))
        self.loss_sum = ld if self.loss_sum is None else self.loss_sum + ld
        self.loss_count += 1
        return lo, gn, lr, stage

    def evaluate(self, step: int) -> dict[str, float]:
        """Eval-batch loss, the caller's eval_fn and the stop rule's checks at ``step`` (model in eval mode)."""
        rec = _evaluate(self.model, self.eval_batch, self.cfg, self.eval_fn, step)
        rule = self.cfg.stop
        if rule is None:
            return rec
        was = self.model.training
        self.model.eval()
        try:
            err = float(error_curve(self.model, self.eval_batch, rule, getattr(self.task, "d", 1))[rule.at])
            rec["stop_err"] = err
            ok = not rule.after_curriculum or self.cur is None or self.cur.complete(step)
            if ok and err <= rule.target:
                fresh = fresh_curve(self.model, self.task, rule, self.cfg.n_points, self.gens["stop"],
                                    self.device, self.dtype)
                rec["stop_err_fresh"] = float(fresh[rule.at])
                if rec["stop_err_fresh"] <= rule.target:
                    self.stopped_at = step
        finally:
            self.model.train(was)
        return rec

    def record(self, step: int, lo: LossOutput, gn: torch.Tensor, lr: float, stage: Any, is_eval: bool) -> dict:
        """The metrics record of a log/eval step (mean training loss since the last record, curriculum, evals)."""
        rec: dict[str, Any] = {"step": step, "loss": float((self.loss_sum / self.loss_count).item())}
        self.loss_sum, self.loss_count = None, 0
        rec["lr"] = lr
        rec["grad_norm"] = float(gn.item())
        rec.update({k: float(v) for k, v in lo.logs.items()})
        if stage is not None:
            rec["dims"], rec["points"] = stage
            rec["curriculum_complete"] = self.cur.complete(step)
        if is_eval:
            rec.update(self.evaluate(step))
        rec["wall"] = round(self.wall(), 3)
        return rec

    # ------------------------------------------------------------------ the loop
    def run(self, end: int, bar: TrainBar) -> None:
        """Steps ``start + 1 .. end`` (fewer if the stop rule fires), with records, NaN checks and checkpoints."""
        cfg, pending, last_bar = self.cfg, [], 0.0
        if self.start == 0 and end >= 1:
            self.emit({"step": 0, "lr": self.lr_at(1),
                       **_evaluate(self.model, self.eval_batch, cfg, self.eval_fn, 0), "wall": round(self.wall(), 3)})
        if self.stopped_at is not None:
            return
        for step in range(self.start + 1, end + 1):
            lo, gn, lr, stage = self.step(step, pending)
            is_log = step % cfg.log_every == 0 or step == cfg.steps
            is_eval = (cfg.eval_every > 0 and step % cfg.eval_every == 0) or step == cfg.steps
            is_ckpt = (cfg.ckpt_every > 0 and step % cfg.ckpt_every == 0) or step == end
            if is_log or is_eval or is_ckpt or step % cfg.nan_check_every == 0:
                bad = _first_nonfinite(pending)
                pending.clear()
                if bad is not None:
                    b, lv, gv = bad
                    what = f"loss became {lv}" if not math.isfinite(lv) else f"grad norm became {gv}"
                    msg = f"{what} at step {b}; " + _kept(self.out, self.last_good) + "; lower lr or set grad_clip"
                    self.emit({"step": b, "diverged": msg, "wall": round(self.wall(), 3)})
                    raise TrainingDiverged(msg)
            if is_log or is_eval:
                rec = self.record(step, lo, gn, lr, stage, is_eval)
                self.emit(rec)
                bar.update(step, f"loss {rec['loss']:.4g}" + (f" eval {rec['eval_loss']:.4g}" if is_eval else ""))
            elif bar.enabled and time.perf_counter() - last_bar > 0.1:
                last_bar = time.perf_counter()
                bar.update(step)
            if is_ckpt or self.stopped_at is not None:
                self.checkpoint(step)
            if self.stopped_at is not None:
                return


def _train(model: torch.nn.Module, task: Any, cfg: TrainConfig, out: str | os.PathLike | None, resume: bool,
           eval_fn: EvalFn | None, progress: bool | Progress, stop_at: int | None,
           loss_hook: LossHook | None) -> TrainResult:
    if stop_at is not None and stop_at < 1:
        raise ConfigError(f"stop_at must be >= 1 or None, got {stop_at}")
    tr = _Trainer(model, task, cfg, out, eval_fn, loss_hook)
    tr.prepare(resume)
    end = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
    tr.writer = _open_tensorboard(tr.out, tr.resumed_from) if cfg.tensorboard else None
    tr.t0 = time.perf_counter()
    try:
        with TrainBar(progress, cfg.steps, tr.start) as bar:
            tr.run(end, bar)
    finally:
        if tr.writer is not None:
            tr.writer.close()
    step_done = tr.stopped_at if tr.stopped_at is not None else max(tr.start, end)
    final: dict[str, float] = {}
    for rec in tr.history:
        final.update({k: v for k, v in rec.items() if k not in ("step", "wall", "lr", "grad_norm")})
    return TrainResult(model=model, history=tr.history, step=step_done, final=final, out=tr.out,
                       wall_s=round(tr.wall(), 3), resumed_from=tr.resumed_from,
                       completed=step_done >= cfg.steps or tr.stopped_at is not None, stopped_at=tr.stopped_at,
                       curriculum_complete_step=tr.cur.full if tr.cur is not None else None)


def _first_nonfinite(pending: list[tuple[int, torch.Tensor, torch.Tensor]]) -> tuple[int, float, float] | None:
    """(step, loss, grad norm) of the first entry whose loss or grad norm is NaN/inf, else None (one host sync)."""
    if not pending:
        return None
    vals = torch.stack([torch.stack([ld, gn.to(ld.dtype)]) for _, ld, gn in pending])  # (k, 2)
    ok = torch.isfinite(vals).all(dim=1)
    if bool(ok.all()):
        return None
    i = int((~ok).nonzero()[0, 0])
    return pending[i][0], float(vals[i, 0]), float(vals[i, 1])


def _kept(out: Path | None, last_good: int | None) -> str:
    if out is None:
        return "no checkpoint is written without out="
    if last_good is None:
        return f"no checkpoint was written yet in {out / CKPT_DIR}"
    return f"last good checkpoint step {last_good} kept in {out / CKPT_DIR}"
