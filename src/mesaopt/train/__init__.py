"""Training: ``train(model, task, cfg)`` with AdamW, lr schedules, clipping, NaN guard and resumable checkpoints."""

from __future__ import annotations

from mesaopt.train.checkpoint import find_checkpoint, load_checkpoint, load_model, save_checkpoint
from mesaopt.train.config import TrainConfig, TrainJob
from mesaopt.train.loop import TrainResult, train
from mesaopt.train.schedules import lr_factor

__all__ = ["TrainConfig", "TrainJob", "TrainResult", "find_checkpoint", "load_checkpoint", "load_model",
           "lr_factor", "save_checkpoint", "train"]
