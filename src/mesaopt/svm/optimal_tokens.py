"""Globally and locally optimal token selections (Tarzanagh et al. 2023, Definitions of OPT / LOMM tokens).

A selection alpha (one token per sequence) is *globally optimal* if alpha_i = argmax_t gamma_it for all i.
It is *locally optimal* if Att-SVM(alpha) is feasible and every support token t of sequence i (an active
constraint, (x_alpha - x_t)ᵀ W_mm z_i = 1) has a strictly lower score, gamma_{i alpha_i} > gamma_it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from mesaopt.errors import ConfigError
from mesaopt.svm.att_svm import Norm, SVMInfeasible, SVMSolution, att_svm
from mesaopt.tasks.selection import SelectionProblem


def global_tokens(problem: SelectionProblem) -> torch.Tensor:
    """argmax_t gamma_it per sequence: (..., n)."""
    return problem.optimal_tokens()


def is_global(problem: SelectionProblem, alpha: torch.Tensor) -> torch.Tensor:
    """Whether alpha (..., n) picks the highest-score token in every sequence: (...) bool."""
    s = problem.scores()
    chosen = s.gather(-1, alpha.to(torch.int64).unsqueeze(-1)).squeeze(-1)
    return (chosen >= s.max(-1).values).all(-1)


def support_tokens(sol: SVMSolution) -> list[np.ndarray]:
    """Indices of the support tokens (active constraints) of each sequence, from an Att-SVM solution."""
    return [np.flatnonzero(row) for row in sol.active]


@dataclass
class LocalOptimality:
    """Whether alpha is locally optimal, its SVM solution (None if infeasible) and the offending sequences."""

    locally_optimal: bool
    feasible: bool
    solution: SVMSolution | None
    violations: list[tuple[int, int]]


def check_local(problem: SelectionProblem, alpha: torch.Tensor | np.ndarray, norm: Norm = "fro",
                sol: SVMSolution | None = None) -> LocalOptimality:
    """LOMM check of alpha (n,) for a single problem: feasible and every support token scores lower."""
    if problem.batch_shape:
        raise ConfigError("check_local takes a single problem (X of shape (n, T, d)); index the batch first")
    alpha = np.asarray(alpha.cpu().numpy() if isinstance(alpha, torch.Tensor) else alpha).astype(np.int64)
    if sol is None:
        try:
            sol = att_svm(problem.X, problem.Z, alpha, norm=norm)
        except SVMInfeasible:
            return LocalOptimality(False, False, None, [])
    gamma = problem.scores().detach().cpu().numpy()
    viol = []
    for i, sup in enumerate(support_tokens(sol)):  # loop over n sequences of one small problem (not a hot path)
        for t in sup:
            if not gamma[i, alpha[i]] > gamma[i, t]:
                viol.append((i, int(t)))
    return LocalOptimality(not viol, True, sol, viol)


def enumerate_locally_optimal(problem: SelectionProblem, norm: Norm = "fro", max_selections: int = 4096
                              ) -> list[tuple[int, ...]]:
    """All locally optimal selections of a tiny problem by brute force over the T^n selections."""
    n, T = problem.n, problem.T
    if T**n > max_selections:
        raise ConfigError(f"enumerate_locally_optimal: T^n = {T**n} selections exceeds max_selections={max_selections}")
    out = []
    for alpha in itertools.product(range(T), repeat=n):
        if check_local(problem, np.asarray(alpha), norm).locally_optimal:
            out.append(alpha)
    return out
