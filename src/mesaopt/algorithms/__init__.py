"""Batched reference learners (pure torch, float64 inside): least squares, GD family, Newton, Lasso, kNN, ...

``build(spec)`` rebuilds any algorithm from its ``spec()`` dict, e.g. ``build({"kind": "gd", "steps": 3,
"lr": 0.5})``. See docs/algorithms.md for every convention.
"""

from __future__ import annotations

from mesaopt.algorithms.base import REGISTRY, Algorithm, LinearAlgorithm, build, kinds, register
from mesaopt.algorithms.gradient import GD, GDPlusPlus, IterativeLinear, PreconditionedGD
from mesaopt.algorithms.least_squares import OLS, BayesRidge, Ridge
from mesaopt.algorithms.newton import IterativeNewton
from mesaopt.algorithms.other import DMMSE, KNN, Averaging
from mesaopt.algorithms.sparse import Lasso

__all__ = [
    "REGISTRY", "Algorithm", "LinearAlgorithm", "IterativeLinear", "build", "kinds", "register",
    "OLS", "Ridge", "BayesRidge", "GD", "GDPlusPlus", "PreconditionedGD", "IterativeNewton",
    "Lasso", "KNN", "Averaging", "DMMSE",
]
