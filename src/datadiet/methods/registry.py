"""The one explicit method registry (name -> class), used by the runner, the CLI and the benchmark."""

from __future__ import annotations

import inspect
from typing import Any

from ..errors import ConfigError, suggest, unknown_name
from .igf.method import IGF
from ..core.method import Full
from .data_diet.dynamic import DataDietDynamicMethod
from .infobatch import InfoBatchMethod
from .multistage.loss_threshold import LossThresholdMethod
from .multistage.method import MultistageMethod
from .random_skip import RandomSkipMethod
from .selective_backprop import SelectiveBackpropMethod
from .data_diet.method import DataDiet
from .ingenious.method import Ingenious
from .random_subset import RandomSubset

METHODS: dict[str, type] = {
    "full": Full,
    "random_subset": RandomSubset,
    "random_skip": RandomSkipMethod,
    "selective_backprop": SelectiveBackpropMethod,
    "infobatch": InfoBatchMethod,
    "loss_threshold": LossThresholdMethod,
    "multistage": MultistageMethod,
    "data_diet": DataDiet,
    "data_diet_dynamic": DataDietDynamicMethod,
    "ingenious": Ingenious,
    "igf": IGF,
}


def build_method(name: str, params: dict[str, Any] | None = None):
    """Instantiate method ``name`` with ``params``; unknown names and parameters get clear errors."""
    if name not in METHODS:
        raise unknown_name("method", name, METHODS)
    cls = METHODS[name]
    params = dict(params or {})
    sig = inspect.signature(cls.__init__)
    allowed = [p for p in sig.parameters if p != "self"]
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
        sig = inspect.signature(cls.__init__)
        params = ", ".join(
            f"{p.name}={p.default!r}" for p in sig.parameters.values() if p.name != "self"
        )
        out.append({"name": name, "mechanism": cls.mechanism, "saves": cls.saves, "params": params})
    return out
