from __future__ import annotations

import numpy as np
import pytest
import torch

import mesaopt.models as models
from mesaopt.errors import ConfigError, ShapeError
from mesaopt.models.ebt import EBT, EBTFeedForward, ReplayBuffer

F64 = torch.float64
SMALL = {"dim": 16, "layers": 2, "heads": 2, "mlp_ratio": 2}


def _data(gen, b=3, n=5, q=4, d=3, dtype=F64):
    return (torch.randn(b, n, d, generator=gen, dtype=dtype), torch.randn(b, n, generator=gen, dtype=dtype),
            torch.randn(b, q, d, generator=gen, dtype=dtype), torch.randn(b, q, generator=gen, dtype=dtype))


def _model(seed=0, **kw) -> EBT:
    torch.manual_seed(seed)
    return EBT(d=3, **{**SMALL, **kw}).double()


def test_energy_gradient_matches_finite_differences(gen):
    m = _model()
    cx, cy, qx, _ = _data(gen)
    y = torch.randn(3, 4, generator=gen, dtype=F64)
    e, g = m.energy_grad(cx, cy, qx, y)
    assert e.shape == g.shape == (3, 4)
    h = 1e-6
    fd = np.zeros((3, 4))
    for j in range(4):  # loop over query coordinates: every (task, query) energy only depends on its own ŷ
        dy = torch.zeros_like(y)
        dy[:, j] = h
        fd[:, j] = ((m.energy(cx, cy, qx, y + dy) - m.energy(cx, cy, qx, y - dy))[:, j] / (2 * h)).detach().numpy()
    np.testing.assert_allclose(g.numpy(), fd, rtol=1e-5, atol=1e-7)


def test_queries_are_independent(gen):
    m = _model()
    cx, cy, qx, _ = _data(gen)
    y = torch.randn(3, 4, generator=gen, dtype=F64)
    e = m.energy(cx, cy, qx, y)
    y2, qx2 = y.clone(), qx.clone()
    y2[:, 1:] += 1.0
    qx2[:, 1:] += 1.0
    e2 = m.energy(cx, cy, qx2, y2)
    torch.testing.assert_close(e[:, 0], e2[:, 0])
    # a single query alone gives the same energy as inside a group of queries
    torch.testing.assert_close(m.energy(cx, cy, qx[:, :1], y[:, :1])[:, 0], e[:, 0])
    assert not torch.allclose(e[:, 1:], e2[:, 1:])


def test_one_step_is_gradient_descent_and_zero_steps_return_init(gen):
    m = _model(alpha_init=0.3)
    cx, cy, qx, _ = _data(gen)
    y0 = torch.randn(3, 4, generator=gen, dtype=F64)
    torch.testing.assert_close(m.predict(cx, cy, qx, steps=0, init=y0), y0)
    assert torch.equal(m.predict(cx, cy, qx, steps=0, init="zeros"), torch.zeros(3, 4, dtype=F64))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    torch.testing.assert_close(m.predict(cx, cy, qx, steps=0, init="noise", generator=g1),
                               m.initial_guess((3, 4), cx, "noise", g2))
    _, grad = m.energy_grad(cx, cy, qx, y0)
    torch.testing.assert_close(m.predict(cx, cy, qx, steps=1, init=y0), y0 - 0.3 * grad)
    out = m.predict(cx, cy, qx, steps=3, init=y0, return_trajectory=True)
    assert out.trajectory.shape == out.energies.shape == (4, 3, 4)
    torch.testing.assert_close(out.trajectory[0], y0)
    torch.testing.assert_close(out.pred, out.trajectory[-1])
    torch.testing.assert_close(out.energies[-1], m.energy(cx, cy, qx, out.pred).detach())


def test_step_clamp_limits_each_change(gen):
    m = _model(alpha_init=5.0, max_step_change=0.01)
    cx, cy, qx, _ = _data(gen)
    traj = m.predict(cx, cy, qx, steps=3, init="zeros", return_trajectory=True).trajectory
    assert (traj.diff(dim=0).abs() <= 0.01 + 1e-12).all()


def test_self_verification_keeps_lowest_energy_candidate(gen):
    m = _model()
    cx, cy, qx, _ = _data(gen)
    k, s = 5, 2
    out = m.predict(cx, cy, qx, steps=s, n_samples=k, self_verify=True, generator=torch.Generator().manual_seed(3),
                    return_trajectory=True)
    # independent reference: the same K initial guesses run one at a time, argmin of energies in NumPy
    inits = m.initial_guess((3, k * 4), cx, "noise", torch.Generator().manual_seed(3)).view(3, k, 4)
    finals = np.stack([m.predict(cx, cy, qx, steps=s, init=inits[:, j]).numpy() for j in range(k)], axis=1)
    energies = np.stack([m.energy(cx, cy, qx, torch.from_numpy(finals[:, j])).detach().numpy() for j in range(k)],
                        axis=1)
    best = energies.argmin(axis=1)
    want = np.take_along_axis(finals, best[:, None, :], axis=1)[:, 0]
    np.testing.assert_allclose(out.pred.numpy(), want, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out.energies[-1].numpy(), energies.min(axis=1), rtol=1e-10, atol=1e-10)
    avg = m.predict(cx, cy, qx, steps=s, n_samples=k, self_verify=False, generator=torch.Generator().manual_seed(3))
    np.testing.assert_allclose(avg.numpy(), finals.mean(axis=1), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("steps", "detach_steps"), [(2, False), (1, True)])
