"""Exceptions a user can act on. The CLI prints their message on one line and exits with code 2."""

from __future__ import annotations


class MesaoptError(Exception):
    """Base class: an error caused by input the user can fix (config, path, shape, argument)."""


class ConfigError(MesaoptError, ValueError):
    """An invalid configuration value; the message names the field and the allowed values."""


class ShapeError(MesaoptError, ValueError):
    """Tensors with shapes that do not fit together; the message names the argument and shapes."""


class CheckpointError(MesaoptError):
    """A missing, corrupt or incompatible checkpoint directory."""


class TrainingDiverged(MesaoptError):
    """The loss or a gradient became NaN/inf; the last good checkpoint is kept."""
