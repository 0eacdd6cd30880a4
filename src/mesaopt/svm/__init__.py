"""Attention as a max-margin token selector (Tarzanagh et al. 2023): Att-SVM, attention GD, regularization path."""

from __future__ import annotations

from mesaopt.svm.att_svm import (
    SVMInfeasible,
    SVMSolution,
    att_svm,
    constraint_matrix,
    correlation,
    is_feasible,
    margins,
)
from mesaopt.svm.attention_gd import (
    PAPER_KQ_WEIGHT_DECAY,
    AttentionGDResult,
    attention_grads,
    attention_loss,
    attention_output,
    attention_probs,
    scaled_grad_W,
    train_attention,
)
from mesaopt.svm.demo import implicit_bias_demo
from mesaopt.svm.optimal_tokens import (
    LocalOptimality,
    check_local,
    enumerate_locally_optimal,
    global_tokens,
    is_global,
    support_tokens,
)
from mesaopt.svm.regpath import RegPathResult, excess_loss, project_ball, regularization_path

__all__ = ["SVMInfeasible", "SVMSolution", "att_svm", "constraint_matrix", "correlation", "is_feasible", "margins",
           "PAPER_KQ_WEIGHT_DECAY", "AttentionGDResult", "attention_grads", "attention_loss", "attention_output",
           "attention_probs",
           "scaled_grad_W", "train_attention", "implicit_bias_demo", "LocalOptimality", "check_local",
           "enumerate_locally_optimal", "global_tokens", "is_global", "support_tokens", "RegPathResult",
           "excess_loss", "project_ball", "regularization_path"]
