"""``run_sweep``: expand the grid, skip finished trials, run the rest on an engine, write the results table."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from mesaopt.io import atomic_write_text, results_complete
from mesaopt.sweeps.engines import make_engine
from mesaopt.sweeps.grid import SPEC_FILE, TABLE_FILE, SweepSpec, default_out, resolve_trials
from mesaopt.sweeps.table import STATUS_FAILED, STATUS_OK, build_table, write_table
from mesaopt.sweeps.worker import experiment_source


@dataclass
class SweepResult:
    """What a sweep did: its folder, the table (one row per trial) and how many trials ran/skipped/failed."""

    out: Path
    table: pd.DataFrame
    grid_keys: list[str]
    n_trials: int
    ran: int
    skipped: int
    failed: int
    wall_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-able summary (printed by ``mesaopt sweep --json``): counts, table path and every row."""
        rows = self.table.astype(object).where(self.table.notna(), None).to_dict(orient="records")
        return {"out": str(self.out), "table": str(self.out / TABLE_FILE), "n_trials": self.n_trials,
                "ran": self.ran, "skipped": self.skipped, "failed": self.failed, "wall_s": round(self.wall_s, 3),
                "grid": self.grid_keys, "rows": rows}


def run_sweep(spec: SweepSpec, out: str | Path | None = None, progress: bool = True,
              console: Console | None = None) -> SweepResult:
    """Run every not-yet-finished trial of ``spec`` on its engine; return the table (also in OUT/sweep.parquet).

    Every config is validated before anything runs. Trials with a complete results.json are skipped; failed
    ones are recorded (``error.txt`` + status "failed") and retried on the next run. On Ctrl-C the running
    trials are stopped, the table is written with what finished, and KeyboardInterrupt propagates.
    """
    import time

    console = console or Console(stderr=True)
    t_start = time.perf_counter()
    trials = resolve_trials(spec)
    engine = make_engine(spec.engine, spec.address, spec.max_parallel, spec.cpus_per_trial)
    from mesaopt.rundir import as_out_path, ensure_writable_dir

    out_dir = as_out_path(out) if out is not None else Path(spec.out) if spec.out else default_out(spec, trials)
    ensure_writable_dir(out_dir)
    atomic_write_text(out_dir / SPEC_FILE, yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False))
    todo = [t for t in trials if not results_complete(t.dir(out_dir))]
    skipped = len(trials) - len(todo)
    source = experiment_source(spec.experiment)
    payloads = {t.hash: {"experiment": spec.experiment, "config": t.config, "source": source,
                         "params": t.params} for t in trials}
    ran: set[str] = set()
    counts = {STATUS_OK: 0, STATUS_FAILED: 0}
    grid_keys = list(trials[0].params) if trials else []

    prog = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, disable=not progress, transient=False)
    if progress:
        console.print(f"sweep {spec.experiment}: {len(trials)} trials, {skipped} already finished, "
                      f"{len(todo)} to run on engine {spec.engine} -> {out_dir}", highlight=False)

    def finish(interrupted: bool) -> SweepResult:
        table = build_table(trials, out_dir, ran)
        write_table(table, out_dir)
        return SweepResult(out=out_dir, table=table, grid_keys=grid_keys, n_trials=len(trials), ran=len(ran),
                           skipped=skipped, failed=int((table["status"] == STATUS_FAILED).sum()),
                           wall_s=time.perf_counter() - t_start, extra={"interrupted": interrupted})

    with prog:
        task = prog.add_task(spec.experiment, total=len(todo), info="")

        def on_done(trial, outcome: dict[str, Any]) -> None:
            ran.add(trial.hash)
            counts[outcome["status"]] = counts.get(outcome["status"], 0) + 1
            prog.update(task, advance=1, info=f"ok {counts[STATUS_OK]} failed {counts[STATUS_FAILED]}")
            if outcome["status"] != STATUS_OK and progress:
                prog.console.print(f"[red]trial {trial.name} failed:[/] {outcome['error']}", highlight=False)

        try:
            if todo:
                engine.run(todo, out_dir, payloads, on_done)
        except KeyboardInterrupt:
            res = finish(interrupted=True)
            console.print(f"sweep interrupted: {int((res.table['status'] == STATUS_OK).sum())} of {len(trials)} "
                          f"trials finished and kept in {out_dir}; run the same sweep again to continue",
                          highlight=False)
            raise
    return finish(interrupted=False)
