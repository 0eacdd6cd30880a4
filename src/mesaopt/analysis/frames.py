"""pandas views of results: analysis rows (``IdentifyResult``, ``CompareResult``, ``PatchingResult``) and
results.json files (one row per run). pandas is imported on first use; nothing here draws."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mesaopt.errors import CheckpointError
from mesaopt.io import RESULTS_FILE, read_json_object

__all__ = ["rows_frame", "results_frame", "flatten"]


def flatten(d: Mapping, prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Nested mapping -> flat {"a.b": v}; lists and other values are kept as cells."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + sep, sep))
        else:
            out[key] = v
    return out


def rows_frame(rows: Iterable[Mapping], expand: tuple[str, ...] = ("hparams",)):
    """A DataFrame with one row per dict; the dict columns named in ``expand`` become ``hparams.lr``-style columns."""
    import pandas as pd

    flat = []
    for r in rows:
        r = dict(r)
        for col in expand:
            if isinstance(r.get(col), Mapping):
                r.update(flatten(r.pop(col), col + "."))
        flat.append(r)
    return pd.DataFrame(flat)


def _result_files(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    files = []
    for p in map(Path, items):
        if p.is_file():
            files.append(p)
        elif (p / RESULTS_FILE).is_file():
            files.append(p / RESULTS_FILE)
        elif p.is_dir():
            files.extend(sorted(p.rglob(RESULTS_FILE)))
        else:
            raise CheckpointError(f"no {RESULTS_FILE} at '{p}'")
    return files


def results_frame(paths: str | os.PathLike | Iterable[str | os.PathLike]):
    """One row per results.json (a file, a run folder, or every results.json below a folder).

    Columns: ``path``, ``experiment``, ``version``, ``seed``, ``wall_s``, ``config.<dotted key>`` and
    ``metrics.<name>`` (NaN where a run lacks a metric).
    """
    import pandas as pd

    rows = []
    for f in _result_files(paths):
        res = read_json_object(f)
        row = {"path": str(f.parent)}
        row.update({k: res.get(k) for k in ("experiment", "version", "seed", "wall_s")})
        row.update(flatten(res.get("config") or {}, "config."))
        row.update({f"metrics.{k}": v for k, v in (res.get("metrics") or {}).items()})
        rows.append(row)
    return pd.DataFrame(rows)
