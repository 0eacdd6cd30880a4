"""Figures of ``garg-suite``: the dense error curve (Part A) and the shift table (Part B, one panel per shift)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mesaopt import plotting

LABELS = {"transformer": "transformer", "ols": "least squares", "ridge": "ridge", "averaging": "averaging",
          "knn": "k-NN"}
FLOOR = 1e-5
"""Errors below this (exact least squares reaches ~1e-15) are drawn at the floor of the log axis."""


def plot_dense(stem: Path, dense: dict[str, np.ndarray], d: int, published: dict[int, float]) -> None:
    """Normalised error vs N (T,) per learner, log y; ``published`` {N: error} marked when d == 20 (Garg's d)."""
    import matplotlib.pyplot as plt

    plotting.paper_style()
    fig, ax = plt.subplots(figsize=(4.8, 3.5))
    for name, c in dense.items():
        color = plotting.PALETTE["model" if name == "transformer" else name]
        ax.plot(np.arange(len(c)), np.maximum(c, FLOOR), color=color, ls="-" if name == "transformer" else "--",
                label=LABELS.get(name, name))
    if d == 20 and published:
        ax.plot(list(published), list(published.values()), "k*", ms=9, label="Garg et al. (published)")
    ax.axvline(d, color="grey", lw=0.8)
    ax.set(xlabel="in-context examples N", ylabel=f"squared error / d (floor {FLOOR:g})", yscale="log",
           title=f"noiseless linear regression, d={d}")
    ax.legend(fontsize=7)
    plotting.save_figure(fig, stem)


def plot_shifts(stem: Path, shifts: dict[str, dict[str, np.ndarray]], d: int) -> None:
    """One panel per shift: transformer vs least squares (and averaging, dotted) error/d vs N, log y (floored)."""
    import matplotlib.pyplot as plt

    if not shifts:
        return
    plotting.paper_style()
    cols = min(4, len(shifts))
    rows = math.ceil(len(shifts) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, (name, cv) in zip(axes.flat, shifts.items(), strict=False):
        for learner, ls in (("transformer", "-"), ("ols", "--"), ("averaging", ":")):
            c = cv[learner]
            ok = np.isfinite(c)
            ax.plot(np.arange(len(c))[ok], np.maximum(c[ok], FLOOR), ls=ls, label=LABELS[learner],
                    color=plotting.PALETTE["model" if learner == "transformer" else learner])
        ax.axvline(d, color="grey", lw=0.8)
        ax.set(title=name, yscale="log", xlabel="N")
    for ax in list(axes.flat)[len(shifts):]:
        ax.axis("off")
    axes[0, 0].set_ylabel(f"squared error / d (floor {FLOOR:g})")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    plotting.save_figure(fig, stem)
