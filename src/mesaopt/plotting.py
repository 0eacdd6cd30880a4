"""Figure helpers shared by experiments: a paper style, saving PNG + PDF, common plot types."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mesaopt.io import atomic_write_bytes  # noqa: E402

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
