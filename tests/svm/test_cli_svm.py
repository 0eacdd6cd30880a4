"""`mesaopt svm`: JSON output from the API, one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest

from mesaopt.cli import main


def test_svm_json(capsys):
    main(["svm", "--param", "W", "--n", "2", "--T", "3", "--d", "4", "--steps", "200", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["feasible"] and out["svm_min_margin"] >= 1 - 1e-6 and out["corr"] > 0.95
    assert out["norm"] == "fro" and len(out["selected"]) == 2


@pytest.mark.parametrize("args", [["--param", "QK"], ["--n", "0"]])
def test_svm_bad_args(capsys, args):
    with pytest.raises(SystemExit) as e:
        main(["svm", *args, "--steps", "5"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1
