"""Attention GD: closed-form gradients vs autograd / finite differences / mpmath, batching, normalized steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mesaopt.errors import ConfigError
from mesaopt.svm import (
    PAPER_KQ_WEIGHT_DECAY,
    att_svm,
    attention_grads,
    attention_loss,
    attention_output,
    correlation,
    implicit_bias_demo,
    regularization_path,
    scaled_grad_W,
    train_attention,
)
from mesaopt.tasks.selection import sample_selection


@pytest.fixture
def prob():
    return sample_selection(3, 4, 5, torch.Generator().manual_seed(0), batch=2)


def _autograd_loss(p, W, v, loss):
    """Reference loss written independently: explicit softmax, mean over sequences."""
    a = torch.einsum("bntd,bde,bne->bnt", p.X, W, p.Z)
    s = torch.exp(a - a.max(-1, keepdim=True).values)
    s = s / s.sum(-1, keepdim=True)
    f = torch.einsum("bnt,bntd,bd->bn", s, p.X, v)
    u = p.y * f
    return (torch.log1p(torch.exp(-u)) if loss == "logistic" else -u).mean(-1)


@pytest.mark.parametrize("loss", ["logistic", "correlation"])
def test_grads_match_autograd(prob, loss):
    W = torch.randn(2, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    v = prob.v.clone().requires_grad_(True)
    ref = _autograd_loss(prob, W, v, loss)
    gW_ref, gv_ref = torch.autograd.grad(ref.sum(), (W, v))
    lval, gW, gv, s = attention_grads(prob, W.detach(), v.detach(), loss)
    torch.testing.assert_close(lval, ref.detach(), atol=1e-13, rtol=1e-12)
    torch.testing.assert_close(gW, gW_ref, atol=1e-13, rtol=1e-10)
    torch.testing.assert_close(gv, gv_ref, atol=1e-13, rtol=1e-10)
    torch.testing.assert_close(s.sum(-1), torch.ones(2, 3, dtype=torch.float64))
    torch.testing.assert_close(attention_loss(prob, W.detach(), v.detach(), loss), ref.detach())
    # the log-domain direction equals the true gradient's direction
    gs = scaled_grad_W(prob, W.detach(), v.detach(), loss)
    unit = lambda g: g / g.flatten(1).norm(dim=-1)[:, None, None]  # noqa: E731
    torch.testing.assert_close(unit(gs), unit(gW_ref), atol=1e-12, rtol=1e-10)


def test_grad_matches_finite_differences(prob):
    W = torch.randn(2, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    _, gW, _, _ = attention_grads(prob, W)
    E = torch.randn(2, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    h = 1e-6
    fd = (attention_loss(prob, W + h * E) - attention_loss(prob, W - h * E)) / (2 * h)
    torch.testing.assert_close((gW * E).sum((-2, -1)), fd, atol=1e-9, rtol=1e-7)


def test_kq_chain_rule_matches_autograd(prob):
    g = torch.Generator().manual_seed(4)
    K = torch.randn(2, 5, 3, dtype=torch.float64, generator=g, requires_grad=True)
    Q = torch.randn(2, 5, 3, dtype=torch.float64, generator=g, requires_grad=True)
    gK_ref, gQ_ref = torch.autograd.grad(_autograd_loss(prob, K @ Q.transpose(1, 2), prob.v, "logistic").sum(), (K, Q))
    _, G, _, _ = attention_grads(prob, (K @ Q.transpose(1, 2)).detach())
    torch.testing.assert_close(G @ Q.detach(), gK_ref, atol=1e-13, rtol=1e-10)
    torch.testing.assert_close(G.transpose(1, 2) @ K.detach(), gQ_ref, atol=1e-13, rtol=1e-10)


def test_scaled_direction_survives_saturation_vs_mpmath():
    """At ||W|| ~ 1e3 the true gradient underflows to 0 in float64; the log-domain direction matches mpmath."""
    mpmath = pytest.importorskip("mpmath")
    p = sample_selection(2, 3, 2, torch.Generator().manual_seed(5))
    W = torch.randn(2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    a = torch.einsum("ntd,de,ne->nt", p.X, W, p.Z).sort(-1, descending=True).values
    W = W * (800.0 / (a[:, 0] - a[:, 1]).min())  # every non-top token is > 800 nats below the top one
    X, Z, y, v = (t.numpy() for t in (p.X, p.Z, p.y, p.v))
    with mpmath.workdps(800):  # h_top - f ~ 1e-348: the naive formula needs that many digits
        G = [[mpmath.mpf(0)] * 2 for _ in range(2)]
        for i in range(2):  # naive formula in 800-digit arithmetic
            a = [mpmath.mpf(float(X[i, t] @ W.numpy() @ Z[i])) for t in range(3)]
            e = [mpmath.exp(x) for x in a]
            s = [x / sum(e) for x in e]
            h = [mpmath.mpf(float(X[i, t] @ v)) for t in range(3)]
            f = sum(s[t] * h[t] for t in range(3))
            c = -y[i] / (1 + mpmath.exp(y[i] * f)) / 2
            for t in range(3):
                for r in range(2):
                    for q in range(2):
                        G[r][q] += c * s[t] * (h[t] - f) * X[i, t, r] * Z[i, q]
        Gm = np.array([[float(G[r][q] / mpmath.sqrt(sum(G[a][b] ** 2 for a in range(2) for b in range(2))))
                        for q in range(2)] for r in range(2)])
    _, g64, _, _ = attention_grads(p, W)
    gs = scaled_grad_W(p, W)
    assert float(g64.norm()) == 0.0  # float64 underflow: plain normalized GD would stall here
    np.testing.assert_allclose((gs / gs.norm()).numpy(), Gm, atol=1e-10)


def test_batched_training_equals_per_problem_runs(prob):
    W0 = torch.randn(2, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    both = train_attention(prob, steps=30, W0=W0, record_every=10)
    for b in range(2):
        one = train_attention(prob[b], steps=30, W0=W0[b], record_every=10)
        torch.testing.assert_close(both.W[b], one.W, atol=1e-12, rtol=1e-12)
        torch.testing.assert_close(both.loss[:, b], one.loss)
    assert both.steps.tolist() == [0, 10, 20, 30] and both.W_hist.shape == (4, 2, 5, 5)


def test_normalized_steps_and_kq_parametrization(prob):
    res = train_attention(prob, steps=5, lr=0.1, generator=torch.Generator().manual_seed(0))
    steps = (res.W_hist[1:] - res.W_hist[:-1]).flatten(2).norm(dim=-1)
    torch.testing.assert_close(steps, torch.full_like(steps, 0.1))
    kq = train_attention(prob, param="KQ", steps=5, width=2, generator=torch.Generator().manual_seed(0))
    assert kq.K.shape == (2, 5, 2) and torch.allclose(kq.W, kq.K @ kq.Q.transpose(1, 2))
    plain = train_attention(prob, steps=5, lr=0.5, normalized=False, W0=torch.zeros(2, 5, 5, dtype=torch.float64))
    _, g0, _, _ = attention_grads(prob, torch.zeros(2, 5, 5, dtype=torch.float64))
    torch.testing.assert_close(plain.W_hist[1], -0.5 * g0)


def test_weight_decay_step(prob):
    W0 = torch.randn(2, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    res = train_attention(prob, steps=1, lr=0.3, normalized=False, weight_decay=0.05, W0=W0)
    _, g, _, _ = attention_grads(prob, W0)
    torch.testing.assert_close(res.W, W0 - 0.3 * (g + 0.1 * W0))
    kq = train_attention(prob, param="KQ", steps=3, weight_decay=2.2e-16, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(kq.W).all()
    with pytest.raises(ConfigError, match="weight_decay"):
        train_attention(prob, weight_decay=-1.0)


def test_kq_vanishing_weight_decay_endpoint_is_the_nuclear_ball_minimizer():
    """With lambda (||K||² + ||Q||²), normalized GD on (K, Q) stops growing ||W|| and ends at the minimizer of the
    loss over the nuclear ball of its own radius, found independently by projected GD on W (regularization path)."""
    p = sample_selection(3, 4, 5, torch.Generator().manual_seed(3), batch=3)
    lam = 1e-8
    res = train_attention(p, param="KQ", steps=1500, weight_decay=lam, generator=torch.Generator().manual_seed(0),
                          record_every=100)
    free = train_attention(p, param="KQ", steps=1500, generator=torch.Generator().manual_seed(0), record_every=1500)
    late = res.w_norm[-5:]
    assert ((late.max(0).values - late.min(0).values) / late.mean(0) < 0.01).all()  # norm plateau
    assert (free.w_norm[-1] > 10 * res.w_norm[-1]).all()  # without lambda ||W|| keeps growing (~ iterations²)
    for b in range(3):
        radius = float(torch.linalg.matrix_norm(res.W[b], "nuc"))
        ref = regularization_path(p[b], [radius], norm="nuc", steps=300)
        assert correlation(res.W[b], ref.W[-1]) > 0.999


def test_gd_converges_to_svm_direction_and_saturates():
    p = sample_selection(2, 3, 4, torch.Generator().manual_seed(1))
    res = train_attention(p, steps=600, generator=torch.Generator().manual_seed(0), record_every=50)
    sel = res.selected
    sol = att_svm(p.X, p.Z, sel, norm="fro")
    corr = res.corr(torch.from_numpy(sol.W))
    assert corr[-1] > 0.99 and corr[-1] > corr[1]
    assert res.mass(sel)[-1] > 0.999 and res.w_norm[-1] > 50
    assert (np.diff(res.loss.numpy()) <= 1e-12).mean() > 0.8


def test_joint_v_training_decreases_loss(prob):
    res = train_attention(prob, steps=100, train_v=True, generator=torch.Generator().manual_seed(0), record_every=100)
    assert not torch.allclose(res.v, prob.v)
    assert (res.loss[-1] < res.loss[0]).all()
    torch.testing.assert_close(res.loss[-1], attention_loss(prob, res.W, res.v))
    assert attention_output(prob, res.W, res.v).shape == (2, 3)


def test_bad_config(prob):
    with pytest.raises(ConfigError, match="param"):
        train_attention(prob, param="QK")
    with pytest.raises(ConfigError, match="loss"):
        train_attention(prob, loss="hinge")
    with pytest.raises(ConfigError, match="lr"):
        train_attention(prob, lr=0.0)


def test_demo_uses_the_papers_kq_weight_decay():
    kq = implicit_bias_demo(param="KQ", n=2, T=3, d=4, steps=300)
    assert kq["weight_decay"] == PAPER_KQ_WEIGHT_DECAY == 2.2e-16 and kq["norm"] == "nuc"
    assert kq["feasible"] and kq["corr"] > 0.95 and kq["svm_min_margin"] >= 1 - 1e-6
    assert implicit_bias_demo(param="W", n=2, T=3, d=4, steps=50)["weight_decay"] == 0.0
