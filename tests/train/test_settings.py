"""One source of truth for config: every field a user can set takes effect or is rejected (issue 14 part 3)."""

from __future__ import annotations

import pytest
import yaml

from mesaopt import experiments
from mesaopt.cli import main
from mesaopt.config import validate
from mesaopt.errors import ConfigError
from mesaopt.experiments import make_config
from mesaopt.train import TrainConfig
from mesaopt.train.settings import EXPERIMENT_OWNED, TrainSettings, train_settings

EXPERIMENTS = experiments.names()


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_train_seed_is_rejected_or_takes_effect(name):
    try:
        cfg = make_config(name, overrides={"train.seed": "5"})
    except ConfigError as e:
        msg = str(e)
        assert "train.seed" in msg and "\n" not in msg
        return
    assert cfg.model_dump()["train"]["seed"] == 5  # pragma: no cover - no experiment accepts it today


@pytest.mark.parametrize("name", EXPERIMENTS)
@pytest.mark.parametrize("field", ["seed", "device", "n_points"])
def test_owned_train_fields_rejected_from_yaml(name, field, tmp_path):
    cfg = make_config(name)
    if "train" not in type(cfg).model_fields:
        pytest.skip(f"{name} has no train section")
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"train": {field: 1}}))
    with pytest.raises(ConfigError, match=f"train.{field}: unknown field"):
        make_config(name, config_path=p)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_flat_seed_still_sets_the_experiment_seed(name):
    assert make_config(name, overrides={"seed": "5"}).seed == 5


def test_cli_train_seed_exit_2_one_line(capsys):
    with pytest.raises(SystemExit) as ei:
        main(["run", "vonoswald-gd", "--set", "train.seed=5"])
    err = capsys.readouterr().err.strip()
    assert ei.value.code == 2
    assert len(err.splitlines()) == 1 and "unknown key 'train.seed' (did you mean seed?)" in err


def test_raventos_objective_is_owned():
    with pytest.raises(ConfigError, match="objective"):
        make_config("raventos-pool", overrides={"train.objective": "query"})


def test_garg_sparse_steps_below_warmup_rejected():
    with pytest.raises(ConfigError, match="sparse.train_steps"):
        make_config("garg-curves", overrides={"sparse.train_steps": "50", "train.warmup_steps": "100"})


def test_settings_model_follows_train_config():
    Settings = train_settings("S", {"steps": 100, "curriculum": {"dims": {"start": 1, "end": 3, "inc": 1,
                                                                          "interval": 5}}}, owned=("objective",))
    assert issubclass(Settings, TrainSettings)
    assert set(Settings.model_fields) == set(TrainConfig.model_fields) - {*EXPERIMENT_OWNED, "objective"}
    s = Settings()
    assert s.steps == 100 and s.curriculum.dims.end == 3 and Settings().curriculum is not s.curriculum
    full = s.to_train(seed=3, device="cpu", n_points=7, objective="prefix")
    assert isinstance(full, TrainConfig) and (full.seed, full.n_points, full.steps) == (3, 7, 100)
    assert s.to_train(seed=3, device="cpu", n_points=7, objective="prefix", derived={"lr": 0.5}).lr == 0.5


def test_settings_validators_and_errors():
    Settings = train_settings("S2", {"steps": 100})
    with pytest.raises(ConfigError, match="betas: each beta"):
        validate(Settings, {"betas": [0.9, 1.5]})
    with pytest.raises(ConfigError, match=r"warmup_steps \(200\) must be <= steps \(100\)"):
        validate(Settings, {"warmup_steps": 200})
    with pytest.raises(ConfigError, match="lr: Input should be a finite number"):
        validate(Settings, {"lr": "nan"})
    with pytest.raises(ConfigError, match="n_points must be > n_queries"):
        Settings().to_train(seed=0, device="cpu", n_points=1)
    with pytest.raises(TypeError, match="owned"):
        Settings().to_train(seed=0, device="cpu")
    with pytest.raises(TypeError, match="owned"):
        Settings().to_train(seed=0, device="cpu", n_points=3, lr=1.0)
    with pytest.raises(TypeError):
        train_settings("S3", {"seed": 1})
    with pytest.raises(TypeError):
        train_settings("S4", owned=("no_such_field",))


@pytest.mark.parametrize("name", [n for n in EXPERIMENTS if n.startswith("svm-")])
def test_svm_device_other_than_cpu_rejected(name):
    with pytest.raises(ConfigError, match="device: the svm experiments run on the CPU only"):
        make_config(name, overrides={"device": "cuda"})


def test_resume_of_a_folder_written_before_train_settings(tmp_path, monkeypatch):
    """Old config.yaml files list train.seed/device/n_points (ignored by the run): resume drops them."""
    from mesaopt.experiments import base

    cfg = make_config("vonoswald-gd", quick=True)
    old = {"experiment": "vonoswald-gd", **cfg.model_dump(mode="json")}
    old["train"].update(seed=0, device="cpu", n_points=11)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    seen = {}

    def fake(c, ctx):
        seen["cfg"] = c
        return {"x": 1.0}

    exp = base.get("vonoswald-gd")
    monkeypatch.setitem(base.REGISTRY._entries, "vonoswald-gd",
                        base.Experiment(exp.name, exp.description, exp.config_cls, fake, exp.quick))
    base.run("vonoswald-gd", out=tmp_path, resume=True, progress=False)
    assert seen["cfg"] == cfg
    assert "seed" not in yaml.safe_load((tmp_path / "config.yaml").read_text())["train"]
