"""Documented numbers rendered from stored runs: ``docs/results/NAME/*.json`` -> markdown tables in the docs.

Every reproduction the docs quote keeps its ``results.json`` files (one per seed, with the ``provenance`` block)
under ``docs/results/NAME/``. ``render(name)`` turns them into a markdown table: one row per quantity, the mean
and a 95 % Student-t interval over the stored seeds (or the single value), the seeds used and the source line
(commit, command, date). A docs page holds the rendered table between ``<!-- report:NAME -->`` and
``<!-- /report:NAME -->``; ``check()`` lists every block that differs from what the stored files render (so a
number edited by hand, or a stored run replaced without re-rendering, fails CI) and ``write()`` re-renders them.
A table is a list of ``Row`` (quantity | value) or a ``Grid`` (one row per K, one column per quantity);
``summary`` is the README's table of key numbers across experiments (``SUMMARY``). ``command()`` is
``mesaopt report [NAME] [--check] [--write]``. The module is callable: ``mesaopt.report(name)`` renders a table.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from mesaopt.errors import ConfigError
from mesaopt.io import read_json_object

DEFAULT_RESULTS = Path("docs") / "results"
_TRIAL = re.compile(r" \(trial [^()]*\)$")
BLOCK = re.compile(r"(<!-- report:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /report:(?P=name) -->)", re.S)


@dataclass(frozen=True)
class Row:
    """One quantity of a table: a label and a metric key (or a function of the metrics dict), printed with fmt."""

    label: str
    key: str | Callable[[dict[str, float]], float]
    fmt: str = "{:.4g}"
    spread: bool = True  # False: the mean alone (a share of runs, where an interval means nothing)

    def value(self, metrics: dict[str, float]) -> float:
        """The quantity for one run's metrics (NaN if the key is missing or null)."""
        if callable(self.key):
            return float(self.key(metrics))
        v = metrics.get(self.key)
        return math.nan if v is None else float(v)


@dataclass(frozen=True)
class Grid:
    """A wide table: one row per index value (e.g. K), one column per quantity, cells ``mean ± 95 % half-width``.

    ``columns`` are (header, row factory): the factory turns an index value into the Row of that cell.
    """

    index: str
    values: tuple[int | str, ...]
    columns: tuple[tuple[str, Callable[[int | str], Row]], ...]


def _ratio(a: str, b: str) -> Callable[[dict[str, float]], float]:
    """metrics[a] / metrics[b]; NaN if either is missing or null."""

    def ratio(m: dict[str, float]) -> float:
        x, y = m.get(a), m.get(b)
        return math.nan if x is None or y is None else float(x) / float(y)

    return ratio


