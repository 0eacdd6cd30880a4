"""Activation patching / ablation grids with known answers on the exact GD construction, and the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from mesaopt.analysis.patching import corrupt_labels, patch_activation, patching_grid, restoration
from mesaopt.cli import main
from mesaopt.constructions.lsa_gd import lsa_gd
from mesaopt.errors import ConfigError
from mesaopt.models.gpt import GPT
from mesaopt.models.softmax import SoftmaxAttention
from mesaopt.tasks import LinearRegression
from mesaopt.train.checkpoint import save_checkpoint


def pair(n=6, b=16, d=3, seed=0):
    batch = LinearRegression(d=d).sample(b, n + 1, torch.Generator().manual_seed(seed))
    cx, cy, qx, _ = (t.double() for t in batch.split(n))
    return (cx, cy, qx), (cx, corrupt_labels(cy), qx)


def test_gd_construction_known_answers():
    """2 GD steps as 2 LSA layers: the readout is the query's y-slot after the last layer, so patching the last
    layer's query position restores the clean prediction exactly and its context positions do nothing; patching
    all of layer 0's output restores it exactly too (layer 1 sees nothing else)."""
    model = lsa_gd(d=3, steps=2, lr=0.5, dtype=torch.float64)
    clean, corrupted = pair()
    res = patching_grid(model, clean, corrupted, "blocks.{layer}.hook_resid_post")
    assert res.dims == ("layer", "position") and res.values.shape == (2, 7)
    assert res.clean == 1.0 and res.corrupted == 0.0
    assert res.values[1, 6] == 1.0 and torch.all(res.values[1, :6] == 0.0)
    assert 0.0 < res.values[0, 6] < 1.0  # the query alone at layer 0: layer 1 still reads corrupted residuals
    whole = patching_grid(model, clean, corrupted, "blocks.{layer}.hook_resid_post", per_position=False)
    assert whole.values.tolist() == [1.0, 1.0]
    assert res.to_rows()[13] == {"layer": 1, "position": 6, "hook": "blocks.1.hook_resid_post", "value": 1.0}


def test_zero_ablating_either_gd_step_leaves_one_step():
    model = lsa_gd(d=3, steps=2, lr=0.5, dtype=torch.float64)
    one_step = lsa_gd(d=3, steps=1, lr=0.5, dtype=torch.float64)
    clean, _ = pair()
    res = patching_grid(model, clean, None, "blocks.{layer}.hook_attn_out", mode="zero", per_position=False)
    with torch.no_grad():
        want = float((one_step(*clean) - model(*clean)).pow(2).mean())
    torch.testing.assert_close(res.values, torch.tensor([want, want], dtype=torch.float64))
    assert res.meta["metric"] == "mse_to_clean" and res.clean == 0.0


def test_heads_and_modes():
    model = SoftmaxAttention(d=3, layers=2, heads=2, init_std=0.5, seed=0).double()
    clean, corrupted = pair()
    res = patching_grid(model, clean, corrupted, "blocks.{layer}.attn.hook_z")
    assert res.dims == ("layer", "head", "position") and res.values.shape == (2, 2, 7)
    assert torch.isfinite(res.values).all()
    mean = patching_grid(model, clean, None, "blocks.{layer}.hook_resid_pre", mode="mean", per_position=False)
    assert mean.values.shape == (2,) and torch.all(mean.values > 0)
    resample = patching_grid(model, clean, None, "blocks.{layer}.attn.hook_pattern", mode="resample",
                             per_head=False, per_position=False)
    assert resample.dims == ("layer",) and resample.corrupted is None
    with pytest.raises(ConfigError, match="needs corrupted inputs"):
        patching_grid(model, clean, None, "hook_embed")
    with pytest.raises(ConfigError, match="matches no hook"):
        patching_grid(model, clean, corrupted, "blocks.{layer}.hook_mlp_out")
    with pytest.raises(ConfigError, match="mode must be one of"):
        patching_grid(model, clean, corrupted, "hook_embed", mode="swap")


def test_prefix_method_and_low_level_patch():
    model = GPT(d=3, n_positions=8, layers=2, heads=2, width=16, seed=0).double().eval()
    (cx, cy, _), (_, cy2, _) = pair()
    clean_pred, cache = model.run_with_cache(cx, cy, method="prefix", names_filter="blocks.1.hook_resid_post")
    out = patch_activation(model, (cx, cy2), "blocks.1.hook_resid_post", cache["blocks.1.hook_resid_post"],
                           method="prefix")
    assert torch.equal(out, clean_pred)
    res = patching_grid(model, (cx, cy), (cx, cy2), "blocks.{layer}.hook_resid_post", method="prefix",
                        metric=restoration(clean_pred, model.prefix(cx, cy2)))
    assert res.values.shape == (2, 12) and res.meta["metric"] == "custom"
    # last block: the read-out at x-token 2t is prediction t alone, y-tokens feed no read-out there
    assert torch.all(res.values[1, 1::2] == 0) and float(res.values[1, 0::2].sum()) == pytest.approx(1.0)


def test_cli_patch_writes_the_heatmap(tmp_path, capsys):
    save_checkpoint(tmp_path / "run", lsa_gd(d=3, steps=2, lr=0.5), step=0, task=LinearRegression(d=3),
                    train_cfg={"n_points": 7})
    with pytest.raises(SystemExit) as e:
        main(["patch", str(tmp_path / "run"), "--batch-size", "8", "--json"]) or exit(0)
    assert e.value.code == 0
    res = json.loads(capsys.readouterr().out)
    assert res["dims"] == ["layer", "position"] and res["values"][1][6] == pytest.approx(1.0)
    assert (tmp_path / "run" / "patching-patch.png").stat().st_size > 0
    with pytest.raises(SystemExit) as e:
        main(["patch", str(tmp_path / "run"), "--mode", "nope"])
    assert e.value.code == 2
