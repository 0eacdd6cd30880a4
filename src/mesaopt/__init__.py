"""mesaopt: a lab for studying which algorithm a transformer runs in context."""

__version__ = "0.1.0"

from mesaopt import tasks  # noqa: E402
from mesaopt.errors import ConfigError, MesaoptError, ShapeError  # noqa: E402
from mesaopt.learner import Learner  # noqa: E402

__all__ = ["tasks", "Learner", "MesaoptError", "ConfigError", "ShapeError", "__version__"]
