"""Every shell command in README.md and docs/**/*.md works as written (issue 15: "works on a fresh clone").

The commands are the lines of fenced ```bash / ``` blocks that start with ``mesaopt `` or ``python -m benchmarks``
(a ``$ `` prompt is dropped, ``\\`` continuations are joined). Each page runs in its own temporary folder holding a
copy of ``examples/``, top to bottom, so the commands of a page share state exactly as a reader's shell would
(``run --out runs/deep`` creates what ``identify runs/deep`` reads). Each command must exit 0, or 2 when the page
shows the ``error: ...`` line it prints (then that line must match).

To fit the budget (all pages in <= 120 s on 2 cores) the commands run in this process and small:
  * ``mesaopt run`` / ``sweep`` get ``--quick`` (if absent) and tiny ``--set`` sizes per experiment (``TINY``);
    ``train -c`` a few steps; ``identify`` / ``compare`` / ``svm`` small batches and scans (``FAST``), and the
    GD++ fit fewer L-BFGS iterations; figures are saved as PNG only. Appended options come last, so they win
    over the page's own ``--set``.
  * sweep trials run in this process instead of worker processes / Ray tasks (the engines are tested in
    tests/sweeps); ``python -m benchmarks`` parses the command as written and runs ``time-to-curve --quick``,
    while the other benchmarks are stubbed (their ``--quick`` runs are tests/benchmarks).
Lines whose comment says ``not run in CI`` are skipped: those that need a Ray cluster (``--address``) and Garg's
full-size GPT (12 layers, width 256: ~2 s per training step on this CPU even at batch 16).
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SHELL_LANGS = ("", "bash", "sh", "shell", "console")
SKIP_MARK = "not run in ci"

_T = "train.steps=6 train.batch_size=16 train.eval_batch_size=64 train.warmup_steps=1 threads=1"
TINY = {  # per experiment: --set sizes that make its --quick run take a second or two
    "vonoswald-gd": f"{_T} eval_batch_size=256 lr_fit_batch_size=256",
    "vonoswald-deep": f"{_T} eval_batch_size=256 fit_batch_size=256 interp_points=2",
    "vonoswald-recurrent": f"{_T} eval_batch_size=256 fit_batch_size=256 rollout_steps=3",
    "vonoswald-ood": f"{_T} eval_batch_size=256 fit_batch_size=256",
    "vonoswald-sine": f"{_T} eval_batch_size=256 fit_batch_size=256 features=4 hidden=8",
    "vonoswald-copy": f"{_T} eval_batch_size=256 lr_fit_batch_size=256",
    "mahankali-optimal": f"{_T} eval_batch_size=256",
    "fu-newton": f"{_T} eval_batch_size=64 probe_batch_size=128 max_gd_steps=4 max_newton_iters=4 n_lr=3",
    "garg-curves": f"{_T} eval_batch=32 val_batch=16 sparse.train_steps=4 train.curriculum=null",
    "raventos-diversity": f"{_T} eval_batch_size=64 m_values=[2,8]",
    "raventos-pool": f"{_T} eval_batch_size=64",
    "ebt-system2": f"{_T} eval_batch_size=16 analysis_batch_size=8 tasks=[linear]",
    "svm-implicit-bias": "threads=1 n_seeds=1 steps=20 kq_steps=20 sizes=[] record_every=10",
    "svm-local-global": "threads=1 ds=[2] runs=2 steps=20",
    "svm-regpath": "threads=1 n_seeds=1 n_radii=2 steps=5",
    "garg-d20": "threads=1 train.steps=6 eval_sequences=64",
    "garg-suite": "threads=1 eval_sequences=2 eval_chunk=2 shifts=[noisy,orthogonal]",
}
FAST = {  # per command: options appended when the command does not give them
    "identify": ["--batch-size", "96", "--max-gd-steps", "6", "--max-newton-iters", "4", "--probe-batch-size", "128"],
    "compare": ["--batch-size", "96"],
    "svm": ["--steps", "40"],
    "train": ["--set", "train.steps=6", "--set", "train.eval_batch_size=64", "--set", "train.eval_every=3"],
}


@dataclass
class Command:
    page: str
    line: int
    text: str  # as written, continuations joined
    argv: list[str]  # parsed, comment removed
    skip: bool
    error: str | None  # the documented `error: ...` line, if the page shows one right after the command


def _blocks(text: str):
    """(first line number, language, lines) of every fenced code block."""
    lines, i = text.splitlines(), 0
    while i < len(lines):
        m = re.match(r"^\s*```(\w*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith("```"):
            j += 1
        yield i + 2, m.group(1), lines[i + 1:j]
        i = j + 1


def extract(page: Path) -> list[Command]:
    """The shell commands of one page, in order."""
    out: list[Command] = []
    for first, lang, lines in _blocks(page.read_text(encoding="utf-8")):
        if lang not in SHELL_LANGS:
            continue
        k = 0
        while k < len(lines):
            start, text = k, lines[k].strip()
            while text.endswith("\\") and k + 1 < len(lines):
                k += 1
                text = text[:-1].rstrip() + " " + lines[k].strip()
            k += 1
            text = text[2:] if text.startswith("$ ") else text
            if not (text.startswith("mesaopt ") or text.startswith("python -m benchmarks")):
                continue
            nxt = lines[k].strip() if k < len(lines) else ""
            comment = text.split(" #", 1)[1].lower() if " #" in text else ""
            out.append(Command(page.relative_to(ROOT).as_posix(), first + start, text,
                               shlex.split(text, comments=True), SKIP_MARK in comment,
                               nxt if nxt.startswith("error:") else None))
    return out


COMMANDS = {p.relative_to(ROOT).as_posix(): extract(p) for p in PAGES}


def _sets(spec: str) -> list[str]:
    return [a for kv in spec.split() for a in ("--set", kv)]


def adapt(argv: list[str]) -> list[str]:
    """The command with the quick settings of this test appended (see the module docstring)."""
    argv = list(argv)
    if argv[:3] == ["python", "-m", "benchmarks"]:
        return argv + (["--quick"] if "--quick" not in argv else []) + ["--no-plot"]
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd in ("run", "sweep"):
        name = argv[2] if len(argv) > 2 and not argv[2].startswith("-") else _sweep_file_experiment(argv)
        argv += (["--quick"] if "--quick" not in argv else []) + _sets(TINY.get(name, ""))
    elif cmd == "train":
        argv += FAST["train"] if "--resume" not in argv else []
    elif cmd in FAST:
        argv += [a for i, a in enumerate(FAST[cmd]) if FAST[cmd][i - i % 2] not in argv]
    return argv


def _sweep_file_experiment(argv: list[str]) -> str:
    import yaml

    path = argv[argv.index("-f") + 1] if "-f" in argv else None
    return yaml.safe_load(Path(path).read_text())["experiment"] if path and Path(path).is_file() else ""


class _InProcessEngine:
    """Runs sweep trials one after the other in this process (instead of worker processes or Ray tasks)."""

    def __init__(self, *args, **kwargs):
        pass

    def run(self, trials, out, payloads, on_done):
        from mesaopt.sweeps.worker import run_trial, write_payload

        for t in trials:
            d = t.dir(out)
            d.mkdir(parents=True, exist_ok=True)
            payload = {**payloads[t.hash], "threads": 1}
            write_payload(d, payload)
            res = run_trial(d, payload)
            on_done(t, {k: res[k] for k in ("status", "error", "wall_s")})


@pytest.fixture
def fast_env(monkeypatch):
    """Sweeps in-process, a cheaper GD++ fit, figures as PNG only, stubbed default benchmarks, one torch thread."""
    import torch

    from mesaopt.analysis import families
    from mesaopt.sweeps import runner

    if str(ROOT) not in sys.path:  # the top-level benchmarks package is not installed
        monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import __main__ as bench_main
    from mesaopt import plotting

    monkeypatch.setattr(runner, "make_engine", lambda *a, **k: _InProcessEngine())
    save = plotting.save_figure
    monkeypatch.setattr(plotting, "save_figure", lambda fig, stem, formats=None: save(fig, stem, ("png",)))
    fit = families.fit_gdpp
    monkeypatch.setattr(families, "fit_gdpp", lambda *a, **k: fit(*a, **{**k, "max_iter": 3, "starts": ((1, 0),)}))
    monkeypatch.setattr(bench_main, "matmul_peaks", lambda **k: {"stub": True})
    import importlib
    import types

    def import_module(name):
        mod = importlib.import_module(name)
        if name != "benchmarks.time_to_curve":
            monkeypatch.setattr(mod, "run", lambda **k: {"stub": True})
        return mod

    monkeypatch.setattr(bench_main, "importlib", types.SimpleNamespace(import_module=import_module))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield bench_main
    torch.set_num_threads(threads)


def _run(argv: list[str], bench_main) -> int:
    if argv[0] == "python":
        return bench_main.main(argv[3:])
    from mesaopt.cli import main

    try:
        main(argv[1:])
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1
    return 0


def test_commands_were_found():
    found = [c for cmds in COMMANDS.values() for c in cmds]
    assert len(found) >= 40 and any(c.error for c in found)
    placeholders = [c.text for c in found if not c.skip and any("…" in a or "..." in a for a in c.argv)]
    assert not placeholders, placeholders
    assert len([c for c in found if c.skip]) <= 5  # keep the skip list short: Ray cluster, full-size GPT
    names = {c.argv[2] for c in found if c.argv[:2] in (["mesaopt", "run"], ["mesaopt", "sweep"])
             and not c.argv[2].startswith("-")}
    assert names <= set(TINY), f"give {sorted(names - set(TINY))} tiny sizes in TINY (the 120 s budget)"


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p, cmds in COMMANDS.items() if cmds])
def test_page_commands(page, tmp_path, monkeypatch, capsys, fast_env):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    failures, log = [], []
    for c in COMMANDS[page]:
        if c.skip:
            continue
        argv = adapt(c.argv)
        t0 = time.perf_counter()
        code = _run(argv, fast_env)
        cap = capsys.readouterr()
        log.append(f"{time.perf_counter() - t0:5.1f} s  exit {code}  {c.page}:{c.line}  {' '.join(argv)}")
        want = 2 if c.error else 0
        if code != want:
            failures.append(f"{c.page}:{c.line}: `{c.text}` exited {code} (want {want}): {cap.err.strip()[-400:]}")
        elif c.error and " ".join(cap.err.split()) != " ".join(c.error.split()):
            failures.append(f"{c.page}:{c.line}: `{c.text}` printed {cap.err.strip()!r}, the page shows {c.error!r}")
    print("\n".join(log))  # the commands as run, with their wall times (pytest -rP or -s shows them)
    assert not failures, "\n".join(failures)
