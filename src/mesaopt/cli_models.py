"""The model side of ``mesaopt identify`` / ``compare``: which checkpoints a folder holds, and their tables.

A folder given to identify/compare is one of
  * a run folder or a ``ckpt/`` folder holding one model (``runs/vo``, ``runs/deep/k3``, ``runs/vo/ckpt``);
  * a multi-model run folder: sub-run folders each with a checkpoint (``vonoswald-deep``'s ``k1/`` ... ``k5/``,
    ``garg-curves``' ``dense/`` and ``sparse/``), reported model by model, or one of them with ``--model k3``.
The checkpoint itself is loaded by the CLI (``mesaopt.cli._load_run``).
"""

from __future__ import annotations

import re
from pathlib import Path

from rich.table import Table

from mesaopt.errors import CheckpointError

_SHOWN = 8  # entries of a folder named in an error message


def _natural_key(name: str) -> list:
    """k2 before k10: digit runs compare as numbers."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _has_checkpoint(p: Path) -> bool:
    from mesaopt.train.checkpoint import find_checkpoint

    return p.is_dir() and find_checkpoint(p) is not None


def model_subfolders(path: Path) -> list[str]:
    """Names of the direct sub-folders of ``path`` that hold a checkpoint, in natural order (k1, k2, ..., k10)."""
    subs = [c.name for c in path.iterdir() if c.is_dir() and not c.name.startswith(".") and c.name != "ckpt"
            and not c.name.startswith("ckpt.") and _has_checkpoint(c)]
    return sorted(subs, key=_natural_key)


def _contents(path: Path) -> str:
    """What a folder holds, for an error message: 'a/, b.json, ... (3 more)' or 'it is empty'."""
    names = sorted((c.name + ("/" if c.is_dir() else "") for c in path.iterdir()), key=_natural_key)
    if not names:
        return "it is empty"
    more = f", ... ({len(names) - _SHOWN} more)" if len(names) > _SHOWN else ""
    return "it holds: " + ", ".join(names[:_SHOWN]) + more


def model_folders(path: Path, model: str | None = None) -> list[tuple[str | None, Path]]:
    """The models to report for ``path``: [(None, path)] for a single model, [(sub-folder name, folder), ...] else.

    ``model`` picks one sub-folder. Raises a one-line CheckpointError for a missing folder, a folder with no
    checkpoint in it or its sub-folders (naming what it holds), or an unknown ``model`` (naming the models).
    """
    if not path.exists():
        raise CheckpointError(f"run folder '{path}' does not exist")
    if not path.is_dir():
        raise CheckpointError(f"'{path}' is not a folder; give a run folder (or its ckpt/ folder)")
    if model is not None:
        if "/" in model or model in ("", ".", ".."):
            raise CheckpointError(f"--model takes a sub-folder name of '{path}' (e.g. k3), got {model!r}")
        if _has_checkpoint(path / model):
            return [(model, path / model)]
        subs = model_subfolders(path)
        have = f"its models: {', '.join(subs)}" if subs else "it has no sub-folder with a checkpoint"
        raise CheckpointError(f"no model '{model}' in '{path}' ({path / model} holds no checkpoint); {have}")
    if _has_checkpoint(path):
        return [(None, path)]
    subs = model_subfolders(path)
    if subs:
        return [(s, path / s) for s in subs]
    raise CheckpointError(f"no checkpoint in '{path}' or its sub-folders (expected state.json, ckpt/ or sub-run "
                          f"folders like k1/ckpt/); {_contents(path)}")


def other_models_note(path: Path, folders: list[tuple[str | None, Path]]) -> str | None:
    """For a run folder with its own checkpoint *and* model sub-folders (mahankali-optimal): a hint naming them."""
    if len(folders) != 1 or folders[0][0] is not None or (path / "state.json").is_file():
        return None
    subs = model_subfolders(path)
    return f"'{path}' also holds the models {', '.join(subs)} (pick one with --model NAME)" if subs else None


def identify_table(where: str, res, n_context: int, readout: str, format_hparams) -> Table:
    """The rich table of an IdentifyResult: one row per layer (best match, its hyper-parameters, runner-up)."""
    table = Table(title=f"identify {where}  (N={n_context}, read-out: {readout}, mse = mean squared prediction "
                        f"difference)", header_style="bold")
    for col in ("layer", "layer MSE to y", "best match", "hyper-parameters", "mse", "pred_diff", "sens_cos", "err_cos",
                "runner-up"):
        table.add_column(col, justify="left" if col in ("best match", "hyper-parameters", "runner-up") else "right")
    for j, best in enumerate(res.best()):
        others = sorted((r for r in res.rows if r["layer"] == best["layer"] and r is not best), key=lambda r: r["mse"])
        runner = f"{others[0]['algorithm']} ({others[0]['mse']:.3g})" if others else "-"
        table.add_row(str(best["layer"]), f"{res.meta['model_mse_to_y'][j]:.3g}", best["algorithm"],
                      format_hparams(best["hparams"]), f"{best['mse']:.3g}", f"{best['pred_diff']:.3g}",
                      f"{best['sens_cos']:.4f}", f"{best['err_cos']:.4f}", runner)
    return table


def compare_table(where: str, res, n_context: int, format_hparams) -> Table:
    """The rich table of a CompareResult: one row per algorithm."""
    table = Table(title=f"compare {where}  (model MSE {res.meta['model_loss']:.4g}, N={n_context})",
                  header_style="bold")
    for col in ("algorithm", "hyper-parameters", "loss (MSE)", "mse to model", "pred_diff", "sens_cos", "err_cos"):
        table.add_column(col, justify="left" if col in ("algorithm", "hyper-parameters") else "right")
    for r in res.rows:
        table.add_row(r["algorithm"], format_hparams(r["hparams"]), f"{r['loss']:.4g}", f"{r['mse']:.3g}",
                      f"{r['pred_diff']:.3g}", f"{r['sens_cos']:.4f}", f"{r['err_cos']:.4f}")
    return table


def plot_path(plot: Path, name: str | None) -> Path:
    """``--plot cmp.png`` for model ``k3`` of a multi-model folder: ``cmp-k3.png`` (unchanged for a single model)."""
    if name is None:
        return plot
    suffix = plot.suffix if plot.suffix.lower() in (".png", ".pdf") else ""
    stem = plot.with_suffix("") if suffix else plot
    return stem.with_name(f"{stem.name}-{name}{suffix}")


def plot_compare(res, path: Path) -> list:
    """Bar charts of the loss, pred_diff and sens_cos of every compared algorithm (a CompareResult); PNG + PDF."""
    from mesaopt import plotting

    plotting.paper_style()
    import matplotlib.pyplot as plt

    names = [r["algorithm"] for r in res.rows]
    colors = [plotting.PALETTE.get(n, "#444444") for n in names]
    fig, axes = plt.subplots(1, 3, figsize=(9.0, 2.8))
    axes[0].bar(names, [r["loss"] for r in res.rows], color=colors)
    axes[0].axhline(res.meta["model_loss"], color=plotting.PALETTE["model"], ls="--", label="model")
    axes[0].set_ylabel("loss (MSE)")
    axes[0].legend()
    axes[1].bar(names, [r["pred_diff"] for r in res.rows], color=colors)
    axes[1].set_ylabel("pred_diff to model")
    axes[2].bar(names, [r["sens_cos"] for r in res.rows], color=colors)
    axes[2].set_ylabel("sens_cos with model")
    axes[2].set_ylim(min(0.0, min(r["sens_cos"] for r in res.rows)), 1.02)
    fig.tight_layout()
    stem = Path(path)
    return plotting.save_figure(fig, stem.with_suffix("") if stem.suffix.lower() in (".png", ".pdf") else stem)


def models(path: Path, model: str | None, console) -> list[tuple[str | None, Path]]:
    """(key, folder) of every model to report; key is the sub-folder name when a multi-model folder is reported
    model by model (JSON keyed by it, ``--plot`` suffixed with it), None for one model (also with ``--model``)."""
    folders = model_folders(path, model)
    note = other_models_note(path, folders)
    if note:
        console.print(note, highlight=False, soft_wrap=True)
    return [(None if model is not None else name, folder) for name, folder in folders]


def emit_json(results: dict) -> None:
    """One model: its result object on stdout; several: {sub-folder: result, ...}."""
    import json
    import sys

    data = {k: r.to_dict() for k, r in results.items()}
    sys.stdout.write(json.dumps(data[None] if None in data else data, indent=2) + "\n")
