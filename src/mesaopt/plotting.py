"""Figure helpers shared by experiments: a paper style, saving PNG + PDF, common plot types."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mesaopt.io import atomic_write_bytes, read_jsonl  # noqa: E402

PALETTE = {"model": "#1f77b4", "gd": "#d62728", "gdpp": "#ff7f0e", "ols": "#2ca02c", "ridge": "#9467bd",
           "newton": "#8c564b", "averaging": "#7f7f7f", "knn": "#e377c2", "lasso": "#17becf",
           "dmmse": "#bcbd22", "construction": "#000000"}


def paper_style() -> None:
    """Small serif-free style for figures that go into a paper (vector-friendly, no top/right spines)."""
    plt.rcParams.update({
        "figure.dpi": 120, "savefig.dpi": 200, "font.size": 10, "axes.titlesize": 10,
        "axes.labelsize": 10, "legend.fontsize": 8, "axes.spines.top": False, "axes.spines.right": False,
        "axes.grid": True, "grid.alpha": 0.3, "lines.linewidth": 1.8,
    })


def save_figure(fig: plt.Figure, path_stem: str | Path, formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """Save ``fig`` atomically as ``path_stem.png`` and ``.pdf``; close it; return the paths."""
    import io

    stem = Path(path_stem)
    paths = []
    for fmt in formats:
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, bbox_inches="tight")
        paths.append(atomic_write_bytes(stem.with_suffix(f".{fmt}"), buf.getvalue()))
    plt.close(fig)
    return paths


def band(ax: plt.Axes, x: np.ndarray, samples: np.ndarray, label: str, color: str | None = None,
         n_boot: int = 200, seed: int = 0) -> None:
    """Plot the mean of ``samples`` (n, len(x)) over axis 0 with a 95% bootstrap band."""
    samples = np.asarray(samples, dtype=float)
    mean = samples.mean(axis=0)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, samples.shape[0], size=(n_boot, samples.shape[0]))
    boots = samples[idx].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5], axis=0)
    (line,) = ax.plot(x, mean, label=label, color=color)
    ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)


def heatmap(ax: plt.Axes, mat: np.ndarray, title: str, symmetric: bool = True) -> None:
    """A matrix heatmap with a diverging colormap centred at zero and a colorbar."""
    mat = np.asarray(mat, dtype=float)
    vmax = float(np.abs(mat).max()) or 1.0
    im = ax.imshow(mat, cmap="RdBu_r", vmin=-vmax if symmetric else None, vmax=vmax if symmetric else None)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)


def loss_curve(target: plt.Axes | str | Path, metrics_jsonl: str | Path, keys: Sequence[str] = ("eval_loss",),
               labels: Sequence[str | None] | None = None, colors: Sequence[str | None] | None = None,
               ylabel: str | None = None, log: bool = True) -> plt.Axes:
    """Training curves from a run's ``metrics.jsonl``: each of ``keys`` against ``step`` (records without it skipped).

    ``target`` is an Axes to draw into (returned, for reference lines and legends), or a path stem: then a new
    4.2 x 3.0 in figure is drawn and saved there (png + pdf) and closed. ``labels``/``colors`` go per key;
    ``ylabel`` defaults to the single key's name; ``log`` puts the y axis on a log scale.
    """
    records = read_jsonl(Path(metrics_jsonl))
    ax = target if isinstance(target, plt.Axes) else plt.subplots(figsize=(4.2, 3.0))[1]
    for i, key in enumerate(keys):
        hist = [r for r in records if key in r]
        ax.plot([r["step"] for r in hist], [r[key] for r in hist], label=labels[i] if labels else None,
                color=colors[i] if colors else PALETTE["model"] if len(keys) == 1 else None)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel if ylabel is not None else ", ".join(keys))
    if not isinstance(target, plt.Axes):
        save_figure(ax.figure, target)
    return ax
