"""Reproductions. Each module registers one or more experiments with ``@register``."""

from mesaopt.experiments.base import (
    Experiment,
    ExperimentConfig,
    Results,
    RunContext,
    get,
    make_config,
    names,
    register,
    run,
)

__all__ = ["Experiment", "ExperimentConfig", "Results", "RunContext", "get", "make_config", "names",
           "register", "run"]
