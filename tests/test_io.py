from __future__ import annotations

import json
import os

import pytest

from mesaopt.errors import CheckpointError, ConfigError
from mesaopt.io import (
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    load_yaml,
    read_jsonl,
    read_results,
    results_complete,
    to_json,
)


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    p = tmp_path / "a" / "f.txt"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert [f.name for f in p.parent.iterdir()] == ["f.txt"]


def test_atomic_write_failure_keeps_old_file(tmp_path, monkeypatch):
    p = tmp_path / "f.json"
    atomic_write_json(p, {"a": 1})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 1}
    assert sorted(f.name for f in tmp_path.iterdir()) == ["f.json"]


def test_to_json_is_strict_nan_becomes_null():
    import numpy as np
    import torch

    s = to_json({"x": float("nan"), "y": np.float32(1.5), "z": torch.tensor(2.0), "w": [float("inf")]})
    assert json.loads(s) == {"x": None, "y": 1.5, "z": 2.0, "w": [None]}


def test_jsonl_roundtrip_ignores_truncated_tail(tmp_path):
    p = tmp_path / "m.jsonl"
    append_jsonl(p, {"step": 1})
    append_jsonl(p, {"step": 2})
    with open(p, "a") as f:
        f.write('{"step": 3, "lo')
    assert read_jsonl(p) == [{"step": 1}, {"step": 2}]


@pytest.mark.parametrize(
    "content, fragment",
    [("a: [1, 2", "not valid YAML"), ("- 1\n- 2\n", "must hold a mapping"), ("\x00\x01", "")],
)
def test_load_yaml_errors_are_one_line(tmp_path, content, fragment):
    p = tmp_path / "c.yaml"
    p.write_text(content)
    try:
        data = load_yaml(p)
    except ConfigError as e:
        assert "\n" not in str(e) and fragment in str(e)
    else:
        assert fragment == "" and isinstance(data, dict | str)


def test_load_yaml_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_yaml(tmp_path / "nope.yaml")


def test_load_yaml_refuses_python_tags(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("a: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(p)


def test_read_results_contract(tmp_path):
    assert not results_complete(tmp_path)
    atomic_write_json(tmp_path / "results.json", {"experiment": "x"})
    with pytest.raises(CheckpointError, match="lacks keys"):
        read_results(tmp_path)
    full = {k: 0 for k in ("experiment", "version", "seed", "config", "metrics", "wall_s", "artifacts")}
    atomic_write_json(tmp_path / "results.json", full)
    assert results_complete(tmp_path)


def test_results_contract_lives_in_io_and_is_reexported(tmp_path):
    from mesaopt.experiments import Results as ExpResults
    from mesaopt.experiments.base import CONFIG_FILE, Results, list_artifacts
    from mesaopt.io import CONFIG_FILE as IO_CONFIG_FILE
    from mesaopt.io import RESULTS_KEYS
    from mesaopt.io import Results as IoResults
    from mesaopt.io import list_artifacts as io_list_artifacts

    assert Results is IoResults is ExpResults and list_artifacts is io_list_artifacts
    assert CONFIG_FILE == IO_CONFIG_FILE == "config.yaml"
    (tmp_path / "fig.png").write_bytes(b"x")
    (tmp_path / ".tmp").write_bytes(b"x")
    res = IoResults("e", "0", 1, {}, {"m": float("nan")}, 0.5, io_list_artifacts(tmp_path), tmp_path)
    atomic_write_json(tmp_path / "results.json", res.to_dict())
    assert tuple(res.to_dict()) == RESULTS_KEYS and res.artifacts == ["fig.png"]
    assert read_results(tmp_path)["metrics"] == {"m": None}
