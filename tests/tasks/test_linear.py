from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from mesaopt.errors import ShapeError
from mesaopt.tasks import LinearRegression, TaskBatch, build


def test_shapes_and_labels_are_linear(gen):
    task = LinearRegression(d=4, noise_std=0.0)
    b = task.sample(8, 6, gen)
    assert b.xs.shape == (8, 6, 4) and b.ys.shape == (8, 6) and b.params["w"].shape == (8, 4)
    np.testing.assert_allclose(b.ys.numpy(), np.einsum("btd,bd->bt", b.xs.numpy(), b.params["w"].numpy()),
                               rtol=1e-5, atol=1e-6)


def test_same_seed_same_batch_and_different_seed_differs():
    task = LinearRegression(d=3, noise_std=0.1)
    a = task.sample(4, 5, torch.Generator().manual_seed(7))
    b = task.sample(4, 5, torch.Generator().manual_seed(7))
    c = task.sample(4, 5, torch.Generator().manual_seed(8))
    assert torch.equal(a.xs, b.xs) and torch.equal(a.ys, b.ys)
    assert not torch.equal(a.xs, c.xs)


def test_uniform_range_and_moments(gen):
    task = LinearRegression(d=3, x_dist="uniform", input_range=1.0)
    xs = task.sample(4000, 10, gen).xs
    assert xs.min() >= -0.5 and xs.max() <= 0.5
    cov = torch.einsum("nd,ne->de", xs.reshape(-1, 3).double(), xs.reshape(-1, 3).double()) / xs[..., 0].numel()
    np.testing.assert_allclose(cov.numpy(), task.covariance.numpy(), atol=3e-3)


def test_anisotropic_covariance_matches_spec(gen):
    task = LinearRegression(d=4, x_dist="anisotropic", condition_number=20.0, rotation_seed=3)
    ev = np.linalg.eigvalsh(task.covariance.numpy())
    assert ev.max() / ev.min() == pytest.approx(20.0, rel=1e-6)
    assert ev.mean() == pytest.approx(1.0, rel=1e-6)
    xs = task.sample(20000, 5, gen).xs.reshape(-1, 4).double()
    emp = (xs.T @ xs / xs.shape[0]).numpy()
    np.testing.assert_allclose(emp, task.covariance.numpy(), atol=0.05)


def test_given_eigenvalues():
    task = LinearRegression(d=3, x_dist="anisotropic", eigenvalues=[3.0, 2.0, 1.0])
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(task.covariance.numpy())), [1, 2, 3], atol=1e-10)


def test_noise_std_is_respected(gen):
    task = LinearRegression(d=2, noise_std=0.5)
    b = task.sample(20000, 4, gen)
    resid = b.ys - torch.einsum("btd,bd->bt", b.xs, b.params["w"])
    assert resid.std().item() == pytest.approx(0.5, rel=0.02)


def test_sparsity_has_exactly_k_nonzeros(gen):
    task = LinearRegression(d=10, sparsity=3)
    w = task.sample(500, 2, gen).params["w"]
    assert ((w != 0).sum(dim=1) == 3).all()


def test_finite_pool_draws_only_pool_members(gen):
    task = LinearRegression(d=3, n_tasks=4, pool_seed=5)
    w = task.sample(300, 2, gen).params["w"].double()
    dist = torch.cdist(w, task.pool)
    assert dist.min(dim=1).values.max() < 1e-6
    assert len(torch.unique(dist.argmin(dim=1))) == 4
    assert torch.equal(task.pool, LinearRegression(d=3, n_tasks=4, pool_seed=5).pool)


def test_spec_roundtrip():
    task = LinearRegression(d=5, noise_std=0.3, x_dist="uniform", input_range=1.0, n_tasks=8)
    again = build(task.spec())
    assert again.spec() == task.spec()
    assert torch.equal(again.pool, task.pool)


@pytest.mark.parametrize(
    "kwargs",
    [{"d": 0}, {"d": -3}, {"noise_std": -1.0}, {"x_dist": "cauchy"}, {"sparsity": 20, "d": 5},
     {"x_dist": "anisotropic"}, {"n_tasks": 0}, {"noise_std": float("nan")}],
)
def test_invalid_specs_raise(kwargs):
    with pytest.raises(ValidationError):
        LinearRegression(**kwargs)


def test_split_and_shape_errors(gen):
    b = LinearRegression(d=2).sample(3, 5, gen)
    cx, cy, qx, qy = b.split(4)
    assert cx.shape == (3, 4, 2) and cy.shape == (3, 4) and qx.shape == (3, 1, 2) and qy.shape == (3, 1)
    with pytest.raises(ShapeError, match="n_context"):
        b.split(5)
    with pytest.raises(ShapeError):
        TaskBatch(torch.zeros(2, 3), torch.zeros(2, 3))
