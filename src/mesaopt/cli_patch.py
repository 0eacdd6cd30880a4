"""``mesaopt export`` and ``mesaopt patch``: shareable model folders and activation-patching heatmaps (registered on
the app in ``mesaopt.cli``; heavy imports stay inside the commands)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console


def export_cmd(
    run_dir: Path = typer.Argument(..., help="run folder or ckpt folder of a trained model"),
    out_dir: Path = typer.Argument(..., help="model folder to write (config.json + model.safetensors)"),
) -> None:
    """Convert a run's checkpoint to a shareable model folder (load it with mesaopt.load(OUT_DIR))."""
    import mesaopt

    path = mesaopt.export(run_dir, out_dir)
    mesaopt.load(path)  # read back: the written folder verifies (sha256, spec, weights)
    Console().print(f"model folder written: {path}", highlight=False)


def _load_patch_model(path: Path) -> tuple:
    """(model, task, n_context) of a run/ckpt folder or of a model folder exported with its task metadata."""
    from mesaopt import tasks
    from mesaopt.errors import CheckpointError
    from mesaopt.models.pretrained import CONFIG_FILE, load_pretrained, read_config

    if not (Path(path) / CONFIG_FILE).is_file():
        from mesaopt.cli import _load_run

        return _load_run(path)
    meta = read_config(path).get("metadata") or {}
    if not isinstance(meta.get("task"), dict) or not isinstance(meta.get("n_points"), int):
        raise CheckpointError(f"model folder '{path}' stores no task / n_points metadata (export it from a run)")
    return load_pretrained(path), tasks.build(meta["task"]), meta["n_points"] - 1


def _plot_patching(res, stem: Path) -> list:
    """Heatmap of a PatchingResult: rows layer (x head), columns position; PNG + PDF."""
    from mesaopt import plotting

    plotting.paper_style()
    import matplotlib.pyplot as plt

    v = res.values.reshape(res.values.shape[0] * (res.values.shape[1] if "head" in res.dims else 1), -1).numpy()
    rows = [f"L{i}H{h}" if "head" in res.dims else f"L{i}" for i in range(res.values.shape[0])
            for h in range(res.values.shape[1] if "head" in res.dims else 1)]
    fig, ax = plt.subplots(figsize=(1.2 + 0.35 * v.shape[1], 1.0 + 0.3 * v.shape[0]))
    im = ax.imshow(v, cmap="RdBu_r", vmin=-max(abs(v).max(), 1e-12), vmax=max(abs(v).max(), 1e-12), aspect="auto")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("position" if "position" in res.dims else "")
    ax.set_title(f"{res.mode}: {res.meta.get('hook_template', res.hook_names[0])} (clean {res.clean:.3g})")
    ax.grid(False)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).set_label(res.meta.get("metric", ""))
    return plotting.save_figure(fig, stem)


def patch_cmd(
    run_dir: Path = typer.Argument(..., help="run folder, ckpt folder, or model folder exported from a run"),
    hook: str = typer.Option("blocks.{layer}.hook_resid_post", "--hook", help="hook name template ({layer})"),
    mode: str = typer.Option("patch", "--mode", help="patch (clean into corrupted) | zero | mean | resample"),
    per_head: bool = typer.Option(True, "--per-head/--no-per-head", help="split attention hooks by head"),
    batch_size: int = typer.Option(256, "--batch-size", help="tasks in the clean/corrupted batch"),
    seed: int = typer.Option(0, "--seed", help="seed of the batch"),
    out: Path | None = typer.Option(None, "--out", help="figure path stem (default RUN_DIR/patching-MODE; for a "
                                    "model folder ./patching-MODE)"),
    json_: bool = typer.Option(False, "--json", help="print the grid as JSON to stdout and nothing else"),
) -> None:
    """Activation patching: clean run vs the same x with the labels of another task; writes a heatmap."""
    from mesaopt.analysis import patching as pt
    from mesaopt.io import to_json
    from mesaopt.seeding import generator

    model, task, n_context = _load_patch_model(run_dir)
    dtype = next(model.parameters()).dtype
    b = task.sample(batch_size, n_context + 1, generator=generator(seed, "patch"))
    ctx_x, ctx_y, qry_x, _ = (t.to(dtype) for t in b.split(n_context))
    res = pt.patching_grid(model, (ctx_x, ctx_y, qry_x), (ctx_x, pt.corrupt_labels(ctx_y), qry_x), hook,
                           mode=mode, per_head=per_head)
    from mesaopt.models.pretrained import CONFIG_FILE

    if out is None:
        folder = Path(".") if (Path(run_dir) / CONFIG_FILE).is_file() else Path(run_dir)
        out = folder / f"patching-{mode}"
    paths = _plot_patching(res, out)
    if json_:
        sys.stdout.write(to_json({"hooks": res.hook_names, "dims": res.dims, "mode": res.mode, "clean": res.clean,
                                  "corrupted": res.corrupted, "values": res.values.tolist(),
                                  "artifacts": [str(p) for p in paths]}) + "\n")
        return
    Console().print(f"{res.mode} over {res.dims} of {len(res.hook_names)} hooks; clean {res.clean:.4g}, corrupted "
                    f"{res.corrupted:.4g}; figure: {paths[0]}", highlight=False)
