"""Regularization path: W_R = argmin_{||W|| <= R} L(W) for growing R; W_R / R tends to the Att-SVM direction.

The constrained problem is solved by projected gradient descent with a per-problem adaptive step
(grow on success, halve and retry on failure; monotone loss), warm-started from the previous radius'
solution scaled to the new radius. ``norm`` is "fro" (ball of W, limit W_mm) or "nuc" (nuclear ball, the
(K, Q) parametrization's penalty ||K||² + ||Q||² = 2 ||W||_*, limit W*_mm). Batched over problems.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mesaopt.errors import ConfigError
from mesaopt.svm.att_svm import Norm
from mesaopt.svm.attention_gd import Loss, scaled_grad_W, single_thread
from mesaopt.tasks.selection import SelectionProblem


def project_simplex_ball(s: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of nonnegative s (..., k) onto {x >= 0, sum x <= R} (R (...))."""
    R = R.unsqueeze(-1)
    inside = s.sum(-1, keepdim=True) <= R
    u = torch.sort(s, dim=-1, descending=True).values
    css = u.cumsum(-1) - R
    k = torch.arange(1, s.shape[-1] + 1, dtype=s.dtype, device=s.device)
    cond = u - css / k > 0
    rho = (cond * k).amax(-1, keepdim=True).to(torch.int64) - 1  # last index where cond holds
    theta = css.gather(-1, rho) / (rho + 1).to(s.dtype)
    proj = (s - theta).clamp_min(0)
    return torch.where(inside, s, proj)


def project_ball(W: torch.Tensor, R: torch.Tensor | float, norm: Norm = "fro") -> torch.Tensor:
    """Projection of W (..., d, d) onto {||W|| <= R} in the Frobenius or nuclear norm."""
    R = torch.as_tensor(R, dtype=W.dtype, device=W.device).expand(W.shape[:-2])
    if norm == "fro":
        nrm = W.flatten(start_dim=-2).norm(dim=-1)
        scale = torch.where(nrm > R, R / nrm.clamp_min(torch.finfo(W.dtype).tiny), torch.ones_like(nrm))
        return W * scale[..., None, None]
    if norm == "nuc":
        U, S, Vh = torch.linalg.svd(W, full_matrices=False)
        S = project_simplex_ball(S, R)
        return U @ (S.unsqueeze(-1) * Vh)
    raise ConfigError(f"norm must be one of ['fro', 'nuc'], got {norm!r}")


def excess_loss(problem: SelectionProblem, W: torch.Tensor, alpha: torch.Tensor, loss: Loss = "logistic"
                ) -> torch.Tensor:
    """L(W) - mean_i l(y_i vᵀx_{i alpha_i}) computed without cancellation: (...).

    With delta_i = sum_u s_iu (h_{i alpha_i} - h_iu) (exact: f_i = h_{i alpha_i} - delta_i), each term is
    log1p(sigmoid(-a_i) expm1(y_i delta_i)) (logistic) or y_i delta_i (correlation), a_i = y_i h_{i alpha_i};
    so losses of nearly saturated attention (L - L* ~ 1e-100) are still compared correctly.
    """
    s = torch.softmax(torch.einsum("...ntd,...de,...ne->...nt", problem.X, W, problem.Z), dim=-1)
    h = problem.head_values()
    h_a = h.gather(-1, alpha.unsqueeze(-1)).squeeze(-1)
    delta = (s * (h_a.unsqueeze(-1) - h)).sum(-1)
    yd = problem.y * delta
    if loss == "logistic":
        return torch.log1p(torch.sigmoid(-problem.y * h_a) * torch.expm1(yd)).mean(-1)
    if loss == "correlation":
        return yd.mean(-1)
    raise ConfigError(f"loss must be one of ['logistic', 'correlation'], got {loss!r}")


@dataclass
class RegPathResult:
    """radii (K,), W (K, ..., d, d) constrained minimizers, loss (K, ...) = excess loss vs the global tokens."""

    radii: np.ndarray
    W: torch.Tensor
    loss: torch.Tensor

    def corr(self, W_ref: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Correlation of each W_R with W_ref (..., d, d): (K, ...)."""
        W_ref = torch.as_tensor(W_ref, dtype=self.W.dtype)
        num = (self.W * W_ref).sum((-2, -1))
        den = self.W.flatten(start_dim=-2).norm(dim=-1) * W_ref.flatten(start_dim=-2).norm(dim=-1)
        return num / den.clamp_min(torch.finfo(self.W.dtype).tiny)


def regularization_path(problem: SelectionProblem, radii: list[float] | np.ndarray, norm: Norm = "fro",
                        steps: int = 300, loss: Loss = "logistic", generator: torch.Generator | None = None,
                        init_std: float = 1e-3, progress: bool = False) -> RegPathResult:
    """Constrained minimizers W_R (len(radii), ..., d, d) of the attention loss over {||W|| <= R}.

    Each radius runs ``steps`` projected steps W <- P_R(W - eta R g/||g||) with a per-problem step eta
    (x1.5 after a decrease, /2 and rejected after an increase), warm-started from the previous solution.
    """
    radii = np.asarray(radii, dtype=np.float64)
    if radii.ndim != 1 or len(radii) == 0 or (radii <= 0).any() or (np.diff(radii) <= 0).any():
        raise ConfigError(f"radii must be a non-empty increasing list of positive numbers, got {radii.tolist()}")
    if not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be an integer >= 1, got {steps!r}")
    if norm not in ("fro", "nuc"):
        raise ConfigError(f"norm must be one of ['fro', 'nuc'], got {norm!r}")
    d, dtype, shape = problem.d, problem.X.dtype, problem.batch_shape
    W = torch.randn((*shape, d, d), generator=generator, dtype=torch.float64).to(dtype) * init_std
    Ws, losses = [], []
    it = list(enumerate(radii))
    if progress:
        from rich.console import Console
        from rich.progress import track

        it = track(it, description=f"regularization path ({norm})", transient=True, console=Console(stderr=True))
    with single_thread():
        for k, R in it:
            if k > 0:
                W = W * (R / radii[k - 1])
            W = project_ball(W, float(R), norm)
            eta = torch.full(shape, 0.1, dtype=dtype)
            for _ in range(steps):
                # reference tokens = current selection, so that L - L_ref is tiny and fully resolved in float64
                alpha = torch.softmax(torch.einsum("...ntd,...de,...ne->...nt", problem.X, W, problem.Z), -1).argmax(-1)
                cur = excess_loss(problem, W, alpha, loss)
                g = scaled_grad_W(problem, W, loss=loss)
                g = g / g.flatten(start_dim=-2).norm(dim=-1).clamp_min(torch.finfo(dtype).tiny)[..., None, None]
                cand = project_ball(W - (eta * R)[..., None, None] * g, float(R), norm)
                new = excess_loss(problem, cand, alpha, loss)
                ok = new <= cur
                W = torch.where(ok[..., None, None], cand, W)
                eta = torch.where(ok, (eta * 1.5).clamp_max(1.0), eta * 0.5)
            Ws.append(W.clone())
            losses.append(excess_loss(problem, W, problem.optimal_tokens(), loss))
    return RegPathResult(radii=radii, W=torch.stack(Ws), loss=torch.stack(losses))

