"""mesaopt: a lab for studying which algorithm a transformer runs in context."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

from mesaopt.errors import ConfigError, MesaoptError, ShapeError  # noqa: E402

# torch is imported on first use of a subpackage (``mesaopt.tasks``, ``mesaopt.Learner``, ...), not by
# ``import mesaopt``: the CLI's --help and error paths stay fast
_SUBPACKAGES = ("tasks", "algorithms", "models", "constructions", "analysis", "train", "experiments", "svm",
                "sweeps", "plotting", "io", "config", "seeding", "report")


def load(path, device="cpu"):
    """The model in a folder written by ``model.save_pretrained(path)`` / ``mesaopt.export`` (eval mode).

    Needs no run folder, optimizer or RNG state; the weights' sha256 is verified (``CheckpointError`` if not).
    ``path`` may also name a model shipped with the package (``mesaopt.load("garg-d20")``) when no folder of that
    name exists; ``mesaopt.models.pretrained.shipped_names()`` lists them.
    """
    from mesaopt.models.pretrained import load_pretrained

    return load_pretrained(path, device=device)


def export(run_dir, out_dir):
    """Convert a run's checkpoint (run or ckpt folder) to a shareable model folder; returns ``Path(out_dir)``."""
    from mesaopt.train.checkpoint import export_pretrained

    return export_pretrained(run_dir, out_dir)


def __getattr__(name: str):
    """Import subpackages on first use: ``mesaopt.algorithms``, ``mesaopt.models``, ...

    ``mesaopt.report`` is the module of documented tables (``render``, ``check``, ``write``); calling it,
    ``mesaopt.report(name)``, renders that table from ``docs/results/NAME/``.
    """
    if name in _SUBPACKAGES:
        return importlib.import_module(f"mesaopt.{name}")
    if name == "Learner":
        from mesaopt.learner import Learner

        return Learner
    raise AttributeError(f"module 'mesaopt' has no attribute {name!r}")


__all__ = ["Learner", "load", "export", "MesaoptError", "ConfigError", "ShapeError", "__version__",
           *_SUBPACKAGES]
