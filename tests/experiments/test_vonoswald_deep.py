"""vonoswald-deep: the rescaled GD++ construction, config layering, and a quick end-to-end run."""

from __future__ import annotations

import json

import pytest
import torch

from mesaopt.algorithms import GDPlusPlus
from mesaopt.experiments import make_config
from mesaopt.experiments import vonoswald_deep as vd
from mesaopt.models import LSA
from mesaopt.tasks import LinearRegression


def test_aligned_construction_keeps_the_gdpp_function_and_takes_the_trained_scale():
    task = LinearRegression(d=4, x_dist="uniform", input_range=1.0)
    cx, cy, qx, _ = task.sample(32, 9, torch.Generator().manual_seed(0), dtype=torch.float64).split(8)
    trained = LSA(d=4, layers=3, init_std=0.0)
    with torch.no_grad():
        trained.kq_weight[:, 0, :4, :4] = torch.eye(4) * torch.tensor([2.0, 0.5, -3.0])[:, None, None]
    con = vd.aligned_construction(trained, [0.7, 0.7, 0.7], [0.3, 0.3, 0.0])
    ref = GDPlusPlus(steps=3, lr=0.7, gamma=0.3)(cx, cy, qx)
    torch.testing.assert_close(con.double()(cx, cy, qx), ref, rtol=1e-5, atol=1e-6)
    diag = torch.stack([torch.diagonal(con.w_kq(i)[:4, :4]).mean() for i in range(3)])
    torch.testing.assert_close(diag.float(), torch.tensor([2.0, 0.5, -3.0]))


def test_projected_hparams_recover_a_rescaled_construction():
    trained = LSA(d=4, layers=2, init_std=0.0)
    with torch.no_grad():
        trained.kq_weight[:, 0, :4, :4] = torch.eye(4) * torch.tensor([1.5, -2.0])[:, None, None]
    con = vd.aligned_construction(trained, [0.8, 0.3], [0.25, 0.0])
    lrs, gammas = vd.projected_hparams(con)
    assert lrs == pytest.approx([0.8, 0.3], rel=1e-5) and gammas == pytest.approx([0.25, 0.0], abs=1e-6)


def test_partial_train_overrides_keep_the_experiment_defaults():
    cfg = make_config("vonoswald-deep", quick=True, overrides={"train.lr": 1e-3})
    assert cfg.train.loss == "half_mse" and cfg.train.optimizer == "adam" and cfg.train.lr == 1e-3
    assert cfg.ks == [1, 2]
    full = make_config("vonoswald-deep")  # the released code's recipe (see the module docstring)
    assert (full.init_scale, full.token_clip, full.train.batch_size, full.train.betas) == (0.002, 10.0, 2048,
                                                                                           (0.9, 0.98))
    assert (full.train.lr, full.deep_from, full.deep_lr, full.train.schedule) == (1e-3, 4, 5e-4, "constant")
    with pytest.raises(Exception, match="ks"):
        make_config("vonoswald-deep", overrides={"ks": [0, 2]})


@pytest.mark.slow
def test_quick_run(tmp_path):
    from mesaopt.experiments import run

    res = run("vonoswald-deep", out=tmp_path / "r", quick=True, progress=False)
    for k in (1, 2):
        for key in ("lsa_loss", "gd_loss", "gdpp_loss", "gdpp_layerwise_loss", "lsa_over_gdpp_layerwise",
                    "sens_cos_gdpp_layerwise", "sens_cos", "pred_diff", "interp_loss"):
            assert f"{key}_k{k}" in res.metrics
        for layer in range(1, k + 1):
            assert f"gdpp_layerwise_lr_k{k}_l{layer}" in res.metrics
            assert f"gdpp_layerwise_gamma_k{k}_l{layer}" in res.metrics
        # GD++ contains GD, per-layer GD++ contains the shared one; fitted on another batch: allow held-out noise
        assert res.metrics[f"gdpp_loss_k{k}"] <= res.metrics[f"gd_loss_k{k}"] * 1.01
        assert res.metrics[f"gdpp_layerwise_loss_k{k}"] <= res.metrics[f"gdpp_loss_k{k}"] * 1.01
    assert res.metrics["sens_cos_k1"] > 0.9  # one layer aligns with one GD step even after a short run
    for fig in ("losses.png", "alignment.png", "interpolation.png", "k2/ckpt/state.json"):
        assert fig in res.artifacts
    assert json.loads((tmp_path / "r" / "results.json").read_text())["metrics"] == res.metrics
    spec = json.loads((tmp_path / "r" / "k2" / "ckpt" / "state.json").read_text())["model"]
    assert spec["clip"] == 10.0 and spec["init_std"] == pytest.approx((0.002 / (2 * 11)) ** 0.5)  # paper's recipe
