from __future__ import annotations

import numpy as np
import pytest
import torch

from mesaopt.analysis import metrics as M
from mesaopt.constructions import lsa_gd
from mesaopt.errors import ConfigError, ShapeError
from mesaopt.models.lsa import LSA

F64 = torch.float64


def _data(b=3, n=5, q=4, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, n, d, generator=g, dtype=F64), torch.randn(b, n, generator=g, dtype=F64),
            torch.randn(b, q, d, generator=g, dtype=F64), torch.randn(b, q, generator=g, dtype=F64))


def kernel_learner(ctx_x, ctx_y, qry_x):
    """A learner that is nonlinear in the query: softmax-kernel smoothing of the context labels."""
    att = torch.softmax(qry_x @ ctx_x.transpose(1, 2), dim=-1)  # (B, Q, N)
    return (att * ctx_y.unsqueeze(1)).sum(-1) + torch.tanh(qry_x).pow(2).sum(-1)


def test_mse_half_mse_pred_diff():
    a, b = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[0.0, 2.0], [5.0, 1.0]])
    assert M.mse(a, b).item() == pytest.approx((1 + 0 + 4 + 9) / 4)
    assert M.half_mse(a, b).item() == pytest.approx((1 + 0 + 4 + 9) / 8)
    assert M.pred_diff(a, b) == pytest.approx((1 + 0 + 2 + 3) / 4)
    assert M.pred_diff(a, a) == 0.0
    with pytest.raises(ShapeError):
        M.mse(a, b[:, :1])


def _finite_diff(learner, cx, cy, qx, h=1e-5):
    out = torch.zeros_like(qx)
    for k in range(qx.shape[-1]):  # perturbing coordinate k of every query at once is exact: queries independent
        e = torch.zeros_like(qx)
        e[..., k] = h
        out[..., k] = (learner(cx, cy, qx + e) - learner(cx, cy, qx - e)) / (2 * h)
    return out


@pytest.mark.parametrize("which", ["kernel", "lsa"])
def test_sensitivity_matches_finite_differences(which):
    cx, cy, qx, _ = _data()
    learner = kernel_learner if which == "kernel" else LSA(d=3, layers=3, heads=2, init_std=0.4, seed=5).to(F64)
    s = M.sensitivity(learner, cx, cy, qx)
    assert s.shape == qx.shape and not s.requires_grad
    with torch.no_grad():
        fd = _finite_diff(learner, cx, cy, qx)
    torch.testing.assert_close(s, fd, rtol=1e-7, atol=1e-8)


def test_sensitivity_of_one_gd_step_is_w1():
    cx, cy, qx, _ = _data(n=7, d=4)
    lr = 0.7
    w1 = lr / 7 * torch.einsum("bnd,bn->bd", cx, cy)  # closed form of one GD step from w = 0
    s = M.sensitivity(lsa_gd(4, steps=1, lr=lr, dtype=F64), cx, cy, qx)
    torch.testing.assert_close(s, w1.unsqueeze(1).expand_as(s), rtol=1e-12, atol=1e-12)
    assert M.model_diff(s, w1.unsqueeze(1).expand_as(s), cx, cy, qx) < 1e-12


def test_sensitivity_of_k_gd_steps_is_fitted_w():
    from mesaopt.algorithms import GD

    cx, cy, qx, _ = _data(n=4, d=6)
    w = GD(steps=3, lr=0.4).fit(cx, cy)  # (B, d)
    s = M.sensitivity(lsa_gd(6, steps=3, lr=0.4, dtype=F64), cx, cy, qx)
    torch.testing.assert_close(s, w.unsqueeze(1).expand_as(s), rtol=1e-10, atol=1e-12)
    assert M.sens_cos(GD(steps=3, lr=0.4), lsa_gd(6, steps=3, lr=0.4, dtype=F64), cx, cy, qx) == pytest.approx(1.0)


