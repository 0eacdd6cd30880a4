"""identify / compare on a multi-model run folder (sub-runs k1/, k2/, ... each with ckpt/), --model, clear errors."""

from __future__ import annotations

import json

import pytest
from cli_helpers import run_cli as _cli

FAST = ["--batch-size", "64", "--max-gd-steps", "4", "--max-newton-iters", "4", "--families", "ols,gd"]




@pytest.fixture(scope="module")
def deep(tmp_path_factory):
    """A vonoswald-deep-like folder: k1/ and k2/ (LSA with 1 and 2 layers) plus files and a model-less sub-folder."""
    from mesaopt.models import LSA
    from mesaopt.tasks import LinearRegression
    from mesaopt.train import TrainConfig, train

    root = tmp_path_factory.mktemp("deep")
    task = LinearRegression(d=3, x_dist="uniform", input_range=1.0)
    for k in (2, 1):
        train(LSA(d=3, layers=k, init_std=0.05), task, TrainConfig(steps=5, batch_size=32, n_points=7, lr=1e-2,
                                                                  eval_every=0, ckpt_every=0),
              out=root / f"k{k}", progress=False)
    (root / "results.json").write_text("{}")
    (root / "figures").mkdir()
    return root


def test_identify_reports_every_model_keyed_by_subfolder(deep, capsys):
    code, out, err = _cli(["identify", str(deep), "--json", *FAST], capsys)
    data = json.loads(out)
    assert code == 0 and list(data) == ["k1", "k2"]
    assert len(data["k1"]["best"]) == 1 and len(data["k2"]["best"]) == 2
    code, out, _ = _cli(["identify", str(deep), *FAST], capsys)
    assert code == 0 and f"identify {deep / 'k1'}" in out and f"identify {deep / 'k2'}" in out


def test_model_picks_one_and_matches_the_subfolder(deep, capsys):
    one = json.loads(_cli(["identify", str(deep), "--model", "k2", "--json", *FAST], capsys)[1])
    direct = json.loads(_cli(["identify", str(deep / "k2"), "--json", *FAST], capsys)[1])
    assert one == direct and len(one["best"]) == 2


def test_compare_every_model_with_one_plot_each(deep, tmp_path, capsys):
    code, out, _ = _cli(["compare", str(deep), "--algorithms", "gd,ols", "--json", "--batch-size", "64",
                         "--plot", str(tmp_path / "cmp.png")], capsys)
    data = json.loads(out)
    assert code == 0 and list(data) == ["k1", "k2"] and [r["algorithm"] for r in data["k2"]["rows"]] == ["gd", "ols"]
    assert (tmp_path / "cmp-k1.png").is_file() and (tmp_path / "cmp-k2.pdf").is_file()
    code, out, _ = _cli(["compare", str(deep), "--model", "k1", "--algorithms", "gd", "--batch-size", "64"], capsys)
    assert code == 0 and f"compare {deep / 'k1'}" in out and "k2" not in out


@pytest.mark.parametrize("argv,needles", [
    (["identify", "{root}/figures"], ["no checkpoint in", "figures", "it is empty"]),
    (["compare", "{root}/missing"], ["does not exist"]),
    (["identify", "{root}", "--model", "k9"], ["no model 'k9'", "its models: k1, k2"]),
    (["compare", "{root}/k1", "--model", "k1"], ["no model 'k1'", "no sub-folder with a checkpoint"]),
    (["identify", "{root}/results.json"], ["is not a folder"]),
])
def test_bad_folders_one_line_exit_2(deep, capsys, argv, needles):
    code, out, err = _cli([a.format(root=deep) for a in argv], capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and out == "" and len(lines) == 1 and lines[0].startswith("error:")
    assert all(n in err for n in needles), err


def test_no_checkpoint_lists_what_is_inside(tmp_path, capsys):
    (tmp_path / "k1").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    code, _, err = _cli(["identify", str(tmp_path)], capsys)
    assert code == 2 and "it holds: k1/, notes.txt" in err and "sub-folders" in err


def test_default_run_folders_never_collide(tmp_path, monkeypatch):
    """Two runs started within the same second without --out get different folders (the docs run them back to back)."""
    from mesaopt.experiments.base import default_out
    from mesaopt.train.job import default_out as train_default_out

    monkeypatch.chdir(tmp_path)
    first = default_out("vonoswald-gd")
    first.mkdir(parents=True)
    second = default_out("vonoswald-gd")
    assert second != first and not second.exists()
    assert train_default_out().parent == first.parent
