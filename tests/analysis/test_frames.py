"""pandas views: IdentifyResult / CompareResult / PatchingResult.to_frame and results.json -> DataFrame."""

from __future__ import annotations

import math

import pytest
import torch

from mesaopt.analysis.frames import flatten, results_frame
from mesaopt.analysis.identify import CompareResult, IdentifyResult
from mesaopt.analysis.patching import PatchingResult
from mesaopt.errors import CheckpointError
from mesaopt.io import atomic_write_json


def test_identify_and_compare_frames():
    rows = [{"layer": 0, "algorithm": "gd", "hparams": {"steps": 1, "lr": 0.5}, "mse": 0.1, "best": True},
            {"layer": 0, "algorithm": "ols", "hparams": {}, "mse": 0.3, "best": False}]
    df = IdentifyResult(rows=rows).to_frame()
    assert list(df["algorithm"]) == ["gd", "ols"] and df.loc[0, "hparams.lr"] == 0.5
    assert math.isnan(df.loc[1, "hparams.lr"])
    cf = CompareResult(rows=[{"algorithm": "ridge", "hparams": {"lam": 0.1}, "loss": 1.0}], meta={}).to_frame()
    assert cf.loc[0, "hparams.lam"] == 0.1


def test_patching_frame():
    res = PatchingResult(torch.tensor([[0.0, 1.0]]), ("layer", "position"), ["blocks.0.hook_resid_post"],
                         "patch", 1.0, 0.0)
    df = res.to_frame()
    assert list(df.columns) == ["layer", "position", "hook", "value"] and df["value"].tolist() == [0.0, 1.0]


def test_results_frame(tmp_path):
    for seed in (0, 1):
        atomic_write_json(tmp_path / f"run{seed}" / "results.json",
                          {"experiment": "vonoswald-gd", "version": "1", "seed": seed, "wall_s": 1.5,
                           "config": {"seed": seed, "train": {"lr": 1e-3}},
                           "metrics": {"lsa_loss": 0.2 + seed, **({"extra": 1.0} if seed else {})},
                           "artifacts": []})
    df = results_frame(tmp_path)
    assert df["seed"].tolist() == [0, 1] and df["config.train.lr"].tolist() == [1e-3, 1e-3]
    assert df["metrics.lsa_loss"].tolist() == [0.2, 1.2] and math.isnan(df["metrics.extra"][0])
    assert len(results_frame([tmp_path / "run0", tmp_path / "run1" / "results.json"])) == 2
    with pytest.raises(CheckpointError, match="no results.json"):
        results_frame(tmp_path / "nope")
    assert flatten({"a": {"b": 1, "c": {}}, "d": [1]}) == {"a.b": 1, "a.c": {}, "d": [1]}
