"""The one explicit method registry (name -> class), used by the runner, the CLI and the benchmark."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError, suggest, unknown_name
from .igf.method import IGF
from ..core.method import Full
from .data_diet.dynamic import DataDietDynamicMethod
from .infobatch import InfoBatch
from .multistage.loss_threshold import LossThresholdMethod
from .multistage.method import MultistageMethod
from .random_skip import RandomSkip
from .selective_backprop import SelectiveBackprop
from .data_diet.method import DataDiet
from .ingenious.method import Ingenious
from .random_subset import RandomSubset

METHODS: dict[str, type] = {
    "full": Full,
    "random_subset": RandomSubset,
    "random_skip": RandomSkip,
    "selective_backprop": SelectiveBackprop,
    "infobatch": InfoBatch,
    "loss_threshold": LossThresholdMethod,
    "multistage": MultistageMethod,
    "data_diet": DataDiet,
    "data_diet_dynamic": DataDietDynamicMethod,
    "ingenious": Ingenious,
    "igf": IGF,
}


def param_defaults(cls: type) -> dict[str, Any]:
    """A method class's parameters and defaults: its declared ``Param`` fields."""
    return cls.param_specs()


def build_method(name: str, params: dict[str, Any] | None = None):
    """Instantiate method ``name`` with ``params``; unknown names and parameters get clear errors."""
    if name not in METHODS:
        raise unknown_name("method", name, METHODS)
    cls = METHODS[name]
    params = dict(params or {})
    allowed = list(param_defaults(cls))
    for k in params:
        if k not in allowed:
            raise ConfigError(
                f"method {name!r} has no parameter {k!r}.{suggest(k, allowed)} "
                f"Its parameters: {', '.join(allowed) or '(none)'}"
            )
    return cls(**params)


def describe_methods() -> list[dict[str, str]]:
    out = []
    for name, cls in METHODS.items():
        params = ", ".join(f"{k}={v!r}" for k, v in param_defaults(cls).items())
        out.append({"name": name, "mechanism": cls.mechanism, "saves": cls.saves, "params": params})
    return out
