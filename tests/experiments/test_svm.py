"""svm-* experiments: config validation (fast) and tiny end-to-end runs (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mesaopt import experiments
from mesaopt.errors import ConfigError


def test_configs_validate():
    with pytest.raises(ConfigError, match="sizes"):
        experiments.make_config("svm-implicit-bias", {"sizes": [[4, 1, 3]]})
    with pytest.raises(ConfigError, match="ds"):
        experiments.make_config("svm-local-global", {"ds": []})
    with pytest.raises(ConfigError, match="r_max"):
        experiments.make_config("svm-regpath", {"r_min": 5.0, "r_max": 1.0})
    with pytest.raises(ConfigError, match="kq_weight_decay"):
        experiments.make_config("svm-implicit-bias", {"kq_weight_decay": -1.0})
    cfg = experiments.make_config("svm-implicit-bias", quick=True)
    assert cfg.n_seeds == 4 and (cfg.n, cfg.T, cfg.d) == (6, 8, 10)
    full = experiments.make_config("svm-implicit-bias")  # the papers' setting
    assert (full.steps, full.kq_steps, full.lr, full.kq_weight_decay) == (2000, 2000, 0.1, 2.2e-16)


@pytest.mark.slow
def test_implicit_bias_end_to_end(tmp_path):
    res = experiments.run("svm-implicit-bias", overrides={"n_seeds": 2, "steps": 150, "kq_steps": 150, "n": 3,
                                                          "T": 4, "d": 5, "sizes": [], "record_every": 10},
                          out=tmp_path, progress=False)
    m = res.metrics
    for k in ("corr_W_fro", "corr_KQ_nuc", "corr_W_nuc", "corr_KQ_fro", "mass_W", "corr_W_fro_seed1",
              "corr_KQ_nuc_noreg", "corr_KQ_nuc_noreg_seed1", "corr_KQ_nuc_min", "w_norm_KQ", "w_norm_KQ_noreg"):
        assert k in m and np.isfinite(m[k])
    assert m["kq_weight_decay"] == 2.2e-16 and m["corr_KQ_nuc_min"] <= m["corr_KQ_nuc"]
    assert m["corr_W_fro"] > 0.9 and m["corr_KQ_nuc"] > 0.9 and m["mass_W"] > 0.9
    assert 1 <= m["rank_svm_nuc"] <= m["rank_svm_fro"] <= 5
    assert {"implicit_bias.png", "implicit_bias.pdf", "curves.npz"} <= set(res.artifacts)
    assert json.loads((tmp_path / "results.json").read_text())["metrics"]["corr_W_fro"] == m["corr_W_fro"]


@pytest.mark.slow
def test_local_global_and_regpath_end_to_end(tmp_path):
    lg = experiments.run("svm-local-global", overrides={"ds": [2, 8], "runs": 4, "steps": 200, "n": 3, "T": 4},
                         out=tmp_path / "lg", progress=False).metrics
    for d in (2, 8):
        total = lg[f"frac_global_d{d}"] + lg[f"frac_local_d{d}"] + lg[f"frac_other_d{d}"]
        assert total == pytest.approx(1.0)
    rp = experiments.run("svm-regpath", overrides={"n_seeds": 2, "n_radii": 4, "steps": 30, "r_max": 30.0, "n": 3,
                                                   "T": 4, "d": 5}, out=tmp_path / "rp", progress=False)
    assert rp.metrics["corr_regpath_fro"] > 0.9 and "regpath.png" in rp.artifacts
