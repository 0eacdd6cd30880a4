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
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mesaopt.config import validate
from mesaopt.errors import CheckpointError, ConfigError, TrainingDiverged
from mesaopt.io import append_jsonl, atomic_write_text, read_jsonl, to_json
from mesaopt.seeding import derive_seed, generator
from mesaopt.train.checkpoint import CKPT_DIR, find_checkpoint, load_checkpoint, read_state, save_checkpoint
from mesaopt.train.config import RESUME_MUTABLE, TrainConfig
from mesaopt.train.curriculum import curriculum_batch
from mesaopt.train.schedules import lr_factor

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


# --------------------------------------------------------------------------- building blocks

def make_optimizer(params: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The torch optimizer named by ``cfg.optimizer`` (adamw | adam | sgd) at the peak lr."""
    params = list(params)
    if not params:
        raise ConfigError("the model has no parameters to train")
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def sample_train_batch(task: Any, cfg: TrainConfig, step: int, gen: torch.Generator,
                       device: torch.device, dtype: torch.dtype) -> Any:
    """The training TaskBatch for 1-based ``step``: xs (B, T, d), ys (B, T).

    With ``cfg.curriculum`` the number of points and of active (non-zeroed) dims follow its ramps.
    """
    if cfg.curriculum is not None:
        return curriculum_batch(task, cfg.curriculum, cfg.batch_size, cfg.n_points, step, gen, device, dtype)
    return task.sample(cfg.batch_size, cfg.n_points, gen, device, dtype)


def objective_loss(model: torch.nn.Module, batch: Any, cfg: TrainConfig) -> torch.Tensor:
    """Scalar loss: "query" -> model(ctx (B,T-1,d), (B,T-1), qry (B,1,d)) vs y (B,1); "prefix" -> all T positions."""
    if cfg.objective == "query":
        ctx_x, ctx_y, qry_x, qry_y = batch.split(batch.n_points - 1)
        pred = model(ctx_x, ctx_y, qry_x)
        target = qry_y
    else:
        pred = model.prefix(batch.xs, batch.ys)
        target = batch.ys
    if pred.shape != target.shape:
        raise ConfigError(f"model predictions have shape {tuple(pred.shape)}, expected {tuple(target.shape)} "
                          f"for objective {cfg.objective!r}")
    err = (pred - target).pow(2).mean()
    return 0.5 * err if cfg.loss == "half_mse" else err


def make_loss_fn(model: torch.nn.Module, cfg: TrainConfig) -> Callable[[Any], torch.Tensor]:
    """``batch -> scalar loss`` for training: ``objective_loss`` under bf16 autocast if ``cfg.amp`` and compiled
    with ``torch.compile`` if ``cfg.compile`` (the compiled function takes the batch's xs (B,T,d), ys (B,T))."""
    device_type = next(iter(model.parameters())).device.type
    amp = cfg.amp == "bf16"

    def loss_of(batch: Any) -> torch.Tensor:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp):
            return objective_loss(model, batch, cfg)

    if not cfg.compile:
        return loss_of

    def tensor_loss(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp):
            if cfg.objective == "query":
                pred, target = model(xs[:, :-1], ys[:, :-1], xs[:, -1:]), ys[:, -1:]
            else:
                pred, target = model.prefix(xs, ys), ys
        err = (pred.float() - target.float()).pow(2).mean()
        return 0.5 * err if cfg.loss == "half_mse" else err

    compiled = torch.compile(tensor_loss, dynamic=None)

    def compiled_loss(batch: Any) -> torch.Tensor:
        return compiled(batch.xs, batch.ys)

    return compiled_loss


def _grad_norm(params: list[torch.Tensor], clip: float | None) -> torch.Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device=params[0].device)
    if clip is not None:
        return torch.nn.utils.clip_grad_norm_(params, clip)
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.detach().float()) for g in grads]))


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


