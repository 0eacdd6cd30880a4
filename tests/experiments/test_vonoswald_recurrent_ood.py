"""vonoswald-recurrent / vonoswald-ood: config checks, metric keys, determinism and the shared helpers (tiny runs)."""

from __future__ import annotations

import pytest

from mesaopt import experiments
from mesaopt.errors import ConfigError
from mesaopt.experiments import make_config
from mesaopt.experiments.vonoswald_ood import scale_key

TINY = {"d": 3, "n_context": 5, "train.steps": 6, "train.batch_size": 16, "train.eval_every": 3,
        "train.ckpt_every": 0, "train.warmup_steps": 1, "train.eval_batch_size": 32, "eval_batch_size": 64,
        "fit_batch_size": 64}


def run(name: str, tmp_path, **over):
    return experiments.run(name, overrides={**TINY, **over}, out=tmp_path, progress=False).metrics


def test_recurrent_keys_determinism_and_tied_models(tmp_path):
    import mesaopt

    a = run("vonoswald-recurrent", tmp_path / "a", ks=[1, 4], rollout_steps=3)
    b = run("vonoswald-recurrent", tmp_path / "b", ks=[1, 4], rollout_steps=3)
    assert a == b
    for k in (1, 4):
        assert {f"lsa_loss_k{k}", f"gd_loss_k{k}", f"gdpp_loss_k{k}", f"sens_cos_gdpp_k{k}"} <= set(a)
    for s in (1, 2, 3):
        assert {f"rollout_loss_s{s}", f"gd_rollout_loss_s{s}", f"gd_damped_loss_s{s}", f"gd_rollout_lr_s{s}"} <= set(a)
    assert "rollout_loss_s4" not in a and a["construction_rollout_err"] < 1e-12
    model = mesaopt.load(mesaopt.export(tmp_path / "a" / "k4", tmp_path / "m4"))
    assert model.tied and model.layers == 4 and model.clip == 10.0  # K >= clip_from = 4 is clipped
    assert mesaopt.load(mesaopt.export(tmp_path / "a" / "k1", tmp_path / "m1")).clip is None
    assert (tmp_path / "a" / "rollout.png").exists() and (tmp_path / "a" / "tied.png").exists()


def test_ood_keys_and_formatting(tmp_path):
    m = run("vonoswald-ood", tmp_path, deep_k=2, alphas=[0.5, 1, 2.5], betas=[1, 3])
    for name in ("lsa1", "gd1", "lsa2", "gd2", "gdpp2"):
        assert {f"{name}_loss_alpha0.5", f"{name}_loss_alpha1", f"{name}_loss_alpha2.5", f"{name}_loss_beta3"} <= set(m)
    assert m["gd1_loss_alpha1"] == m["gd1_loss_beta1"]  # alpha = beta = 1 is the same (training) distribution
    assert (tmp_path / "ood.png").exists()
    assert [scale_key(v) for v in (0.25, 1.0, 2.0, 1.5, 10.0)] == ["0.25", "1", "2", "1.5", "10"]


@pytest.mark.parametrize("name, over, field", [
    ("vonoswald-recurrent", {"ks": [2, 10]}, "ks"),
    ("vonoswald-recurrent", {"damping": 0}, "damping"),
    ("vonoswald-ood", {"alphas": [1.0, 1.0000001]}, "alphas"),
    ("vonoswald-ood", {"betas": [-1.0]}, "betas"),
    ("vonoswald-ood", {"deep_k": 1}, "deep_k"),
])
def test_bad_config_is_one_line_naming_the_field(name, over, field):
    with pytest.raises(ConfigError, match=field) as e:
        make_config(name, overrides=over)
    assert "\n" not in str(e.value)


def test_quick_configs_validate():
    assert make_config("vonoswald-recurrent", quick=True).ks == [1, 2]
    assert make_config("vonoswald-ood", quick=True).deep_k == 2


def test_a_roll_out_that_overflows_is_a_result_not_a_failed_run(tmp_path, monkeypatch):
    import math

    import torch

    from mesaopt.experiments import vonoswald_recurrent as vr

    real = vr.damped_rollout

    def overflowing(layer, cx, cy, qx, steps, damping):  # the trained (float32) layer overflows from S = 3 on
        out = real(layer, cx, cy, qx, steps, damping)
        if out.dtype == torch.float32:
            out = out.clone()
            out[2:, 0] = math.inf
        return out

    monkeypatch.setattr(vr, "damped_rollout", overflowing)
    m = run("vonoswald-recurrent", tmp_path, ks=[1], rollout_steps=4)
    assert math.isfinite(m["rollout_loss_s2"]) and math.isnan(m["rollout_loss_s3"]) and math.isnan(m["rollout_loss_s4"])
    assert m["rollout_diverged_s"] == 3.0 and m["rollout_best_s"] in (1.0, 2.0)
    assert m["rollout_best_loss"] == min(m["rollout_loss_s1"], m["rollout_loss_s2"])