def test_unrolled_loss_gradient_matches_finite_differences(gen, steps, detach_steps):
    """Full unroll: autograd through S steps (second order) equals the finite-difference total derivative.

    With detached steps the gradient is truncated by design (the paper's default), exact only for S = 1.
    """
    m = _model(steps=steps, alpha_init=0.4, detach_steps=detach_steps, init="zeros")
    cx, cy, qx, qy = _data(gen)
    loss, info = m.loss(cx, cy, qx, qy)
    assert int(info["steps"]) == steps
    params = [m.alpha_raw, m.backbone.embed.weight]
    grads = torch.autograd.grad(loss, params)
    h = 1e-6
    for p, g, idx in ((m.alpha_raw, grads[0], ()), (m.backbone.embed.weight, grads[1], (2, 3))):
        with torch.no_grad():
            p[idx] += h
        up = m.loss(cx, cy, qx, qy)[0].item()
        with torch.no_grad():
            p[idx] -= 2 * h
        down = m.loss(cx, cy, qx, qy)[0].item()
        with torch.no_grad():
            p[idx] += h
        assert abs(g[idx].item() - (up - down) / (2 * h)) < 1e-6 * max(1.0, abs(g[idx].item()))


def test_full_unroll_differs_from_detached_steps(gen):
    cx, cy, qx, qy = _data(gen)
    a = _model(init="zeros", detach_steps=True)
    b = _model(init="zeros", detach_steps=False)
    da = torch.autograd.grad(a.loss(cx, cy, qx, qy)[0], a.alpha_raw)[0]
    db = torch.autograd.grad(b.loss(cx, cy, qx, qy)[0], b.alpha_raw)[0]
    assert not torch.allclose(da, db)


def test_randomised_training_step_is_deterministic_under_seed(gen):
    cx, cy, qx, qy = _data(gen)
    kw = {"rand_steps": 2, "rand_alpha_scale": 2.0, "langevin_std": 0.05, "steps": 1}

    def run(seed):
        m = _model(**kw)
        loss, info = m.loss(cx, cy, qx, qy, generator=torch.Generator().manual_seed(seed))
        loss.backward()
        grads = [p.grad.clone() for p in m.parameters() if p.grad is not None]
        return loss.detach(), info["final"], grads, int(info["steps"])

    l1, f1, g1, s1 = run(7)
    l2, f2, g2, s2 = run(7)
    assert torch.equal(l1, l2) and torch.equal(f1, f2) and s1 == s2
    assert all(torch.equal(a, b) for a, b in zip(g1, g2, strict=True))
    assert len(g1) > 10
    outs = {run(seed)[3] for seed in range(5)}
    assert outs <= {1, 2, 3} and len(outs) > 1  # random number of steps in steps + U{0..rand_steps}
    assert not torch.equal(run(8)[0], l1)


def test_training_forward_is_differentiable_and_eval_forward_predicts(gen):
    m = _model(init="zeros")
    cx, cy, qx, qy = _data(gen)
    m.train()
    pred = m(cx, cy, qx)
    assert pred.shape == (3, 4) and pred.requires_grad
    ((pred - qy) ** 2).mean().backward()
    assert m.alpha_raw.grad is not None and m.backbone.embed.weight.grad is not None
    m.eval()
    with torch.no_grad():
        out = m(cx, cy, qx)
    torch.testing.assert_close(out, m.predict(cx, cy, qx))
    assert not out.requires_grad


def test_permutation_invariance_and_empty_context(gen):
    m = _model(init="zeros")
    cx, cy, qx, _ = _data(gen)
    perm = torch.tensor([4, 2, 0, 1, 3])
    torch.testing.assert_close(m.predict(cx, cy, qx), m.predict(cx[:, perm], cy[:, perm], qx))
    assert m.predict(cx[:, :0], cy[:, :0], qx).shape == (3, 4)


