"""Grid parsing, expansion, config hashing and sweep-file loading (no processes started)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import _sweep_exp  # noqa: E402,F401  (registers sweep-test-exp)

from mesaopt.errors import ConfigError  # noqa: E402
from mesaopt.sweeps.grid import (  # noqa: E402
    SweepSpec,
    config_hash,
    default_out,
    expand,
    load_spec,
    parse_grid,
    resolve_trials,
    split_top_level,
    trial_name,
)


def test_parse_grid_types_and_lists():
    g = parse_grid(["lr=1e-3,0.5", "seed=0,1,2", "flag=true,false", "name=a,b", "ev=[1,2],[3,4]", "n=null,4"])
    assert g == {"lr": [0.001, 0.5], "seed": [0, 1, 2], "flag": [True, False], "name": ["a", "b"],
                 "ev": [[1, 2], [3, 4]], "n": [None, 4]}
    assert isinstance(g["seed"][0], int) and isinstance(g["lr"][0], float)
    assert split_top_level("[1,2],{a: 1, b: 2},3") == ["[1,2]", "{a: 1, b: 2}", "3"]


@pytest.mark.parametrize("bad", ["seed", "=1,2", "seed=", "seed=1,,2", "se ed=1", "1x=2"])
def test_parse_grid_rejects_bad_syntax(bad):
    with pytest.raises(ConfigError, match="--grid"):
        parse_grid([bad])


def test_parse_grid_rejects_duplicate_key():
    with pytest.raises(ConfigError, match="given twice"):
        parse_grid(["seed=1", "seed=2"])


def test_expand_is_cartesian_in_key_order():
    pts = expand({"a": [1, 2], "b": ["x", "y", "z"]})
    assert len(pts) == 6
    assert pts[0] == {"a": 1, "b": "x"} and pts[1] == {"a": 1, "b": "y"} and pts[-1] == {"a": 2, "b": "z"}
    assert expand({}) == [{}]


def test_trials_are_config_hashed_and_validated():
    spec = SweepSpec(experiment="sweep-test-exp", grid={"x": [1, 2.0], "seed": [0, 3]}, set={"fail": False})
    trials = resolve_trials(spec)
    assert [t.params for t in trials] == [{"x": 1, "seed": 0}, {"x": 1, "seed": 3}, {"x": 2.0, "seed": 0},
                                          {"x": 2.0, "seed": 3}]
    assert trials[1].config["seed"] == 3 and trials[2].config["x"] == 2.0
    assert len({t.hash for t in trials}) == 4
    assert trials[0].hash == config_hash("sweep-test-exp", trials[0].config)
    assert trials[0].name == f"x=1,seed=0-{trials[0].hash}"
    # the same config always gets the same folder; quick changes the config and thus the hash
    again = resolve_trials(SweepSpec(experiment="sweep-test-exp", grid={"x": [1], "seed": [0]}))
    assert again[0].hash == trials[0].hash
    quick = resolve_trials(SweepSpec(experiment="sweep-test-exp", grid={"seed": [0]}, quick=True))
    assert quick[0].config["x"] == 100.0
    assert default_out(spec, trials) == default_out(spec, list(reversed(trials)))
    assert default_out(spec, trials) != default_out(spec, trials[:2])


def test_bad_keys_and_values_fail_before_running():
    with pytest.raises(ConfigError, match="unknown key 'nope'"):
        resolve_trials(SweepSpec(experiment="sweep-test-exp", grid={"nope": [1]}))
    with pytest.raises(ConfigError, match="seed"):
        resolve_trials(SweepSpec(experiment="sweep-test-exp", grid={"seed": [0, -1]}))
    with pytest.raises(ConfigError, match="twice"):
        resolve_trials(SweepSpec(experiment="sweep-test-exp", grid={"seed": [1, 1]}))
    with pytest.raises(ConfigError, match="unknown experiment"):
        resolve_trials(SweepSpec(experiment="no-such-exp"))


def test_trial_name_is_filesystem_safe():
    name = trial_name({"path": "/a b/c", "ev": [1, 2]}, "deadbeef")
    assert "/" not in name and " " not in name and name.endswith("-deadbeef")
    assert len(trial_name({"k": "v" * 500}, "deadbeef")) <= 80 + 9


def test_load_spec_merges_cli(tmp_path):
    (tmp_path / "base.yaml").write_text("x: 3.0\n")
    f = tmp_path / "sweep.yaml"
    f.write_text("experiment: sweep-test-exp\nconfig: base.yaml\ngrid:\n  seed: [0, 1]\nmax_parallel: 2\n")
    spec = load_spec(f, grid={"x": [5.0]}, set={}, engine=None, quick=False, max_parallel=None)
    assert spec.grid == {"seed": [0, 1], "x": [5.0]} and spec.max_parallel == 2 and spec.engine == "local"
    assert Path(spec.config) == tmp_path / "base.yaml"
    assert resolve_trials(load_spec(f))[0].config["x"] == 3.0
    f.write_text("experiment: sweep-test-exp\ngrid: {seed: [0]}\nengine: slurm\n")
    with pytest.raises(ConfigError, match="engine"):
        load_spec(f)
    f.write_text("experiment: sweep-test-exp\ngrid: {seed: []}\n")
    with pytest.raises(ConfigError, match="no values"):
        load_spec(f)
