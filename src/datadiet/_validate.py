"""Parameter checks declared once and shared by every constructor."""

from __future__ import annotations

import math
from typing import Any

from .errors import ConfigError


def check_int(name: str, value: Any, *, min: int | None = None, max: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (
        hasattr(value, "__index__")
    ):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if min is not None and value < min:
        raise ConfigError(f"{name} must be >= {min}, got {value}")
    if max is not None and value > max:
        raise ConfigError(f"{name} must be <= {max}, got {value}")
    return value


def check_float(
    name: str,
    value: Any,
    *,
    min: float | None = None,
    max: float | None = None,
    min_open: bool = False,
    max_open: bool = False,
) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if math.isnan(value):
        raise ConfigError(f"{name} must be a number, got NaN")
    if min is not None and (value < min or (min_open and value == min)):
        op = ">" if min_open else ">="
        raise ConfigError(f"{name} must be {op} {min}, got {value}")
    if max is not None and (value > max or (max_open and value == max)):
        op = "<" if max_open else "<="
        raise ConfigError(f"{name} must be {op} {max}, got {value}")
    return value


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_fraction(name: str, value: Any) -> float:
    """A fraction in (0, 1]."""
    return check_float(name, value, min=0.0, max=1.0, min_open=True)