TABLES: dict[str, list[Row] | Grid] = {
    "vonoswald-gd": [Row("trained LSA loss (½·MSE)", "lsa_loss", "{:.6f}"),
                     Row("one GD step loss", "gd_loss", "{:.6f}"),
                     Row("loss ratio LSA / GD", _ratio("lsa_loss", "gd_loss"), "{:.5f}"),
                     Row("sensitivity cosine", "sens_cos", "{:.5f}"), Row("mean |pred. difference|", "pred_diff"),
                     Row("GD's optimal lr", "gd_lr", "{:.4f}"),
                     Row("LSA's effective lr (slope on GD with lr 1)", "lsa_lr_effective", "{:.4f}"),
                     Row("construction error", "construction_err", "{:.2g}")],
    "mahankali-optimal": [
        Row("N = 20: learned lr", "lr_learned", "{:.4f}"), Row("N = 20: optimal lr η* (closed form)", "lr_optimal",
                                                                 "{:.4f}"),
        Row("N = 20: learned lr from the weights, tr(Γ)/d", "lr_learned_weights", "{:.4f}"),
        Row("N = 20: |lr_learned − η*| / η*", "lr_rel_err", "{:.2g}"),
        Row("N = 20: Γ anisotropy", "gamma_anisotropy", "{:.3f}"),
        Row("N = 20: trained LSA loss (½·MSE)", "lsa_loss", "{:.5f}"),
        Row("N = 20: one GD step with η*, same tasks", "optimal_gd_loss", "{:.5f}"),
        Row("N = 20: R*/2 (closed form)", "optimal_gd_risk", "{:.5f}"),
        Row("N = 20: loss ratio LSA / GD(η*)", "loss_ratio", "{:.5f}"),
        Row("N = 20: mean |ŷ_LSA − ŷ_GD(η*)|", "pred_diff", "{:.3f}"),
        *[row for n in (5, 10, 40) for row in (
            Row(f"N = {n}: learned lr", f"lr_learned_n{n}", "{:.4f}"),
            Row(f"N = {n}: η* (closed form)", f"lr_optimal_n{n}", "{:.4f}"),
            Row(f"N = {n}: trained LSA loss", f"lsa_loss_n{n}", "{:.4f}"),
            Row(f"N = {n}: R*/2 (closed form)", f"optimal_gd_risk_n{n}", "{:.4f}"))]],
    "svm-implicit-bias": [
        Row("problems (of 20) whose Frobenius SVM is feasible", "n_feasible_W", "{:.0f}"),
        Row("problems (of 20) whose nuclear SVM is feasible", "n_feasible_KQ", "{:.0f}"),
        Row("corr(W, W^mm), Frobenius SVM", "corr_W_fro", "{:.4f}"),
        Row("… lowest of a run's 20 problems", "corr_W_fro_min", "{:.4f}"),
        Row("corr(KQᵀ, W^mm_⋆), nuclear SVM, λ = 2.2e-16", "corr_KQ_nuc", "{:.4f}"),
        Row("… lowest of a run's 20 problems", "corr_KQ_nuc_min", "{:.4f}"),
        Row("corr(KQᵀ, W^mm_⋆), λ = 0", "corr_KQ_nuc_noreg", "{:.4f}"),
        Row("… lowest of a run's 20 problems", "corr_KQ_nuc_noreg_min", "{:.4f}"),
        Row("corr(KQᵀ, W^mm_⋆ in GD's own subspaces), λ = 0", "corr_KQ_nuc_own_subspace_noreg", "{:.4f}"),
        Row("cross check corr(W, W^mm_⋆)", "corr_W_nuc", "{:.3f}"),
        Row("cross check corr(KQᵀ, W^mm)", "corr_KQ_fro", "{:.3f}"),
        Row("rank of W^mm", "rank_svm_fro", "{:.2f}"),
        Row("rank of W^mm_⋆", "rank_svm_nuc", "{:.2f}"),
        Row("softmax mass on the selected tokens (W)", "mass_W", "{:.4f}"),
        Row("softmax mass on the selected tokens (KQ)", "mass_KQ", "{:.4f}"),
        Row("share of problems ending at the global selection (W)", "frac_global_W", "{:.2f}"),
        Row("share of problems ending at the global selection (KQ)", "frac_global_KQ", "{:.2f}"),
        Row("‖KQᵀ‖_F at the end, λ = 2.2e-16", "w_norm_KQ", "{:.0f}"),
        Row("‖KQᵀ‖_F at the end, λ = 0", "w_norm_KQ_noreg", "{:.0f}"),
        *[row for n, t, d in ((4, 6, 8), (8, 10, 16)) for row in (
            Row(f"(n, T, d) = ({n}, {t}, {d}): corr(W, W^mm)", f"corr_W_fro_n{n}_T{t}_d{d}", "{:.4f}"),
            Row(f"(n, T, d) = ({n}, {t}, {d}): corr(KQᵀ, W^mm_⋆), λ = 2.2e-16", f"corr_KQ_nuc_n{n}_T{t}_d{d}",
                "{:.4f}"),
            Row(f"(n, T, d) = ({n}, {t}, {d}): corr(KQᵀ, W^mm_⋆), λ = 0", f"corr_KQ_nuc_noreg_n{n}_T{t}_d{d}",
                "{:.4f}"))]],
    "vonoswald-deep": Grid("K", (1, 2, 3, 4, 5), (
        ("trained LSA", lambda k: Row("", f"lsa_loss_k{k}", "{:.4f}")),
        ("K-step GD", lambda k: Row("", f"gd_loss_k{k}", "{:.4f}")),
        ("K-step GD++", lambda k: Row("", f"gdpp_loss_k{k}", "{:.4f}")),
        ("LSA / GD++", lambda k: Row("", _ratio(f"lsa_loss_k{k}", f"gdpp_loss_k{k}"), "{:.3f}")),
        ("K-step GD++, per-layer (η, γ)", lambda k: Row("", f"gdpp_layerwise_loss_k{k}", "{:.4f}")),
        ("LSA / GD++ per layer", lambda k: Row("", _ratio(f"lsa_loss_k{k}", f"gdpp_layerwise_loss_k{k}"), "{:.3f}")),
        ("best match GD++ (share of runs)", lambda k: Row("", f"best_is_gdpp_k{k}", "{:.2f}", spread=False)),
        ("sens_cos, best match", lambda k: Row("", f"sens_cos_k{k}", "{:.4f}")),
        ("sens_cos with GD", lambda k: Row("", f"sens_cos_gd_k{k}", "{:.4f}")),
        ("sens_cos with GD++", lambda k: Row("", f"sens_cos_gdpp_k{k}", "{:.4f}")),
        ("projected construction", lambda k: Row("", f"projected_loss_k{k}", "{:.4f}")),
        ("interpolation a = ½", lambda k: Row("", f"interp_loss_k{k}", "{:.4f}")))),
    "ebt-system2": Grid("task_condition", tuple(f"{t}_{c}" for t in ("linear", "relu2")
                                                for c in ("id", "ood_noise", "ood_long")), (
        *((f"S={s}", (lambda p, s=s: Row("", f"{p}_err_at_steps_{s}", "{:.3f}"))) for s in range(1, 9)),
        *((f"self-verify K at S={s}", (lambda p, s=s: Row("", f"{p}_sv_err_at_steps_{s}", "{:.3f}")))
          for s in (1, 4, 8)),
        ("feed-forward", lambda p: Row("", f"{p}_transformer_err", "{:.3f}")),
        ("ridge", lambda p: Row("", f"{p}_ridge_err", "{:.3f}")),
        ("gain 1→8", lambda p: Row("", f"{p}_s2_gain", "{:.2f}")))),
    "garg-d20": [Row("normalised error at N = 10", "err_at_10"), Row("normalised error at N = 20", "err_at_20"),
                 Row("normalised error at N = 40", "err_at_40"), Row("least squares at N = 40", "ols_err_at_40"),
                 Row("steps to the target", "steps_to_target", "{:.0f}"),
                 Row("wall seconds to the target", "wall_s_to_target", "{:.0f}"),
                 Row("curriculum complete at step", "curriculum_complete_step", "{:.0f}")],
}