def test_sens_cos_and_model_diff():
    cx, cy, qx, _ = _data()
    lsa = LSA(d=3, layers=2, init_std=0.4).to(F64)
    assert M.sens_cos(lsa, lsa, cx, cy, qx) == pytest.approx(1.0, abs=1e-12)
    assert M.model_diff(lsa, lsa, cx, cy, qx) == 0.0

    def neg(a, b, c):
        return -2.0 * lsa(a, b, c)

    assert M.sens_cos(lsa, neg, cx, cy, qx) == pytest.approx(-1.0, abs=1e-12)
    s = M.sensitivity(lsa, cx, cy, qx)
    want = float(np.linalg.norm(3.0 * s.numpy(), axis=-1).mean())
    assert M.model_diff(lsa, neg, cx, cy, qx) == pytest.approx(want, rel=1e-12)
    # cosine with an independent NumPy computation on two different learners
    s2 = M.sensitivity(kernel_learner, cx, cy, qx).numpy()
    a = s.numpy()
    cos = (a * s2).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(s2, axis=-1))
    assert M.sens_cos(lsa, kernel_learner, cx, cy, qx) == pytest.approx(cos.mean(), rel=1e-10)


def test_sensitivity_of_query_independent_learner_is_zero():
    cx, cy, qx, _ = _data()

    def mean_learner(a, b, c):
        return b.mean(1, keepdim=True).expand(-1, c.shape[1])

    assert torch.count_nonzero(M.sensitivity(mean_learner, cx, cy, qx)) == 0


def test_interpolate_endpoints_and_midpoint():
    a = LSA(d=3, layers=2, heads=2, param="separate", init_std=0.3, seed=1).to(F64)
    b = LSA(d=3, layers=2, heads=2, param="separate", init_std=0.3, seed=2).to(F64)
    cx, cy, qx, _ = _data()
    for alpha, ref in [(0.0, a), (1.0, b)]:
        m = M.interpolate(a, b, alpha)
        assert m is not a and m is not b
        torch.testing.assert_close(m(cx, cy, qx), ref(cx, cy, qx), rtol=1e-12, atol=1e-12)
    mid = M.interpolate(a, b, 0.25)
    torch.testing.assert_close(mid.k_weight, 0.75 * a.k_weight + 0.25 * b.k_weight)
    # merged: interpolating weights interpolates the effective matrices linearly
    g = lsa_gd(3, steps=2, lr=0.5, dtype=F64)
    r = LSA(d=3, layers=2, init_std=0.3, seed=3).to(F64)
    torch.testing.assert_close(M.interpolate(g, r, 0.5).w_pv(1, 0), 0.5 * (g.w_pv(1, 0) + r.w_pv(1, 0)))
    with pytest.raises(ConfigError):
        M.interpolate(a, LSA(d=3, layers=1, param="separate").to(F64), 0.5)
    with pytest.raises(ConfigError):
        M.interpolate(a, b, float("nan"))


def test_compare_keys_and_values():
    cx, cy, qx, qy = _data()
    gd = lsa_gd(3, steps=1, lr=0.5, dtype=F64)
    lsa = LSA(d=3, init_std=0.4).to(F64)
    res = M.compare({"gd": gd, "lsa": lsa, "kern": kernel_learner}, cx, cy, qx, qy)
    assert set(res) == {"gd_loss", "lsa_loss", "kern_loss"} | {
        f"{m}_{p}" for m in ["pred_diff", "model_diff", "sens_cos"] for p in ["gd_lsa", "gd_kern", "lsa_kern"]}
    assert res["gd_loss"] == pytest.approx(M.mse(gd(cx, cy, qx), qy).item())
    assert res["pred_diff_gd_lsa"] == pytest.approx(M.pred_diff(gd(cx, cy, qx), lsa(cx, cy, qx)))
    assert res["sens_cos_gd_kern"] == pytest.approx(M.sens_cos(gd, kernel_learner, cx, cy, qx))
    half = M.compare({"gd": gd, "lsa": lsa}, cx, cy, qx, qy, loss="half_mse", sensitivities=False)
    assert set(half) == {"gd_loss", "lsa_loss", "pred_diff_gd_lsa"}
    assert half["gd_loss"] == pytest.approx(res["gd_loss"] / 2)
    with pytest.raises(ConfigError):
        M.compare({"gd": gd}, cx, cy, qx, qy, loss="l1")
    with pytest.raises(ShapeError):
        M.compare({"gd": gd}, cx, cy, qx, qy[:, :1])