class _Bar:
    """Own rich progress bar on stderr, or a task row on a caller's live ``Progress`` (nested runs)."""

    def __init__(self, progress: bool | Progress, total: int, start: int) -> None:
        self.external = isinstance(progress, Progress)
        self.enabled = self.external or bool(progress)
        if self.external:
            self.prog = progress
        else:
            self.prog = Progress(TextColumn("[bold]{task.description}[/]"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=Console(stderr=True), disable=not progress, transient=False)
        self.task = self.prog.add_task("train", total=total, completed=start, info="")

    def __enter__(self) -> _Bar:
        if not self.external:
            self.prog.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.external:
            self.prog.remove_task(self.task)
        else:
            self.prog.__exit__(*exc)

    def update(self, step: int, info: str | None = None) -> None:
        if info is None:
            self.prog.update(self.task, completed=step)
        else:
            self.prog.update(self.task, completed=step, info=info)


# --------------------------------------------------------------------------- the loop

def train(model: torch.nn.Module, task: Any, cfg: TrainConfig | dict, out: str | os.PathLike | None = None,
          resume: bool = False, eval_fn: EvalFn | None = None, progress: bool | Progress = True,
          stop_at: int | None = None) -> TrainResult:
    """Fit ``model`` on sequences from ``task`` per ``cfg``; metrics/ckpt go to ``out`` (None = in memory only).

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
        return _train(model, task, cfg, out, resume, eval_fn, progress, stop_at)


def _train(model: torch.nn.Module, task: Any, cfg: TrainConfig, out: str | os.PathLike | None, resume: bool,
           eval_fn: EvalFn | None, progress: bool | Progress, stop_at: int | None) -> TrainResult:
    if stop_at is not None and stop_at < 1:
        raise ConfigError(f"stop_at must be >= 1 or None, got {stop_at}")
    try:
        device = torch.device(cfg.device)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as e:
        raise ConfigError(f"train.device {cfg.device!r} is not available here: {str(e).splitlines()[0]}") from None
    if cfg.objective == "prefix" and not callable(getattr(model, "prefix", None)):
        raise ConfigError(f"train.objective 'prefix' needs a model with a prefix() method; "
                          f"{type(model).__name__} has none (use objective 'query')")
    dtype = cfg.torch_dtype
    model.to(device=device, dtype=dtype)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, cfg)
    loss_fn = make_loss_fn(model, cfg)
    gen = generator(cfg.seed, "train", device=device)
    eval_gen = generator(cfg.seed, "eval", device=device)
    eval_batch = task.sample(cfg.eval_batch_size, cfg.n_points, eval_gen, device, dtype)

    out_p = Path(out) if out is not None else None
    metrics_path = out_p / METRICS_FILE if out_p is not None else None
    start, history, resumed_from = 0, [], None
    loss_sum, loss_count, wall_offset, last_good = None, 0, 0.0, None
    if resume and out_p is None:
        raise ConfigError("resume=True needs the run folder (out=...) holding the checkpoint")
    if out_p is not None:
        if out_p.exists() and not out_p.is_dir():
            raise ConfigError(f"out '{out_p}' exists and is not a directory")
        out_p.mkdir(parents=True, exist_ok=True)
        ck = find_checkpoint(out_p, repair=True)
        if ck is not None and not resume:
            _, st = read_state(ck)
            raise ConfigError(f"'{out_p}' already holds a checkpoint at step {st['step']}; "
                              f"resume it (--resume / resume=True) or use a fresh output folder")
        if ck is not None:
            _, saved = read_state(ck)
            _check_resumable(saved, cfg, model, task, ck)
            saved = load_checkpoint(ck, model, opt, generators={"train": gen, "eval": eval_gen},
                                    restore_torch_rng=True)
            start = resumed_from = last_good = int(saved["step"])
            extra = saved.get("extra") or {}
            loss_count = int(extra.get("loss_count", 0))
            if loss_count:
                loss_sum = torch.tensor(float(extra["loss_sum"]), device=device, dtype=torch.float32)
            wall_offset = float(extra.get("wall_s", 0.0))
            if metrics_path.is_file():
                history = [r for r in read_jsonl(metrics_path) if r.get("step", math.inf) <= start]
            atomic_write_text(metrics_path, "".join(to_json(r, indent=None) + "\n" for r in history))
        else:
            for stale in (metrics_path, out_p / "tb"):
                if stale.is_dir():
                    shutil.rmtree(stale)
                elif stale.exists():
                    stale.unlink()
    end = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
    writer = _open_tensorboard(out_p, resumed_from) if cfg.tensorboard else None
    t0 = time.perf_counter()

    def emit(rec: dict) -> None:
        history.append(rec)
        if metrics_path is not None:
            append_jsonl(metrics_path, rec)
        if writer is not None:
            for k, v in rec.items():
                if k not in ("step", "wall") and isinstance(v, int | float):
                    writer.add_scalar(k, v, rec["step"])

    def checkpoint(step: int) -> None:
        nonlocal last_good
        if out_p is None:
            return
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
            raise TrainingDiverged(f"weights became non-finite by step {step}; " + _kept(out_p, last_good))
        save_checkpoint(out_p, model, step, optimizer=opt, task=task, train_cfg=cfg,
                        generators={"train": gen, "eval": eval_gen},
                        scheduler={"name": cfg.schedule, "step": step, "base_lr": cfg.lr,
                                   "last_lr": opt.param_groups[0]["lr"]},
                        extra={"loss_sum": float(loss_sum.item()) if loss_sum is not None else 0.0,
                               "loss_count": loss_count, "wall_s": wall_offset + time.perf_counter() - t0})
        last_good = step

    pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # (step, loss, grad norm) since the last check
    last_loss: float | None = None
    last_bar = 0.0
    bar = _Bar(progress, cfg.steps, start)
    try:
        with bar:
            if start == 0 and end >= 1:
                emit({"step": 0, "lr": cfg.lr * lr_factor(cfg.schedule, 0, cfg.steps, cfg.warmup_steps,
                                                          cfg.min_lr_ratio),
                      **_evaluate(model, eval_batch, cfg, eval_fn, 0), "wall": round(wall_offset, 3)})
            for step in range(start + 1, end + 1):
                lr = cfg.lr * lr_factor(cfg.schedule, step - 1, cfg.steps, cfg.warmup_steps, cfg.min_lr_ratio)
                for g in opt.param_groups:
                    g["lr"] = lr
                batch = sample_train_batch(task, cfg, step, gen, device, dtype)
                loss = loss_fn(batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                gn = _grad_norm(params, cfg.grad_clip)
                opt.step()

                # NaN guard without a per-step host sync: keep references to this step's loss and grad norm
                # and inspect them all at the next check step
                ld = loss.detach()
                if ld.dtype != torch.float32:
                    ld = ld.float()
                pending.append((step, ld, gn))
                loss_sum = ld if loss_sum is None else loss_sum + ld
                loss_count += 1

                is_log = step % cfg.log_every == 0 or step == cfg.steps
                is_eval = (cfg.eval_every > 0 and step % cfg.eval_every == 0) or step == cfg.steps
                is_ckpt = out_p is not None and ((cfg.ckpt_every > 0 and step % cfg.ckpt_every == 0)
                                                 or step == end)
                if is_log or is_eval or is_ckpt or step % cfg.nan_check_every == 0:
                    bad = _first_nonfinite(pending)
                    pending.clear()
                    if bad is not None:
                        b, lv, gv = bad
                        what = f"loss became {lv}" if not math.isfinite(lv) else f"grad norm became {gv}"
                        msg = f"{what} at step {b}; " + _kept(out_p, last_good) + "; lower lr or set grad_clip"
                        emit({"step": b, "diverged": msg, "wall": round(wall_offset + time.perf_counter() - t0, 3)})
                        raise TrainingDiverged(msg)
                if is_log or is_eval:
                    rec: dict[str, Any] = {"step": step}
                    last_loss = float((loss_sum / loss_count).item())
                    rec["loss"] = last_loss
                    loss_sum, loss_count = None, 0
                    rec["lr"] = lr
                    rec["grad_norm"] = float(gn.item())
                    if is_eval:
                        rec.update(_evaluate(model, eval_batch, cfg, eval_fn, step))
                    rec["wall"] = round(wall_offset + time.perf_counter() - t0, 3)
                    emit(rec)
                    info = f"loss {last_loss:.4g}" + (f" eval {rec['eval_loss']:.4g}" if "eval_loss" in rec else "")
                    bar.update(step, info)
                elif bar.enabled and time.perf_counter() - last_bar > 0.1:
                    last_bar = time.perf_counter()
                    bar.update(step)
                if is_ckpt:
                    checkpoint(step)
    finally:
        if writer is not None:
            writer.close()
    step_done = max(start, end)
    final: dict[str, float] = {}
    for rec in history:
        final.update({k: v for k, v in rec.items() if k not in ("step", "wall", "lr", "grad_norm")})
    return TrainResult(model=model, history=history, step=step_done, final=final, out=out_p,
                       wall_s=round(wall_offset + time.perf_counter() - t0, 3), resumed_from=resumed_from,
                       completed=step_done >= cfg.steps)


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
