"""Learners on a feature map: run any learner on phi(x) instead of x (von Oswald et al., non-linear regression).

``OnFeatures(learner, phi)`` predicts ``learner(phi(ctx_x), ctx_y, phi(qry_x))``: with ``GD`` it is gradient
descent on the features (what an LSA on top of a learned embedding can do), with ``Ridge`` ridge regression on
them. ``FeaturizedTask(task, phi)`` samples ``task`` and maps the inputs through phi, so the hyper-parameter
fits that take a task (``GD.fit_lr``, ``GDPlusPlus.fit_hparams``) fit on the features unchanged. ``phi`` is any
callable (..., d) -> (..., m) (e.g. a trained model's ``features_of``, or fixed Fourier features) that accepts
the input dtype; its output is cast to the input dtype. Gradients flow through phi (sensitivities
with respect to the raw query input are available).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mesaopt.learner import Learner, check_learner_inputs
from mesaopt.tasks.base import TaskBatch

__all__ = ["OnFeatures", "FeaturizedTask", "apply_features"]

FeatureMap = Callable[[torch.Tensor], torch.Tensor]


def apply_features(phi: FeatureMap, x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """phi(x) cast to ``dtype`` (default x's): (..., d) -> (..., m)."""
    return phi(x).to(dtype or x.dtype)


class OnFeatures:
    """``learner`` on features: (B,N,d), (B,N), (B,Q,d) -> learner(phi(ctx_x), ctx_y, phi(qry_x)) (B, Q)."""

    def __init__(self, learner: Learner, phi: FeatureMap) -> None:
        self.learner, self.phi = learner, phi

    @property
    def name(self) -> str:
        """``{learner name}_features``."""
        return f"{getattr(self.learner, 'name', type(self.learner).__name__.lower())}_features"

    def __call__(self, ctx_x: torch.Tensor, ctx_y: torch.Tensor, qry_x: torch.Tensor) -> torch.Tensor:
        check_learner_inputs(ctx_x, ctx_y, qry_x)
        return self.learner(apply_features(self.phi, ctx_x), ctx_y, apply_features(self.phi, qry_x))


class FeaturizedTask:
    """A task whose inputs are mapped through phi: ``sample`` returns TaskBatch(phi(xs) (B,T,m), ys (B,T), params)."""

    def __init__(self, task, phi: FeatureMap) -> None:
        self.task, self.phi = task, phi

    @torch.no_grad()
    def sample(self, batch_size: int, n_points: int, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> TaskBatch:
        """Sample the wrapped task, then map xs (B, T, d) -> phi(xs) (B, T, m) in ``dtype``."""
        b = self.task.sample(batch_size, n_points, generator=generator, device=device, dtype=dtype)
        return TaskBatch(apply_features(self.phi, b.xs, dtype), b.ys, b.params)
