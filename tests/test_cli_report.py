"""`mesaopt report [NAME] [--check] [--write]` on a temporary docs tree: exit codes, printed tables, rewrites."""

from __future__ import annotations

import json

import pytest

import mesaopt
from mesaopt.cli import main


def _run(argv, capsys):
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _docs(tmp_path):
    """docs/ with two stored mahankali-optimal runs, a page holding a stale block and a README with a fresh one."""
    docs = tmp_path / "docs"
    for seed, lr in ((0, 0.62), (1, 0.66)):
        folder = docs / "results" / "mahankali-optimal"
        folder.mkdir(parents=True, exist_ok=True)
        metrics = {"lr_learned": lr, "lr_optimal": 0.64, "lsa_loss": 1.9, "optimal_gd_loss": 1.9}
        (folder / f"seed{seed}.json").write_text(json.dumps({
            "experiment": "mahankali-optimal", "seed": seed, "metrics": metrics,
            "provenance": {"commit": "0123456789abcdef", "command": "mesaopt sweep mahankali-optimal",
                           "finished_utc": "2026-12-01T10:00:00+00:00"}}))
    page = docs / "experiments" / "m.md"
    page.parent.mkdir(parents=True)
    page.write_text("# m\n<!-- report:mahankali-optimal -->\n| stale |\n<!-- /report:mahankali-optimal -->\n")
    return docs, page


def test_check_fails_on_a_drifted_table_and_passes_after_write(tmp_path, capsys):
    docs, page = _docs(tmp_path)
    code, out, _ = _run(["report", "--check", "--docs", str(docs)], capsys)
    assert code == 1 and "m.md: the mahankali-optimal table differs" in out and "1 report table(s) drifted" in out
    code, out, _ = _run(["report", "--write", "--docs", str(docs)], capsys)
    assert code == 0 and f"rewrote {page}" in out
    assert "| N = 20: learned lr | 0.6400" in page.read_text() and "`0123456789`" in page.read_text()
    code, out, _ = _run(["report", "--check", "--docs", str(docs)], capsys)
    assert code == 0 and "1 report block(s) match" in out
    page.write_text(page.read_text().replace("0.6400", "0.6500"))  # a number edited by hand
    assert _run(["report", "--check", "--docs", str(docs)], capsys)[0] == 1
    code, out, _ = _run(["report", "mahankali-optimal", "--check", "--write", "--docs", str(docs)], capsys)
    assert code == 0 and "rewrote" in out and "match their stored results" in out


def test_a_block_without_stored_runs_is_a_drift(tmp_path, capsys):
    docs, page = _docs(tmp_path)
    (docs / "extra.md").write_text("<!-- report:vonoswald-gd -->\n<!-- /report:vonoswald-gd -->\n")
    code, out, _ = _run(["report", "--check", "--docs", str(docs)], capsys)
    assert code == 1 and "vonoswald-gd table cannot be rendered" in out and "no stored results" in out
    code, out, _ = _run(["report", "--check", "mahankali-optimal", "--write", "--docs", str(docs)], capsys)
    assert code == 0  # NAME restricts --write and --check to that table


def test_name_prints_the_table_and_no_name_prints_every_stored_one(tmp_path, capsys):
    docs, _ = _docs(tmp_path)
    code, out, _ = _run(["report", "mahankali-optimal", "--docs", str(docs)], capsys)
    assert code == 0 and out.startswith("| quantity | mean ± 95 % interval over 2 runs (seeds [0, 1]) |")
    assert out == mesaopt.report("mahankali-optimal", docs / "results")  # the module is callable
    code, out, _ = _run(["report", "--docs", str(docs)], capsys)
    assert code == 0 and out.startswith("## mahankali-optimal\n") and "vonoswald-gd" not in out


@pytest.mark.parametrize("argv, msg", [
    (["report", "nope"], "no report table for 'nope'"),
    (["report", "--check", "--docs", "{missing}"], "does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, msg):
    argv = [a.replace("{missing}", str(tmp_path / "missing")) for a in argv]
    code, out, err = _run(argv, capsys)
    assert code == 2 and msg in err and out == ""


def test_import_mesaopt_stays_free_of_torch():
    import subprocess
    import sys

    code = "import sys, mesaopt; mesaopt.report.render; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"


def test_write_leaves_every_page_untouched_if_a_table_fails(tmp_path, capsys):
    docs, page = _docs(tmp_path)
    (docs / "zz.md").write_text("<!-- report:vonoswald-gd -->\n<!-- /report:vonoswald-gd -->\n")
    before = page.read_text()
    code, _, err = _run(["report", "--write", "--docs", str(docs)], capsys)
    assert code == 2 and "no stored results for 'vonoswald-gd'" in err and page.read_text() == before
