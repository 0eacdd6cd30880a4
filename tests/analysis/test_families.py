"""The table of algorithm families: every row fits, builds and reports consistently; scipy refinement."""

from __future__ import annotations

import math

import pytest
import torch

from mesaopt import algorithms, constructions
from mesaopt.analysis import families as fm
from mesaopt.analysis import identify as idf
from mesaopt.errors import ConfigError
from mesaopt.tasks import LinearRegression


def _batch(d=3, n=8, q=2, b=64, seed=0):
    task = LinearRegression(d=d, x_dist="gaussian")
    return task.sample(b, n + q, torch.Generator().manual_seed(seed), dtype=torch.float64).split(n)


def test_table_order_and_reexports():
    assert fm.FAMILIES == ("ols", "gd", "ridge", "newton", "gdpp") == idf.FAMILIES
    assert list(fm.FAMILY_TABLE) == list(fm.FAMILIES)
    for name in ("fit_gd", "fit_gdpp", "fit_newton", "fit_ridge", "fit_ols", "gd_predictions", "gdpp_predictions",
                 "newton_predictions", "sq_diff", "err_cos", "build_learner", "FamilyFit"):
        assert getattr(idf, name) is getattr(fm, name)
    with pytest.raises(ConfigError, match="family must be one of"):
        fm.build_learner("sgd", {}, 3)


def test_every_family_fits_builds_and_reports_its_hparams():
    cx, cy, qx, _ = _batch()
    # two "layers": 1-step GD and 2-step GD++ (so every family has something to fit)
    target = torch.stack([algorithms.GD(steps=1, lr=0.5)(cx, cy, qx),
                          algorithms.GDPlusPlus(steps=2, lr=0.5, gamma=0.3)(cx, cy, qx)]).double()
    problem = fm.FitProblem(cx, cy, qx, target, layers=[0, 1], max_gd_steps=4, max_newton_iters=4)
    for name, fam in fm.FAMILY_TABLE.items():
        fit = problem.fits[name] = fam.fit(problem)
        assert fit.family == name and len(fit.hparams) == len(fit.mse) == 2
        for j, hp in enumerate(fit.hparams):
            assert tuple(hp) == fam.reports
            learner = fm.build_learner(name, hp, 3)
            mse = float(((learner(cx, cy, qx).double() - target[j]) ** 2).mean())
            assert mse == pytest.approx(fit.mse[j], rel=1e-6, abs=1e-12)  # the fit's mse is the built learner's
    assert problem.fits["gd"].hparams[0]["lr"] == pytest.approx(0.5, rel=1e-4)
    assert problem.fits["gdpp"].mse[1] < 1e-12 and problem.fits["gdpp"].hparams[1]["gamma"][0] == pytest.approx(0.3)


def test_gdpp_learner_is_the_construction():
    cx, cy, qx, _ = _batch(d=4, n=6, seed=2)
    hp = {"steps": 3, "lr": [0.4, 0.7, 0.2], "gamma": [0.3, -0.1, 0.0]}
    lsa = constructions.gd_plus_plus(d=4, steps=3, lr=hp["lr"], gamma=hp["gamma"], dtype=torch.float64)
    torch.testing.assert_close(fm.build_learner("gdpp", hp)(cx, cy, qx), lsa(cx, cy, qx), rtol=1e-9, atol=1e-9)
    f64 = torch.float64
    preds = fm.gdpp_predictions(cx, cy, qx, torch.tensor(hp["lr"], dtype=f64), torch.tensor(hp["gamma"], dtype=f64))
    assert preds.dtype == torch.float64 and preds.shape == (4, 64, 2)
    torch.testing.assert_close(preds[-1], lsa(cx, cy, qx), rtol=1e-9, atol=1e-9)


def test_refine_log_is_scipy_bounded_and_never_worse_than_the_grid():
    calls = []

    def f(u: float) -> float:
        calls.append(u)
        return (u - math.log(2.0)) ** 2

    u, m = fm._refine_log(f, 1.0, 4.0, maxiter=25)
    assert math.exp(u) == pytest.approx(2.0, rel=1e-6) and m < 1e-12
    assert all(math.log(1.0) <= c <= math.log(4.0) for c in calls) and len(calls) <= 26
