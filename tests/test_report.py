"""mesaopt.report: tables rendered from stored results, intervals against hand-computed values, drift detection."""

from __future__ import annotations

import json

import pytest

from mesaopt import report
from mesaopt.errors import ConfigError


def _store(root, name, seed, **metrics):
    (root / name).mkdir(parents=True, exist_ok=True)
    data = {"experiment": name, "seed": seed, "metrics": metrics,
            "provenance": {"commit": "abcdef0123456789", "command": f"mesaopt run {name} --set seed={seed}",
                           "finished_utc": "2026-11-29T12:00:00+00:00"}}
    (root / name / f"seed{seed}.json").write_text(json.dumps(data))


def test_interval_matches_the_t_table():
    mean, half = report.interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.302652729911275 / 3 ** 0.5, rel=1e-9)  # t_{0.975, 2}
    assert report.interval([5.0])[1] != report.interval([5.0])[1]  # NaN for one value


def test_render_check_and_write_round_trip(tmp_path):
    docs = tmp_path / "docs"
    root = docs / "results"
    for s, (a, b) in enumerate([(0.8, 0.64), (0.6, 0.64), (0.7, 0.64)]):
        _store(root, "mahankali-optimal", s, lr_learned=a, lr_optimal=b, lsa_loss=1.0, optimal_gd_loss=1.0)
    table = report.render("mahankali-optimal", root)
    assert "| N = 20: learned lr | 0.7000 ± 0.2484 (range 0.6000–0.8000) |" in table  # sd 0.1, t 4.3027, n 3
    assert "seeds [0, 1, 2]" in table and "`abcdef0123`" in table and "2026-11-29" in table
    page = docs / "experiments" / "m.md"
    page.parent.mkdir(parents=True)
    page.write_text("intro\n<!-- report:mahankali-optimal -->\nstale\n<!-- /report:mahankali-optimal -->\nend\n")
    assert len(report.check(docs)) == 1
    assert report.write(docs) == [page]
    assert report.check(docs) == [] and page.read_text().endswith("<!-- /report:mahankali-optimal -->\nend\n")
    page.write_text(page.read_text().replace("0.7000", "0.7001"))  # a number edited by hand
    assert report.check(docs) and "mahankali-optimal" in report.check(docs)[0]


def test_missing_or_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="no stored results"):
        report.render("mahankali-optimal", tmp_path)
    with pytest.raises(ConfigError, match="no report table"):
        report.render("nope", tmp_path)
    (tmp_path / "svm-implicit-bias").mkdir()
    (tmp_path / "svm-implicit-bias" / "x.json").write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        report.render("svm-implicit-bias", tmp_path)


def test_docs_tables_equal_their_stored_results():
    from pathlib import Path

    docs = Path(__file__).resolve().parents[1] / "docs"
    assert report.check(docs) == []


def test_sweep_trials_name_the_sweep_once_and_pipes_are_escaped(tmp_path):
    for s in (0, 1):
        _store(tmp_path, "vonoswald-gd", s, lsa_loss=0.2, gd_loss=0.2, sens_cos=1.0, pred_diff=0.01, gd_lr=6.0,
               lsa_lr_effective=6.0, construction_err=0.0)
        f = tmp_path / "vonoswald-gd" / f"seed{s}.json"
        data = json.loads(f.read_text())
        data["provenance"]["command"] = f"mesaopt sweep vonoswald-gd --grid seed=0,1 (trial seed={s}-abc)"
        data["wall_s"] = 20.0 + s
        f.write_text(json.dumps(data))
    table = report.render("vonoswald-gd", tmp_path)
    assert "command `mesaopt sweep vonoswald-gd --grid seed=0,1`." in table and "wall 20–21 s per run" in table
    assert "| mean \\|pred. difference\\| | 0.01 |" in table


def test_a_grid_table_has_one_row_per_depth(tmp_path):
    for s, lsa in enumerate((0.10, 0.12)):
        _store(tmp_path, "vonoswald-deep", s, lsa_loss_k1=0.2, gd_loss_k1=0.2, gdpp_loss_k1=0.2, lsa_loss_k2=lsa,
               gd_loss_k2=0.16, gdpp_loss_k2=0.11, best_is_gdpp_k2=1.0, sens_cos_k2=0.99)
    table = report.render("vonoswald-deep", tmp_path)
    lines = table.splitlines()
    assert lines[0] == "Mean ± 95 % interval over 2 runs (seeds [0, 1]):"
    assert lines[2].startswith("| K | trained LSA | K-step GD | K-step GD++ | LSA / GD++ | K-step GD++, per-layer")
    assert lines[4].startswith("| 1 | 0.2000 | 0.2000 | 0.2000 | 1.000 | — |")  # equal in every run: no interval
    half = 12.706204736174707 * 0.01  # t_{0.975, 1} * sd / sqrt(2), sd = 0.01 * sqrt(2)
    assert lines[5].startswith(f"| 2 | 0.1100 ± {half:.4f} | 0.1600 | 0.1100 | 1.000 ± ")
    assert "| 1.00 | 0.9900 |" in lines[5]  # a share of runs has no interval
    assert lines[8].startswith("| 5 | — | — |") and "Source: `docs/results/vonoswald-deep/` (2 runs)" in table


def test_a_per_run_table_lists_every_seed_and_a_median_that_counts_a_miss_as_worst(tmp_path):
    nan = float("nan")
    for s, (reached, steps) in enumerate([(0.0, nan), (1.0, 18200.0), (1.0, 12400.0)]):
        _store(tmp_path, "garg-d20", s, reached=reached, steps_to_target=steps, steps=40000.0 if s == 0 else steps,
               train_wall_s=8000.0, err_at_40=0.06 if s == 0 else 0.049)
    lines = report.render("garg-d20", tmp_path).splitlines()
    assert lines[0].startswith("| seed | reached 0.05 at N = 40 | steps to the target |")
    assert lines[2].startswith("| 0 | 0 | — | — | — | 40000 | 0.200 |")  # missing keys render as —
    assert lines[3].startswith("| 1 | 1 | 18200 |") and lines[4].startswith("| 2 | 1 | 12400 |")
    assert lines[5].startswith("| median | 1 | 18200 |")  # of (12400, 18200, never): the middle one
    assert report.median_nan_last([1.0, nan]) != report.median_nan_last([1.0, nan])  # a middle miss -> NaN
    assert report.median_nan_last([3.0, 1.0, 2.0, 4.0]) == 2.5
