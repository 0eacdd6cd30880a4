"""Per-experiment training settings: ``TrainConfig`` minus the fields the experiment owns.

An experiment decides some ``TrainConfig`` fields itself (at least the seed, the device and the points per
sequence, which follow from its own top-level fields). Its ``train:`` section must therefore not offer them:
``--set train.seed=5`` would be accepted, ignored and still written to ``config.yaml``. ``train_settings``
derives, from ``TrainConfig.model_fields`` (so fields added to ``TrainConfig`` later appear automatically), a
strict model without the owned fields and with the experiment's defaults; setting an owned field is then the
usual one-line "unknown field" error. ``TrainSettings.to_train`` turns a validated instance into the full
``TrainConfig`` given the owned values::

    GargTrain = train_settings("GargTrain", {"steps": 3500, "objective": "prefix"}, owned=("objective",))

    class GargConfig(ExperimentConfig):
        train: GargTrain = Field(default_factory=GargTrain)

    tcfg = cfg.train.to_train(seed=cfg.seed, device=cfg.device, n_points=cfg.n_points, objective="prefix")
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any, ClassVar

from pydantic import ValidationError, create_model, field_validator, model_validator
from pydantic.fields import FieldInfo

from mesaopt.config import StrictModel, format_validation_error
from mesaopt.errors import ConfigError
from mesaopt.train.config import TrainConfig

# Fields every experiment sets from its own config (``seed``, ``device``) or its data shape (``n_points``).
EXPERIMENT_OWNED: tuple[str, ...] = ("seed", "device", "n_points")


class TrainSettings(StrictModel):
    """Base of the models built by ``train_settings``: the user-settable part of a ``TrainConfig``.

    ``owned`` names the ``TrainConfig`` fields left out (the experiment sets them in ``to_train``). Validation
    runs ``TrainConfig``'s field validators of the remaining fields and its cross-field checks, with
    permissive stand-ins for the owned fields (a large n_points); the final word is ``to_train``'s, which
    validates the full ``TrainConfig`` with the real owned values.
    """

    owned: ClassVar[tuple[str, ...]] = EXPERIMENT_OWNED

    @model_validator(mode="after")
    def _as_train_config(self) -> TrainSettings:
        try:
            TrainConfig.model_validate({**_stand_ins(self.owned), **dict(self)})  # to_train checks the real values
        except ValidationError as e:
            cross = [err["msg"].removeprefix("Value error, ") for err in e.errors() if not err["loc"]]
            if cross:
                raise ValueError("; ".join(cross)) from None
        return self

    def to_train(self, derived: dict[str, Any] | None = None, **owned: Any) -> TrainConfig:
        """The full ``TrainConfig``: these settings plus every owned field (keyword arguments, all required).

        ``derived`` replaces settable fields that the experiment computes from its own documented fields
        (e.g. vonoswald-deep's ``deep_lr``); use it only where the experiment's config says so. A combination
        ``TrainConfig`` rejects raises a one-line ConfigError naming the ``train.*`` field.
        """
        missing, extra = set(self.owned) - set(owned), set(owned) - set(self.owned)
        if missing or extra:
            raise TypeError(f"to_train needs exactly the owned fields {sorted(self.owned)}; "
                            f"missing {sorted(missing)}, not owned {sorted(extra)}")
        unknown = set(derived or {}) - set(type(self).model_fields)
        if unknown:
            raise TypeError(f"derived fields {sorted(unknown)} are not settings of {type(self).__name__}")
        try:
            return TrainConfig.model_validate({**dict(self), **(derived or {}), **owned})
        except ValidationError as e:
            raise ConfigError(format_validation_error(e, "train config")) from None


def _stand_ins(owned: Iterable[str]) -> dict[str, Any]:
    """Permissive values for owned fields while the settings are validated without them: a large n_points, so
    TrainConfig's "n_points > x" rules pass (``to_train`` validates the real values)."""
    return {"n_points": 2**30} if "n_points" in owned else {}


def _field_validators(owned: tuple[str, ...]) -> dict[str, Any]:
    """TrainConfig's field validators, restricted to the fields that are not owned."""
    out = {}
    for name, dec in TrainConfig.__pydantic_decorators__.field_validators.items():
        keep = [f for f in dec.info.fields if f not in owned]
        if keep:
            func = getattr(dec.func, "__func__", dec.func)
            out[name] = field_validator(*keep, mode=dec.info.mode)(classmethod(func))
    return out


def train_settings(name: str, defaults: dict[str, Any] | None = None, owned: Iterable[str] = (),
                   doc: str | None = None) -> type[TrainSettings]:
    """A ``TrainSettings`` subclass called ``name``: ``TrainConfig``'s fields minus the owned ones.

    The owned fields are ``EXPERIMENT_OWNED`` (seed, device, n_points) plus ``owned`` (e.g. ``("objective",)``
    for an experiment that fixes the objective). ``defaults`` replaces ``TrainConfig``'s defaults (nested
    sub-configs may be given as dicts); they are validated here, so a bad default fails at import.
    """
    owned_all = tuple(dict.fromkeys((*EXPERIMENT_OWNED, *owned)))
    unknown = set(owned_all) - set(TrainConfig.model_fields)
    if unknown:
        raise TypeError(f"owned fields {sorted(unknown)} are not TrainConfig fields")
    defaults = dict(defaults or {})
    bad = set(defaults) & set(owned_all) or set(defaults) - set(TrainConfig.model_fields)
    if bad:
        raise TypeError(f"defaults {sorted(bad)} are owned by the experiment or not TrainConfig fields")
    typed = TrainConfig.model_validate({**_stand_ins(owned_all), **defaults})  # validated, nested dicts -> models
    fields: dict[str, Any] = {}
    for fname, info in TrainConfig.model_fields.items():
        if fname in owned_all:
            continue
        new = copy.copy(info)
        if fname in defaults:
            value = getattr(typed, fname)
            new = FieldInfo.merge_field_infos(info, default=value)  # pydantic deep-copies model defaults
        fields[fname] = (info.annotation, new)
    model = create_model(name, __base__=TrainSettings, __module__=__name__,
                         __validators__=_field_validators(owned_all), **fields)
    model.owned = owned_all
    model.__doc__ = doc or (f"TrainConfig without the fields the experiment sets itself ({', '.join(owned_all)}); "
                            "see mesaopt.train.settings.")
    return model