SUMMARY_NAME = "summary"
# the README's key numbers: (experiment, row) pairs, each computed from that experiment's stored runs
SUMMARY: list[tuple[str, Row]] = [
    ("vonoswald-gd", Row("loss ratio LSA / one GD step", _ratio("lsa_loss", "gd_loss"), "{:.5f}")),
    ("vonoswald-gd", Row("sensitivity cosine LSA vs GD", "sens_cos", "{:.5f}")),
    *[("vonoswald-deep", Row(f"K = {k}: loss ratio LSA / {k}-step GD++", _ratio(f"lsa_loss_k{k}", f"gdpp_loss_k{k}"),
                             "{:.3f}")) for k in (1, 2, 3, 4)],
    ("mahankali-optimal", Row("N = 20: learned lr", "lr_learned", "{:.4f}")),
    ("mahankali-optimal", Row("N = 20: optimal lr η* (closed form)", "lr_optimal", "{:.4f}")),
    ("svm-implicit-bias", Row("corr(W, W^mm), Frobenius", "corr_W_fro", "{:.4f}")),
    ("svm-implicit-bias", Row("corr(KQᵀ, W^mm_⋆), nuclear, λ = 2.2e-16", "corr_KQ_nuc", "{:.4f}")),
    ("svm-implicit-bias", Row("corr(KQᵀ, W^mm_⋆), nuclear, λ = 0", "corr_KQ_nuc_noreg", "{:.4f}")),
]


def load_runs(name: str, root: str | Path = DEFAULT_RESULTS) -> list[dict]:
    """Every stored results.json object of ``name`` (``root/name/*.json``), sorted by seed then file name."""
    folder = Path(root) / name
    files = sorted(folder.glob("*.json"))
    if not files:
        raise ConfigError(f"no stored results for {name!r}: expected JSON files in '{folder}'")
    runs = []
    for f in files:
        data = read_json_object(f, ConfigError)
        if not isinstance(data.get("metrics"), dict):
            raise ConfigError(f"stored result '{f}' lacks a metrics object (not a results.json)")
        runs.append(data)
    return sorted(runs, key=lambda r: (r.get("seed", 0), r.get("experiment", "")))


def interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the Student-t ``level`` interval) of ``values``; half-width NaN for one value."""
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)


def _cell(values: list[float], fmt: str, with_range: bool = True, spread: bool = True) -> str:
    """``mean ± 95 % half-width (range lo–hi)``; the value alone for one run or one printed value in every run."""
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return "—"
    mean, half = interval(vals)
    if not spread or len(vals) == 1 or fmt.format(min(vals)) == fmt.format(max(vals)):
        return fmt.format(mean)  # one run, or the same printed value in every run (e.g. a closed form)
    cell = f"{fmt.format(mean)} ± {fmt.format(half)}"
    return f"{cell} (range {fmt.format(min(vals))}–{fmt.format(max(vals))})" if with_range else cell


def _source(runs: list[dict], name: str) -> str:
    prov = [r.get("provenance") or {} for r in runs]
    commits = sorted({str(p.get("commit"))[:10] for p in prov if p.get("commit")})
    dates = sorted({str(p.get("finished_utc", ""))[:10] for p in prov if p.get("finished_utc")})
    # a sweep trial records "<sweep command> (trial <folder>)": the table names the sweep command once
    cmds = list(dict.fromkeys(_TRIAL.sub("", str(p["command"])) for p in prov if p.get("command")))
    walls = [float(r["wall_s"]) for r in runs if isinstance(r.get("wall_s"), int | float)]
    parts = [f"`docs/results/{name}/` ({len(runs)} run{'s' if len(runs) != 1 else ''})"]
    if commits:
        parts.append("commit " + ", ".join(f"`{c}`" for c in commits))
    if dates:
        parts.append("finished " + (dates[0] if len(dates) == 1 else f"{dates[0]}–{dates[-1]}"))
    if walls:
        lo, hi = min(walls), max(walls)
        parts.append(f"wall {lo:.0f} s per run" if f"{lo:.0f}" == f"{hi:.0f}" else f"wall {lo:.0f}–{hi:.0f} s per run")
    if cmds:
        parts.append(("command " if len(cmds) == 1 else "commands ") + ", ".join(f"`{c}`" for c in cmds))
    return "Source: " + "; ".join(parts) + "."


def render_summary(root: str | Path = DEFAULT_RESULTS) -> str:
    """The README's table of key numbers (``SUMMARY``): experiment | quantity | mean ± 95 % interval | runs."""
    runs: dict[str, list[dict]] = {}
    lines = ["| experiment | quantity | mean ± 95 % interval over the stored runs (range) | runs |",
             "|---|---|---|---|"]
    for exp, row in SUMMARY:
        if exp not in runs:
            runs[exp] = load_runs(exp, root)
        label = row.label.replace("|", "\\|")
        lines.append(f"| `{exp}` | {label} | {_cell([row.value(r['metrics']) for r in runs[exp]], row.fmt)} | "
                     f"{len(runs[exp])} |")
    return ("\n".join(lines) + "\n\nSource: the stored runs in `docs/results/NAME/` (their provenance and the full "
            "tables are on each experiment's page); rendered by `mesaopt report --write`.\n")


def _render_grid(grid: Grid, runs: list[dict], head: str) -> list[str]:
    lines = [f"{head}:", "", "| " + " | ".join([grid.index, *(c for c, _ in grid.columns)]) + " |",
             "|" + "---|" * (len(grid.columns) + 1)]
    for v in grid.values:
        cells = []
        for _, make in grid.columns:
            row = make(v)
            cells.append(_cell([row.value(r["metrics"]) for r in runs], row.fmt, with_range=False, spread=row.spread))
        lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return lines


def render(name: str, root: str | Path = DEFAULT_RESULTS) -> str:
    """The markdown table of ``name`` from its stored runs: quantity | value (mean ± 95 % interval over seeds).

    ``name`` = ``"summary"`` renders the README's key numbers across experiments (``render_summary``).
    """
    if name == SUMMARY_NAME:
        return render_summary(root)
    if name not in TABLES:
        raise ConfigError(f"no report table for {name!r}; tables: {', '.join(sorted(TABLES))}")
    runs = load_runs(name, root)
    seeds = sorted({r.get("seed") for r in runs if r.get("seed") is not None})
    head = "value" if len(runs) == 1 else f"mean ± 95 % interval over {len(runs)} runs (seeds {seeds})"
    spec = TABLES[name]
    if isinstance(spec, Grid):
        return "\n".join(_render_grid(spec, runs, head.capitalize())) + "\n\n" + _source(runs, name) + "\n"
    lines = [f"| quantity | {head} |", "|---|---|"]
    for row in spec:
        label = row.label.replace("|", "\\|")  # a literal | would end the markdown cell
        lines.append(f"| {label} | {_cell([row.value(r['metrics']) for r in runs], row.fmt, spread=row.spread)} |")
    return "\n".join(lines) + "\n\n" + _source(runs, name) + "\n"


