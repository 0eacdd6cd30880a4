"""identify / compare: candidate predictions against independent references, recovery of known algorithms."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mesaopt import algorithms, constructions
from mesaopt.analysis import identify as idf
from mesaopt.errors import ConfigError
from mesaopt.tasks import LinearRegression


def _batch(d=4, n=8, q=3, b=64, seed=0):
    task = LinearRegression(d=d, x_dist="gaussian")
    return task.sample(b, n + q, torch.Generator().manual_seed(seed), dtype=torch.float64).split(n)


def _np_gd(x, y, xq, steps, lr):
    """Plain NumPy GD on (1/2N)||Xw - y||^2 from w = 0, one task at a time (independent reference)."""
    out = np.zeros((steps + 1,) + xq.shape[:2])
    for b in range(x.shape[0]):
        w = np.zeros(x.shape[2])
        for k in range(steps + 1):
            out[k, b] = xq[b] @ w
            w = w - lr * x[b].T @ (x[b] @ w - y[b]) / x.shape[1]
    return out


def test_gd_predictions_match_numpy():
    cx, cy, qx, _ = _batch()
    got = idf.gd_predictions(cx, cy, qx, steps=5, lr=0.3)
    ref = _np_gd(cx.numpy(), cy.numpy(), qx.numpy(), 5, 0.3)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-10)


def test_gdpp_predictions_match_lsa_construction_and_gdplusplus():
    cx, cy, qx, _ = _batch(d=3, n=6)
    lrs, gammas = [0.4, 0.7, 0.2], [0.3, -0.1, 0.5]
    got = idf.gdpp_predictions(cx, cy, qx, torch.tensor(lrs, dtype=torch.float64),
                               torch.tensor(gammas, dtype=torch.float64))
    for k in (1, 2, 3):
        lsa = constructions.gd_plus_plus(d=3, steps=k, lr=lrs[:k], gamma=gammas[:k], dtype=torch.float64)
        torch.testing.assert_close(got[k], lsa(cx, cy, qx), rtol=1e-9, atol=1e-9)
    const = idf.gdpp_predictions(cx, cy, qx, torch.full((4,), 0.5, dtype=torch.float64),
                                 torch.full((4,), 0.2, dtype=torch.float64))
    ref = algorithms.GDPlusPlus(steps=4, lr=0.5, gamma=0.2)(cx, cy, qx)
    torch.testing.assert_close(const[-1], ref, rtol=1e-9, atol=1e-9)
    assert torch.all(got[0] == 0)


def test_sq_diff_and_err_cos_against_direct_formulas():
    g = torch.Generator().manual_seed(1)
    p, t = torch.randn(5, 7, 2, generator=g), torch.randn(3, 7, 2, generator=g)
    want = ((p[:, None] - t[None]) ** 2).mean(dim=(2, 3))
    torch.testing.assert_close(idf.sq_diff(p, t).float(), want, rtol=1e-5, atol=1e-6)
    p[2, 0, 0] = float("inf")
    assert torch.isinf(idf.sq_diff(p, t)[2]).all()
    a, b, y = torch.randn(7, 2, generator=g), torch.randn(7, 2, generator=g), torch.randn(7, 2, generator=g)
    ea, eb = (a - y).flatten().numpy(), (b - y).flatten().numpy()
    assert idf.err_cos(a, b, y) == pytest.approx(float(ea @ eb / np.linalg.norm(ea) / np.linalg.norm(eb)), rel=1e-5)


class _Stack:
    """A fake layered learner whose layer l is the given algorithm l (forward_layers -> (L, B, Q))."""

    def __init__(self, algs):
        self.algs = algs

    def forward_layers(self, cx, cy, qx):
        return torch.stack([a(cx, cy, qx) for a in self.algs])

    def __call__(self, cx, cy, qx):
        return self.forward_layers(cx, cy, qx)[-1]


TASK = LinearRegression(d=4, x_dist="gaussian")


def test_identify_recovers_gd_steps_and_lr():
    model = _Stack([algorithms.GD(steps=1, lr=0.45), algorithms.GD(steps=3, lr=0.45)])
    res = idf.identify(model, TASK, n_context=12, families=["ols", "gd", "ridge"], batch_size=128, max_gd_steps=8)
    best = res.best()
    assert [r["algorithm"] for r in best] == ["gd", "gd"]
    assert [r["hparams"]["steps"] for r in best] == [1, 3]
    for r in best:
        assert r["hparams"]["lr"] == pytest.approx(0.45, rel=1e-3)
        assert r["sens_cos"] > 0.9999 and r["pred_diff"] < 1e-4
    d = json.loads(res.to_json())
    assert len(d["rows"]) == 6 and len(d["best"]) == 2


def test_identify_lsa_construction_names_gd():
    lsa = constructions.lsa_gd(d=4, steps=2, lr=0.6)
    res = idf.identify(lsa, TASK, n_context=10, families=["gd", "newton", "gdpp"], batch_size=128, max_gd_steps=6,
                       max_newton_iters=6)
    best = res.best()
    assert [r["algorithm"] for r in best] == ["gd", "gd"]  # GD++ ties (gamma = 0) and the simpler GD wins
    assert [r["hparams"]["steps"] for r in best] == [1, 2]
    assert best[1]["hparams"]["lr"] == pytest.approx(0.6, rel=1e-3)
    gdpp = [r for r in res.rows if r["algorithm"] == "gdpp"]
    assert all(r["mse"] < 1e-8 for r in gdpp)


def test_identify_recovers_ridge_lambda_and_newton_iterations():
    model = _Stack([algorithms.Ridge(lam=2.5), algorithms.IterativeNewton(steps=3)])
    res = idf.identify(model, TASK, n_context=12, families=["ols", "gd", "ridge", "newton"], batch_size=128,
                       max_gd_steps=8, max_newton_iters=8)
    best = res.best()
    assert best[0]["algorithm"] == "ridge"
    assert best[0]["hparams"]["lam"] == pytest.approx(2.5, rel=1e-3)
    assert best[1]["algorithm"] == "newton" and best[1]["hparams"]["iterations"] == 3


def test_identify_gdpp_recovers_curvature_correction():
    lsa = constructions.gd_plus_plus(d=4, steps=2, lr=[0.5, 0.5], gamma=[0.4, 0.0], dtype=torch.float64)
    res = idf.identify(lsa, TASK, n_context=10, families=["gd", "gdpp"], batch_size=128, max_gd_steps=8,
                       layers=[1])
    best = res.best()[0]
    assert best["algorithm"] == "gdpp" and best["mse"] < 1e-10
    assert best["hparams"]["gamma"][0] == pytest.approx(0.4, rel=1e-3)


def test_compare_rows_and_bad_input():
    model = _Stack([algorithms.GD(steps=2, lr=0.5)])
    res = idf.compare(model, TASK, n_context=10, algorithms=["gd", "ols"], batch_size=128, max_gd_steps=4)
    rows = {r["algorithm"]: r for r in res.rows}
    assert rows["gd"]["hparams"]["steps"] == 2 and rows["gd"]["sens_cos"] > 0.9999
    assert rows["ols"]["mse"] > rows["gd"]["mse"]
    assert json.loads(res.to_json())["meta"]["loss"] == "mse"
    with pytest.raises(ConfigError, match="families must be"):
        idf.identify(model, TASK, n_context=10, families=["sgd"])
    with pytest.raises(ConfigError, match="algorithms"):
        idf.compare(model, TASK, n_context=10, algorithms=["nope"], batch_size=16)


def test_cli_identify_and_compare_on_a_checkpoint(tmp_path, capsys):
    from mesaopt.cli import main
    from mesaopt.models import LSA
    from mesaopt.train import TrainConfig, train

    task = LinearRegression(d=3, x_dist="uniform", input_range=1.0)
    train(LSA(d=3, layers=2, init_std=0.05), task, TrainConfig(steps=20, batch_size=64, n_points=7, lr=1e-2,
                                                              eval_every=0, ckpt_every=0),
          out=tmp_path / "run", progress=False)
    main(["identify", str(tmp_path / "run"), "--json", "--batch-size", "64", "--max-gd-steps", "4",
          "--families", "ols,gd"])
    out = json.loads(capsys.readouterr().out)
    assert out["meta"]["n_context"] == 6 and len(out["best"]) == 2
    main(["compare", str(tmp_path / "run"), "--algorithms", "gd,ols", "--json", "--batch-size", "64",
          "--plot", str(tmp_path / "cmp.png")])
    res = json.loads(capsys.readouterr().out)
    assert [r["algorithm"] for r in res["rows"]] == ["gd", "ols"] and (tmp_path / "cmp.png").is_file()
    for argv in (["identify", str(tmp_path / "missing")], ["compare", str(tmp_path / "run"), "--algorithms", "zz"],
                 ["identify", str(tmp_path / "run"), "--families", "sgd"]):
        with pytest.raises(SystemExit) as ei:
            main(argv)
        cap = capsys.readouterr()
        assert ei.value.code == 2 and cap.out == "" and cap.err.startswith("error:")
        assert len([ln for ln in cap.err.splitlines() if ln.strip()]) == 1


class _PlantedStates(torch.nn.Module):
    """A fake GPT whose query hidden state after layer 1 is the 1-step-GD prediction and after layer 2 the OLS one."""

    def __init__(self, lr):
        super().__init__()
        self.lr = lr

    def hidden_states(self, xs, ys):
        n = xs.shape[1] - 1
        cx, cy, qx = xs[:, :n], ys[:, :n], xs[:, n:]
        w_ols = torch.linalg.lstsq(cx, cy.unsqueeze(-1)).solution  # N >= d: the least-squares solution
        preds = [torch.zeros_like(qx[..., 0]), algorithms.GD(steps=1, lr=self.lr)(cx, cy, qx), (qx @ w_ols)[..., 0]]
        h = xs.new_zeros(3, xs.shape[0], 2 * (n + 1), 2)
        for i, p in enumerate(preds):
            h[i, :, 2 * n, 0] = p[:, 0]
            h[i, :, 2 * n, 1] = 1.0  # a constant feature: the probe's bias absorbs it
        return h


def test_identify_probe_readout_on_planted_hidden_states():
    task = LinearRegression(d=3, x_dist="gaussian")  # noiseless: y is the OLS prediction once N >= d
    model = _PlantedStates(lr=0.3)
    res = idf.identify(model, task, n_context=8, families=["ols", "gd"], batch_size=256, max_gd_steps=4,
                       readout="probe", probe_batch_size=2048)
    assert res.meta["readout"] == "probe"
    # independent reference for the layer-1 probe: NumPy least squares of y on [GD-1 prediction, 1]
    from mesaopt.seeding import generator

    b = task.sample(2048, 9, generator(0, "readout-probe"))
    cx, cy, qx, qy = b.split(8)
    p1 = algorithms.GD(steps=1, lr=0.3)(cx, cy, qx)[:, 0].double().numpy()
    a, _ = np.linalg.lstsq(np.stack([p1, np.ones_like(p1)], 1), qy[:, 0].double().numpy(), rcond=None)[0]
    best = res.best()
    assert best[0]["algorithm"] == "gd" and best[0]["hparams"]["steps"] == 1
    assert best[0]["hparams"]["lr"] == pytest.approx(0.3 * a, rel=0.02)
    assert best[0]["sens_cos"] > 0.999  # the probe read-out is differentiable in the query
    assert best[1]["algorithm"] == "ols" and best[1]["mse"] < 1e-6
    with pytest.raises(ConfigError, match="readout"):
        idf.identify(model, task, n_context=8, readout="lens")
    with pytest.raises(ConfigError, match="hidden_states"):
        idf.identify(_Stack([algorithms.OLS()]), task, n_context=8, readout="probe", batch_size=16)


def test_cli_identify_probe_readout_on_a_gpt_checkpoint(tmp_path, capsys):
    from mesaopt.cli import main
    from mesaopt.models.gpt import GPT
    from mesaopt.train import TrainConfig, train

    task = LinearRegression(d=2, x_dist="anisotropic", condition_number=10.0)
    train(GPT(d=2, n_positions=6, layers=2, heads=1, width=8), task,
          TrainConfig(steps=3, batch_size=8, n_points=6, objective="prefix", eval_every=0, ckpt_every=0),
          out=tmp_path / "gpt", progress=False)
    argv = ["identify", str(tmp_path / "gpt"), "--readout", "probe", "--probe-batch-size", "64", "--batch-size", "32",
            "--max-gd-steps", "3", "--families", "ols,gd,newton", "--max-newton-iters", "3"]
    main(argv + ["--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["meta"]["readout"] == "probe" and len(out["best"]) == 2 and out["meta"]["n_context"] == 5
    main(argv)
    assert "read-out: probe" in capsys.readouterr().out
    with pytest.raises(SystemExit) as ei:
        main(argv[:2] + ["--readout", "lens"])
    assert ei.value.code == 2 and capsys.readouterr().err.startswith("error:")
