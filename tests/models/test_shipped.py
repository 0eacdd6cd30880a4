"""Shipped model folders (package data): they load by name, verify, and the d = 20 GPT does regression in context.

The shipped weights get replaced by better-trained ones, so nothing here pins this model's numbers: only its
shape, integrity and a loose sanity bound against closed-form facts (the zero-context prediction has error ~ 1).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import mesaopt
from mesaopt.errors import ConfigError
from mesaopt.models.gpt import GPT
from mesaopt.models.pretrained import shipped, shipped_names

ROOT = Path(__file__).resolve().parents[2]
tomllib = pytest.importorskip("tomllib")


def test_garg_d20_is_shipped_and_verifies():
    folder = shipped("garg-d20")
    assert "garg-d20" in shipped_names() and folder.is_dir()
    assert folder == ROOT / "src" / "mesaopt" / "weights" / "garg-d20"
    cfg = json.loads((folder / "config.json").read_text())
    assert hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest() == cfg["weights"]["sha256"]
    prov = cfg["metadata"]["provenance"]
    assert {"run_command", "run_commit", "export_command"} <= set(prov)
    assert "source" not in cfg["metadata"]  # an export's absolute checkpoint path does not ship
    assert not any(str(v).startswith("/") for v in prov.values())


def test_load_by_name_is_a_d20_gpt():
    model = mesaopt.load("garg-d20")
    assert isinstance(model, GPT) and not model.training
    assert model.spec()["d"] == 20 and model.spec()["n_positions"] == 41


def test_unknown_name_lists_shipped():
    with pytest.raises(ConfigError, match="garg-d20"):
        shipped("no-such-model")
    with pytest.raises(ConfigError, match="shipped models: .*garg-d20"):
        mesaopt.load("no-such-model")


def test_package_data_globs_cover_shipped_files():
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["mesaopt"]
    pkg = ROOT / "src" / "mesaopt"
    for f in (pkg / "weights").rglob("*"):
        if f.is_file():
            rel = f.relative_to(pkg).as_posix()
            assert any(fnmatch.fnmatch(rel, g) for g in globs), rel


def test_shipped_model_sanity():
    """Loose bound: error/d at N = 40 well below the prior's, and at N = 0 (no context) ~ E[y^2]/d = 1."""
    model = mesaopt.load("garg-d20")
    g = np.random.default_rng(7)
    xs = g.standard_normal((500, 41, 20))
    w = g.standard_normal((500, 20))
    ys = np.einsum("btd,bd->bt", xs, w)
    with torch.no_grad():
        pred = model.prefix(torch.tensor(xs, dtype=torch.float32), torch.tensor(ys, dtype=torch.float32))
    err = ((pred.double().numpy() - ys) ** 2).mean(0) / 20
    assert err[40] < 0.2
    assert 0.8 < err[0] < 1.25
