"""Analysis of learners: comparison metrics (``metrics``); identification, probes and risk curves live in
sibling modules (``mesaopt.analysis.identify``, ``probes``, ``risk``)."""

from __future__ import annotations

from mesaopt.analysis import metrics
from mesaopt.analysis.metrics import compare, half_mse, interpolate, model_diff, mse, pred_diff, sens_cos, sensitivity

__all__ = ["metrics", "mse", "half_mse", "pred_diff", "sensitivity", "model_diff", "sens_cos", "interpolate",
           "compare"]
