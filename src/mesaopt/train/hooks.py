"""Loss hooks of model families that train with their own objective through ``mesaopt.train.train``.

``EBTLoss``: the energy-based transformer's loss over its descent iterates (``EBT.loss``: MSE of every
iterate or of the final one, randomised steps / step size, Langevin noise) with the paper's replay buffer:
a share of each batch is replaced by earlier contexts restarted from the EBT's earlier final predictions.
The buffer is part of the checkpoint (``state_tensors``), so a resumed run is bit-for-bit an uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import torch

from mesaopt.errors import ConfigError
from mesaopt.models.ebt import EBT, ReplayBuffer
from mesaopt.train.objective import LossOutput

_BUFFER_KEYS = ("ctx_x", "ctx_y", "qry_x", "qry_y", "yhat")


class EBTLoss:
    """``(model: EBT, batch (B, N+Q), gen) -> LossOutput`` with a replay buffer of ``replay_size`` contexts.

    Each batch (B, N+Q points) is split into N context points and Q = ``n_queries`` queries; with a non-empty
    buffer, round(B * ``replay_fraction``) rows are replaced by buffer rows started from their stored final
    predictions, the rest start from the EBT's initial guess. Logs ``first_mse``, ``final_mse`` and ``alpha``.
    """

    def __init__(self, n_queries: int, replay_fraction: float = 0.25, replay_size: int = 4096) -> None:
        if not 0.0 <= replay_fraction < 1.0:
            raise ConfigError(f"replay_fraction must be in [0, 1), got {replay_fraction}")
        self.n_queries = n_queries
        self.replay_fraction = replay_fraction
        self.buffer = ReplayBuffer(replay_size) if replay_fraction > 0 else None

    def __call__(self, model: torch.nn.Module, batch: Any, gen: torch.Generator) -> LossOutput:
        """One step's loss; adds the step's contexts and final predictions to the buffer."""
        if not isinstance(model, EBT):
            raise ConfigError(f"the EBT loss hook trains an EBT, got {type(model).__name__}")
        q = self.n_queries
        cx, cy, qx, qy = batch.split(batch.n_points - q)
        b = cx.shape[0]
        n_replay = int(round(b * self.replay_fraction)) if self.buffer is not None else 0
        init = None
        if self.buffer is not None and len(self.buffer) >= n_replay > 0:
            rcx, rcy, rqx, rqy, ry = self.buffer.sample(n_replay, gen)
            keep = b - n_replay
            fresh = model.initial_guess((keep, q), cx, None, gen)
            cx, cy = torch.cat([cx[:keep], rcx]), torch.cat([cy[:keep], rcy])
            qx, qy = torch.cat([qx[:keep], rqx]), torch.cat([qy[:keep], rqy])
            init = torch.cat([fresh, ry])
        loss, info = model.loss(cx, cy, qx, qy, init=init, generator=gen)
        if self.buffer is not None:
            self.buffer.add(cx, cy, qx, qy, info["final"])
        return LossOutput(loss, None, {"first_mse": info["first_mse"], "final_mse": info["final_mse"],
                                       "alpha": model.alpha.detach()})

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The replay buffer's tensors (empty dict when there is none or it is empty)."""
        if self.buffer is None or self.buffer.data is None:
            return {}
        return dict(zip(_BUFFER_KEYS, self.buffer.data, strict=True))

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore ``state_tensors()`` output (resume)."""
        if self.buffer is not None and tensors:
            self.buffer.data = tuple(tensors[k] for k in _BUFFER_KEYS)
