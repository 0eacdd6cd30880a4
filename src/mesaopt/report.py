"""Documented numbers rendered from stored runs: ``docs/results/NAME/*.json`` -> markdown tables in the docs.

Every reproduction the docs quote keeps its ``results.json`` files (one per seed, with the ``provenance`` block)
under ``docs/results/NAME/``. ``render(name)`` turns them into a markdown table: one row per quantity, the mean
and a 95 % Student-t interval over the stored seeds (or the single value), the seeds used and the source line
(commit, command, date). A docs page holds the rendered table between ``<!-- report:NAME -->`` and
``<!-- /report:NAME -->``; ``check()`` lists every block that differs from what the stored files render (so a
number edited by hand, or a stored run replaced without re-rendering, fails CI) and ``write()`` re-renders them.
The tables (``Row`` lists, ``Grid`` and ``PerRun`` tables; block names ``NAME`` or ``NAME.part``) are declared in
``mesaopt.report_tables``; ``summary`` is the README's table of key numbers across experiments (``SUMMARY``).
``command()`` is ``mesaopt report [NAME] [--check] [--write]``. The module is callable: ``mesaopt.report(name)``
renders a table.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from types import ModuleType

from mesaopt.errors import ConfigError
from mesaopt.io import read_json_object
from mesaopt.report_tables import SUMMARY, SUMMARY_NAME, TABLES, Grid, PerRun, Row

DEFAULT_RESULTS = Path("docs") / "results"
_TRIAL = re.compile(r" \(trial [^()]*\)$")
BLOCK = re.compile(r"(<!-- report:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /report:(?P=name) -->)", re.S)


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


def _render_per_run(spec: PerRun, runs: list[dict]) -> list[str]:
    def fmt(row: Row, v: float) -> str:
        return row.fmt.format(v) if math.isfinite(v) else "—"

    lines = ["| seed | " + " | ".join(c.label for c in spec.columns) + " |", "|" + "---|" * (len(spec.columns) + 1)]
    for r in runs:
        lines.append(f"| {r.get('seed', '—')} | " + " | ".join(fmt(c, c.value(r["metrics"])) for c in spec.columns)
                     + " |")
    if len(runs) >= 3:  # a median of two runs (one of them a miss) says nothing the rows do not
        lines.append("| median | " + " | ".join(fmt(c, median_nan_last([c.value(r["metrics"]) for r in runs]))
                                                for c in spec.columns) + " |")
    return lines


def median_nan_last(values: list[float]) -> float:
    """Median where NaN (e.g. "never reached") counts as worse than every finite value: NaN if it is a middle one."""
    vals = sorted(values, key=lambda v: (not math.isfinite(v), v))
    mid = vals[(len(vals) - 1) // 2:len(vals) // 2 + 1]
    return sum(mid) / len(mid) if all(math.isfinite(v) for v in mid) else math.nan


def render(name: str, root: str | Path = DEFAULT_RESULTS) -> str:
    """The markdown table of ``name`` from its stored runs: quantity | value (mean ± 95 % interval over seeds).

    ``name`` = ``"summary"`` renders the README's key numbers across experiments (``render_summary``).
    """
    if name == SUMMARY_NAME:
        return render_summary(root)
    if name not in TABLES:
        raise ConfigError(f"no report table for {name!r}; tables: {', '.join(sorted(TABLES))}")
    spec = TABLES[name]
    experiment = name.split(".")[0]  # "NAME.part": another table of NAME's stored runs
    runs = load_runs(experiment, root)
    seeds = sorted({r.get("seed") for r in runs if r.get("seed") is not None})
    head = "value" if len(runs) == 1 else f"mean ± 95 % interval over {len(runs)} runs (seeds {seeds})"
    if isinstance(spec, Grid):
        lines = _render_grid(spec, runs, head.capitalize())
    elif isinstance(spec, PerRun):
        lines = _render_per_run(spec, runs)
    else:
        lines = [f"| quantity | {head} |", "|---|---|"]
        for row in spec:
            label = row.label.replace("|", "\\|")  # a literal | would end the markdown cell
            lines.append(f"| {label} | {_cell([row.value(r['metrics']) for r in runs], row.fmt, spread=row.spread)} |")
    return "\n".join(lines) + "\n\n" + _source(runs, experiment) + "\n"


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
