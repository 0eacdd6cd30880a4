"""The sweep results table: one row per trial (grid values, every metric, status, wall_s, trial folder)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
from rich.table import Table

from mesaopt.io import atomic_write_bytes, read_results, results_complete
from mesaopt.sweeps.grid import TABLE_FILE, Trial
from mesaopt.sweeps.worker import ERROR_FILE

STATUS_OK, STATUS_FAILED, STATUS_NOT_RUN = "ok", "failed", "not_run"
FIXED_COLUMNS = ("status", "ran", "wall_s", "error", "config_hash", "trial")


def _cell(v: Any) -> Any:
    """Grid values that are lists/dicts become JSON strings so every column has one parquet type."""
    return json.dumps(v, sort_keys=True) if isinstance(v, list | dict) else v


def _first_error_line(path: Path) -> str | None:
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return None
    if not lines:
        return None
    tb = [ln for ln in lines if not ln.startswith(("File ", "Traceback", "^", "~", "---"))]
    if lines[0].startswith("Traceback"):
        return tb[-1] if tb else lines[-1]
    return lines[0]


def build_table(trials: list[Trial], out: Path, ran: set[str] | None = None) -> pd.DataFrame:
    """Read every trial folder into a DataFrame: grid columns, metric columns, then FIXED_COLUMNS."""
    ran = ran or set()
    rows, metric_names = [], []
    grid_keys = list(trials[0].params) if trials else []
    for t in trials:
        d = t.dir(out)
        row: dict[str, Any] = {k: _cell(v) for k, v in t.params.items()}
        metrics: dict[str, Any] = {}
        if results_complete(d):
            res = read_results(d)
            metrics = res["metrics"]
            status, wall, err = STATUS_OK, float(res["wall_s"]), None
        elif (d / ERROR_FILE).is_file():
            status, wall, err = STATUS_FAILED, None, _first_error_line(d / ERROR_FILE)
        else:
            status, wall, err = STATUS_NOT_RUN, None, None
        for k, v in metrics.items():
            col = k if k not in grid_keys and k not in FIXED_COLUMNS else f"metric.{k}"
            if col not in metric_names:
                metric_names.append(col)
            row[col] = float(v) if v is not None else float("nan")
        row.update(status=status, ran=t.hash in ran, wall_s=wall, error=err, config_hash=t.hash,
                   trial=str(Path("trials") / t.name))
        rows.append(row)
    cols = grid_keys + metric_names + list(FIXED_COLUMNS)
    df = pd.DataFrame(rows, columns=cols)
    for c in metric_names + ["wall_s"]:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    df["ran"] = df["ran"].astype(bool)
    for c in ("status", "error", "config_hash", "trial"):
        df[c] = df[c].astype("string")
    return df


def write_table(df: pd.DataFrame, out: Path) -> Path:
    """Write ``out/sweep.parquet`` atomically; return its path."""
    buf = io.BytesIO()
    df.to_parquet(buf, index=False, engine="pyarrow")
    return atomic_write_bytes(Path(out) / TABLE_FILE, buf.getvalue())


def read_table(out: str | Path) -> pd.DataFrame:
    """Read a sweep's results table (``out/sweep.parquet`` or a parquet path) with pandas."""
    p = Path(out)
    return pd.read_parquet(p / TABLE_FILE if p.is_dir() else p)


def summary(df: pd.DataFrame, grid_keys: list[str], max_metrics: int = 6, title: str = "sweep") -> Table:
    """A rich table: grid values, status, wall time and the first ``max_metrics`` metrics of every trial."""
    metric_cols = [c for c in df.columns if c not in grid_keys and c not in FIXED_COLUMNS][:max_metrics]
    table = Table(title=title, show_header=True, header_style="bold")
    for c in grid_keys:
        table.add_column(c)
    table.add_column("status")
    table.add_column("wall_s", justify="right")
    for c in metric_cols:
        table.add_column(c, justify="right")
    for _, r in df.iterrows():
        status = r["status"] if r["status"] != STATUS_FAILED else f"[red]failed[/]: {str(r['error'])[:60]}"
        wall = "" if pd.isna(r["wall_s"]) else f"{r['wall_s']:.1f}"
        vals = ["" if pd.isna(r[c]) else f"{r[c]:.4g}" for c in metric_cols]
        table.add_row(*[str(r[c]) for c in grid_keys], status, wall, *vals)
    return table