def _pages(docs: str | Path) -> list[Path]:
    d = Path(docs)
    pages = sorted(d.rglob("*.md"))
    readme = d.parent / "README.md"
    return pages + ([readme] if readme.is_file() else [])


def _docs_root(docs: str | Path, root: str | Path | None) -> Path:
    if not Path(docs).is_dir():
        raise ConfigError(f"docs folder '{docs}' does not exist")
    return Path(root) if root is not None else Path(docs) / "results"


def check(docs: str | Path = "docs", root: str | Path | None = None, names: list[str] | None = None) -> list[str]:
    """One line per report block in ``docs`` (and the README beside it) that differs from its rendering.

    ``names`` restricts the check to those tables. A block whose table cannot be rendered (no stored runs,
    unknown table) is reported as a problem too.
    """
    root = _docs_root(docs, root)
    problems = []
    for page in _pages(docs):
        for m in BLOCK.finditer(page.read_text(encoding="utf-8")):
            if names is not None and m["name"] not in names:
                continue
            try:
                want = render(m["name"], root)
            except ConfigError as e:
                problems.append(f"{page}: the {m['name']} table cannot be rendered: {e}")
                continue
            if m["body"] != want:
                problems.append(f"{page}: the {m['name']} table differs from docs/results/{m['name']} "
                                f"(run `mesaopt report --write`)")
    return problems


def write(docs: str | Path = "docs", root: str | Path | None = None, names: list[str] | None = None) -> list[Path]:
    """Re-render every report block (of ``names``, default all) in ``docs`` and the README; the changed pages."""
    from mesaopt.io import atomic_write_text

    root = _docs_root(docs, root)

    def _sub(m: re.Match) -> str:
        if names is not None and m["name"] not in names:
            return m.group(0)
        return m.group(1) + render(m["name"], root) + m.group(4)

    updates = []  # render every block before writing any page: a failing table leaves every page untouched
    for page in _pages(docs):
        text = page.read_text(encoding="utf-8")
        new = BLOCK.sub(_sub, text)
        if new != text:
            updates.append((page, new))
    for page, new in updates:
        atomic_write_text(page, new)
    return [page for page, _ in updates]


def blocks(docs: str | Path = "docs") -> dict[str, list[Path]]:
    """Table name -> the pages (docs and README) that hold a report block of it."""
    found: dict[str, list[Path]] = {}
    for page in _pages(docs):
        for m in BLOCK.finditer(page.read_text(encoding="utf-8")):
            found.setdefault(m["name"], []).append(page)
    return found


def command(name: str | None = None, *, check_: bool = False, write_: bool = False,
            docs: str | Path = "docs") -> tuple[str, int]:
    """What ``mesaopt report [NAME] [--check] [--write]`` prints and its exit code.

    NAME alone: that table. No NAME and no flag: every table with stored runs, each under a heading.
    ``--write`` re-renders the blocks in the docs (of NAME only, if given); ``--check`` (after any write) lists
    the blocks that differ from their stored runs: exit code 1 if there are any, 0 when clean.
    """
    docs = Path(docs)
    root = docs / "results"
    names = [name] if name is not None else None
    if name is not None and name not in TABLES and name != SUMMARY_NAME:
        raise ConfigError(f"no report table for {name!r}; tables: {', '.join(sorted(TABLES))}")
    if not (check_ or write_):
        if name is not None:
            return render(name, root), 0
        stored = [n for n in TABLES if (root / n).is_dir() and any((root / n).glob("*.json"))]
        if not stored:
            return f"no stored results under '{root}'\n", 0
        return "\n".join(f"## {n}\n\n{render(n, root)}" for n in stored), 0
    out = []
    if write_:
        changed = write(docs, root, names)
        out += [f"rewrote {p}" for p in changed] or ["every report block is up to date"]
    if check_:
        problems = check(docs, root, names)
        if problems:
            return "\n".join([*out, *problems, f"{len(problems)} report table(s) drifted"]) + "\n", 1
        n = sum(len(v) for k, v in blocks(docs).items() if names is None or k in names)
        out.append(f"{n} report block(s) match their stored results")
    return "\n".join(out) + "\n", 0


class _CallableModule(ModuleType):
    """``mesaopt.report(name)`` is ``mesaopt.report.render(name)``; the module's functions stay attributes."""

    def __call__(self, name: str, root: str | Path = DEFAULT_RESULTS) -> str:
        return render(name, root)


sys.modules[__name__].__class__ = _CallableModule
