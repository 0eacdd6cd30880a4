"""garg-suite: the quick run on the shipped model writes the DESIGN.md keys and both figures, a model folder of
another GPT works through ``model_dir``, bad settings are one-line ConfigErrors. No number of the shipped model
is pinned (its weights get replaced): only loose facts (zero context ~ error 1; the model beats averaging)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mesaopt import experiments
from mesaopt.errors import ConfigError
from mesaopt.experiments.garg_suite import SHIFTS, GargSuiteConfig, factor_tag
from mesaopt.models.gpt import GPT


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("gsuite") / "run"
    return experiments.run("garg-suite", out=out, quick=True, progress=False), out


def test_quick_run_has_the_design_keys_and_figures(quick):
    res, out = quick
    m = res.metrics
    names = [s for s in SHIFTS if not s.startswith("scale")] + ["scale_x_2", "scale_y_2"]
    for name in names:
        first = 1 if name == "same_point" else 0
        last = 19 if name == "orthogonal" else 40
        for key in (f"shift_{name}_err_at_{{}}", f"shift_{name}_ols_err_at_{{}}"):
            assert key.format(first) in m and key.format(last) in m, key
    assert "shift_orthogonal_err_at_20" not in m and "shift_same_point_err_at_0" not in m
    for learner in ("transformer", "ols", "ridge", "averaging", "knn"):
        assert all(f"dense_{learner}_err_at_{n}" in m for n in range(41))
        assert 0.3 < m[f"dense_{learner}_err_at_0"] < 3.0  # no context: ~ E[y^2]/d = 1
    assert m["dense_ols_err_at_40"] < 1e-6  # noiseless, N > d: exact
    assert m["dense_transformer_err_at_40"] < m["dense_averaging_err_at_40"]
    for f in ("dense.png", "dense.pdf", "shifts.png", "shifts.pdf", "results.json", "model.json"):
        assert (out / f).is_file()
    rec = json.loads((out / "model.json").read_text())
    assert rec["shipped"] == "garg-d20" and rec["spec"]["d"] == 20 and len(rec["sha256"]) == 64


def test_model_dir_takes_another_gpt_folder(tmp_path):
    GPT(d=3, n_positions=8, layers=1, heads=1, width=8, seed=0).save_pretrained(tmp_path / "m")
    res = experiments.run("garg-suite", out=tmp_path / "run", quick=True, progress=False,
                          overrides={"model_dir": str(tmp_path / "m"), "n_points": 8,
                                     "shifts": ["orthogonal", "same_point"]})
    m = res.metrics
    assert "shift_orthogonal_err_at_2" in m and "shift_orthogonal_err_at_3" not in m  # N < d = 3
    assert np.isfinite(m["shift_same_point_ols_err_at_7"]) and "dense_transformer_err_at_7" in m


def test_bad_settings_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="model_dir"):
        experiments.run("garg-suite", out=tmp_path / "a", quick=True, progress=False,
                        overrides={"model_dir": str(tmp_path / "nowhere")})
    with pytest.raises(ConfigError, match="n_points"):
        experiments.run("garg-suite", out=tmp_path / "b", quick=True, progress=False, overrides={"n_points": 42})
    with pytest.raises(Exception, match="unknown shifts"):
        GargSuiteConfig(shifts=["rotated"])
    assert factor_tag(0.333) == "0p333" and factor_tag(2.0) == "2"


def test_model_dir_takes_a_run_folder_and_is_deterministic(tmp_path):
    experiments.run("garg-d20", out=tmp_path / "d20", quick=True, progress=False)
    over = {"model_dir": str(tmp_path / "d20"), "n_points": 9, "shifts": ["skewed", "same_point"]}
    a = experiments.run("garg-suite", out=tmp_path / "a", quick=True, progress=False, overrides=over).metrics
    b = experiments.run("garg-suite", out=tmp_path / "b", quick=True, progress=False, overrides=over).metrics
    assert a == b and "shift_skewed_err_at_8" in a and "shift_same_point_err_at_8" in a
