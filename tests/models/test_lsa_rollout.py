"""Damped roll-out of one LSA layer vs a NumPy token-by-token loop of the paper's rule (y-slots only, damped)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mesaopt.errors import ConfigError
from mesaopt.models import LSA
from mesaopt.models.lsa_rollout import damped_rollout


def numpy_rollout(kq, pv, cx, cy, qx, steps: int, lam: float, y_only: bool) -> np.ndarray:
    """e <- e + lam * (M e) (y-row only if y_only), S from the current context tokens; -> (steps, B, Q)."""
    ctx = np.concatenate([cx, cy[..., None]], -1)
    qry = np.concatenate([qx, np.zeros(qx.shape[:-1] + (1,))], -1)
    n, outs = ctx.shape[1], []
    for _ in range(steps):
        s = np.einsum("bni,bnj->bij", ctx, ctx) / n
        m = sum(pv[h] @ s @ kq[h] for h in range(kq.shape[0]))
        if y_only:
            m[:, :-1, :] = 0.0
        ctx, qry = ctx + lam * np.einsum("bij,bnj->bni", m, ctx), qry + lam * np.einsum("bij,bqj->bqi", m, qry)
        outs.append(-qry[..., -1])
    return np.stack(outs)


@pytest.mark.parametrize("y_only", [True, False])
def test_rollout_matches_numpy_rule(y_only):
    g = torch.Generator().manual_seed(0)
    cx = torch.rand(3, 6, 4, generator=g, dtype=torch.float64) - 0.5
    cy, qx = torch.randn(3, 6, generator=g, dtype=torch.float64), torch.rand(3, 2, 4, generator=g,
                                                                             dtype=torch.float64) - 0.5
    m = LSA(d=4, layers=2, heads=2, init_std=0.4, seed=3).double()
    kq, pv = (w[1].detach().numpy() for w in m.matrices())
    got = damped_rollout(m, cx, cy, qx, 5, damping=0.6, layer=1, y_only=y_only)
    ref = numpy_rollout(kq, pv, cx.numpy(), cy.numpy(), qx.numpy(), 5, 0.6, y_only)
    np.testing.assert_allclose(got.detach().numpy(), ref, rtol=1e-10, atol=1e-12)


def test_undamped_full_rollout_is_the_tied_model():
    g = torch.Generator().manual_seed(1)
    data = (torch.rand(2, 5, 3, generator=g, dtype=torch.float64) - 0.5, torch.randn(2, 5, generator=g,
            dtype=torch.float64), torch.rand(2, 1, 3, generator=g, dtype=torch.float64) - 0.5)
    tied = LSA(d=3, layers=4, init_std=0.3, tied=True).double()
    torch.testing.assert_close(damped_rollout(tied, *data, 4, damping=1.0, y_only=False).detach(),
                               tied.forward_layers(*data).detach())


def test_bad_arguments():
    m = LSA(d=3)
    x = (torch.zeros(1, 2, 3), torch.zeros(1, 2), torch.zeros(1, 1, 3))
    for kw, field in (({"steps": 0}, "steps"), ({"steps": 2, "damping": float("nan")}, "damping"),
                      ({"steps": 2, "layer": 1}, "layer")):
        with pytest.raises(ConfigError, match=field):
            damped_rollout(m, *x, **kw)