def test_spec_roundtrip_and_feedforward_twin(gen):
    m = _model(steps=3, rand_steps=1, max_step_change=2.0)
    m2 = models.build(m.spec())
    assert isinstance(m2, EBT) and m2.spec() == m.spec()
    m2.load_state_dict(m.float().state_dict())
    ff = models.build({"kind": "ebt_ff", "d": 3, **SMALL})
    assert isinstance(ff, EBTFeedForward)
    cx, cy, qx, _ = _data(gen, dtype=torch.float32)
    assert ff(cx, cy, qx).shape == (3, 4)
    # same backbone size: the EBT only adds the step size alpha
    n_ebt = sum(p.numel() for p in m2.parameters())
    assert n_ebt == sum(p.numel() for p in ff.parameters()) + 1


def test_bad_inputs_raise_clear_errors(gen):
    m = _model()
    cx, cy, qx, qy = _data(gen)
    with pytest.raises(ShapeError, match="d=3"):
        m.predict(cx[..., :2], cy, qx[..., :2])
    with pytest.raises(ShapeError):
        m.predict(cx, cy[:, :2], qx)
    with pytest.raises(ConfigError, match="steps"):
        m.predict(cx, cy, qx, steps=-1)
    with pytest.raises(ConfigError, match="n_samples"):
        m.predict(cx, cy, qx, n_samples=0)
    with pytest.raises(ShapeError, match="init"):
        m.predict(cx, cy, qx, init=torch.zeros(3, 5, dtype=F64))
    with pytest.raises(ConfigError, match="n_samples"):
        m.predict(cx, cy, qx, n_samples=2, init=torch.zeros(3, 4, dtype=F64))
    with pytest.raises(ShapeError, match="qry_y"):
        m.loss(cx, cy, qx, qy[:, :2])
    for bad in ({"steps": 0}, {"heads": 3}, {"init": "ones"}, {"rand_alpha_scale": 0.5}, {"alpha_init": 0.0},
                {"loss_steps": "some"}, {"max_step_change": -1.0}, {"rand_steps": -1}):
        with pytest.raises(ConfigError):
            EBT(d=3, **{**SMALL, **bad})


def test_replay_buffer_is_fifo_and_samples_rows(gen):
    rb = ReplayBuffer(max_size=5)
    with pytest.raises(ConfigError, match="empty"):
        rb.sample(2)
    for i in range(3):
        rb.add(torch.full((2, 4, 3), float(i)), torch.full((2, 4), float(i)), torch.full((2, 1, 3), float(i)),
               torch.full((2, 1), float(i)), torch.full((2, 1), float(i)))
    assert len(rb) == 5
    assert rb.data[0][:, 0, 0].tolist() == [0.0, 1.0, 1.0, 2.0, 2.0]
    rows = rb.sample(7, gen)
    assert [tuple(r.shape) for r in rows] == [(7, 4, 3), (7, 4), (7, 1, 3), (7, 1), (7, 1)]
    assert all(torch.equal(rows[0][:, 0, 0], r.reshape(7, -1)[:, 0]) for r in rows[1:])  # rows stay aligned
    with pytest.raises(ShapeError):
        rb.add(torch.zeros(1, 3, 3), torch.zeros(1, 3), torch.zeros(1, 1, 3), torch.zeros(1, 1), torch.zeros(1, 1))
    with pytest.raises(ConfigError):
        ReplayBuffer(0)


def test_differentiable_prediction_gives_query_sensitivity(gen):
    m = _model(init="zeros")
    cx, cy, qx, _ = _data(gen, q=2)
    qx = qx.clone().requires_grad_(True)
    pred = m.predict(cx, cy, qx, steps=2, create_graph=True)
    (g,) = torch.autograd.grad(pred.sum(), qx)
    h = 1e-6
    e = torch.zeros_like(qx)
    e[:, 1, 2] = h
    with torch.no_grad():
        fd = (m.predict(cx, cy, qx + e, steps=2) - m.predict(cx, cy, qx - e, steps=2))[:, 1] / (2 * h)
    torch.testing.assert_close(g[:, 1, 2], fd, rtol=1e-5, atol=1e-7)
    assert not m.predict(cx, cy, qx, steps=2).requires_grad


def test_generic_trainer_trains_the_ebt_through_its_training_forward(tmp_path):
    from mesaopt.tasks import LinearRegression
    from mesaopt.train import TrainConfig, train
    from mesaopt.train.checkpoint import load_model

    torch.manual_seed(0)
    m = EBT(d=2, **SMALL, steps=1, rand_steps=1)
    before = [p.detach().clone() for p in m.parameters()]
    cfg = TrainConfig(steps=2, batch_size=4, n_points=5, eval_every=0, ckpt_every=0, eval_batch_size=4)
    res = train(m, LinearRegression(d=2), cfg, out=tmp_path, progress=False)
    assert res.step == 2 and np.isfinite(res.final["eval_loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, m.parameters(), strict=True))
    loaded, _ = load_model(tmp_path)
    assert isinstance(loaded, EBT) and loaded.spec() == m.spec()
