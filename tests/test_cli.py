"""The CLI's bad-input contract: one line on stderr naming the problem, exit code 2, no traceback."""

from __future__ import annotations

import json

import pytest

from mesaopt.cli import main


def _run(argv, capsys):
    with pytest.raises(SystemExit) as ei:
        main(argv)
    cap = capsys.readouterr()
    return ei.value.code, cap.out, cap.err


BAD_INPUTS = [
    (["run", "no-such-experiment"], "unknown experiment 'no-such-experiment'"),
    (["run", "vonoswald-gd", "--set", "bogus=1"], "unknown key 'bogus'"),
    (["run", "vonoswald-gd", "--set", "d=-3"], "d: Input should be greater than or equal to 1"),
    (["run", "vonoswald-gd", "--set", "n_context=0"], "n_context: Input should be greater than or equal to 1"),
    (["run", "vonoswald-gd", "--set", "d=ten"], "d: Input should be a valid integer"),
    (["run", "vonoswald-gd", "--set", "lr=nan"], "train.lr: Input should be a finite number"),
    (["run", "vonoswald-gd", "--set", "lr=inf"], "train.lr: Input should be a finite number"),
    (["run", "vonoswald-gd", "--set", "lr=-1e-3"], "train.lr"),
    (["run", "vonoswald-gd", "--set", "steps=0"], "train.steps"),
    (["run", "vonoswald-gd", "--set", "d"], "--set expects key=value"),
    (["run", "vonoswald-gd", "--set", "train.optimizer=lbfgs"], "train.optimizer"),
    (["run", "vonoswald-gd", "--set", "seed=-1"], "seed: Input should be greater than or equal to 0"),
    (["run", "vonoswald-gd", "--set", "input_range=0"], "input_range: Input should be greater than 0"),
    (["run", "vonoswald-gd", "-c", "{missing}"], "does not exist"),
    (["run", "vonoswald-gd", "-c", "{badyaml}"], "is not valid YAML"),
    (["run", "vonoswald-gd", "-c", "{listyaml}"], "must hold a mapping"),
    (["run", "vonoswald-gd", "-c", "{unknownfield}"], "color: unknown field"),
    (["run", "vonoswald-gd", "--resume"], "--resume needs --out"),
    (["run", "vonoswald-gd", "--resume", "--out", "{emptydir}"], "cannot resume"),
    (["run", "vonoswald-gd", "--out", "{afile}"], "exists and is not a directory"),
    (["run", "vonoswald-gd", "--out", "{oldrun}"], "already holds a run; continue it with --resume"),
    (["run", "vonoswald-gd", "--bogus-flag"], "No such option: --bogus-flag"),
    (["run"], "Missing argument"),
    (["no-such-command"], "No such command"),
]


# the other commands (with BAD_INPUTS and test_cli_discover's bad --out cases: > 60 bad inputs in all)
BAD_INPUTS += [
    (["train"], "mesaopt train needs -c cfg.yaml"),
    (["train", "-c", "{missing}"], "does not exist"),
    (["train", "-c", "{badmodel}"], "model.kind must be one of"),
    (["train", "-c", "{badtrain}"], "train.steps: Input should be greater than or equal to 1"),
    (["train", "-c", "{badtask}"], "noise: unknown field"),
    (["train", "--resume", "{emptydir}"], "cannot resume"),
    (["sweep", "vonoswald-gd", "--grid", "seed"], "--grid expects key=v1,v2"),
    (["sweep", "vonoswald-gd", "--grid", "bogus=1,2"], "unknown key 'bogus'"),
    (["sweep", "vonoswald-gd", "--grid", "seed=0", "--engine", "spark"], "engine: must be one of"),
    (["sweep", "vonoswald-gd", "--grid", "seed=0", "--max-parallel", "0"], "max_parallel"),
    (["identify", "{emptydir}"], "no checkpoint in"),
    (["identify", "{missing}"], "does not exist"),
    (["identify", "{emptydir}", "--model", "k9"], "no model 'k9'"),
    (["compare", "{emptydir}"], "no checkpoint in"),
    (["svm", "--param", "X"], "--param must be one of"),
    (["svm", "--n", "0"], "n must be an integer >= 1"),
    (["svm", "--T", "1"], "T must be >= 2"),
    (["svm", "--d", "-2"], "d must be an integer >= 1"),
    (["config", "nope"], "unknown experiment 'nope'"),
    (["report", "nope"], "no report table for 'nope'"),
    (["report", "--docs", "{missing}", "--check"], "does not exist"),
    (["patch", "{emptydir}"], "no checkpoint in"),
    (["export", "{emptydir}", "{missing}"], "no checkpoint in"),
    (["export", "{missing}", "{emptydir}"], "does not exist"),
]


@pytest.fixture
def files(tmp_path):
    (tmp_path / "bad.yaml").write_text("train: {lr: 1e-3\n")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    (tmp_path / "unknown.yaml").write_text("color: red\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("x")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.yaml").write_text("experiment: vonoswald-gd\n")
    (tmp_path / "badmodel.yaml").write_text("model: {kind: nope}\n")
    (tmp_path / "badtrain.yaml").write_text("model: {kind: lsa, d: 3}\ntrain: {steps: -1}\n")
    (tmp_path / "badtask.yaml").write_text("model: {kind: lsa, d: 3}\ntask: {kind: linear, d: 4, noise: 1}\n")
    return {"missing": str(tmp_path / "missing.yaml"), "badyaml": str(tmp_path / "bad.yaml"),
            "listyaml": str(tmp_path / "list.yaml"), "unknownfield": str(tmp_path / "unknown.yaml"),
            "emptydir": str(tmp_path / "empty"), "afile": str(tmp_path / "afile"),
            "oldrun": str(tmp_path / "old"), "badmodel": str(tmp_path / "badmodel.yaml"),
            "badtrain": str(tmp_path / "badtrain.yaml"), "badtask": str(tmp_path / "badtask.yaml")}


@pytest.mark.parametrize("argv, fragment", BAD_INPUTS, ids=[" ".join(a)[:60] for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2(argv, fragment, files, capsys):
    argv = [a.format(**files) for a in argv]
    code, out, err = _run(argv, capsys)
    assert code == 2
    assert out == ""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:")
    assert "Traceback" not in err
    assert fragment in lines[0], lines[0]


def test_list_names_the_experiments(capsys):
    main(["list"])
    assert "vonoswald-gd" in capsys.readouterr().out


def test_python_dash_m_entry_point():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "mesaopt", "run", "nope"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: unknown experiment") and r.stdout == ""


@pytest.mark.slow
def test_quick_run_json_contract(tmp_path, capsys):
    main(["run", "vonoswald-gd", "--quick", "--json", "--out", str(tmp_path / "r")])
    out = capsys.readouterr().out
    res = json.loads(out)
    assert set(res) == {"experiment", "version", "seed", "config", "metrics", "wall_s", "artifacts", "provenance",
                        "out"}
    for k in ("lsa_loss", "gd_loss", "gd_lr", "pred_diff", "sens_cos", "construction_err"):
        assert k in res["metrics"]
    assert res.pop("out") == str(tmp_path / "r")
    assert json.loads((tmp_path / "r" / "results.json").read_text()) == res
    for fig in ("loss", "alignment", "weights", "gd_lr_scan"):
        assert f"{fig}.png" in res["artifacts"] and f"{fig}.pdf" in res["artifacts"]
    m = res["metrics"]  # the acceptance bounds already hold for the quick run
    assert m["lsa_loss"] <= 1.02 * m["gd_loss"]
    assert m["sens_cos"] >= 0.99
    assert m["construction_err"] <= 1e-5
