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


def check_real(name: str, value: Any, **bounds: Any) -> float:
    """A finite number (``check_float``'s bounds), not NaN or infinity."""
    value = check_float(name, value, **bounds)
    if math.isinf(value):
        raise ConfigError(f"{name} must be a finite number, got {value}")
    return value


def check_bool(name: str, value: Any) -> bool:
    """``True`` or ``False`` only: a quoted ``"false"`` is a string, and strings are never taken as true."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "on", "off"):
        raise ConfigError(f"{name} must be true or false, got the string {value!r}; write {value.strip().lower()} "
                          "without quotes")
    raise ConfigError(f"{name} must be true or false, got {value!r}")


def check_str(name: str, value: Any, *, what: str = "a non-empty string") -> str:
    """A non-empty string. A number or a true/false that YAML read from a bare word is refused with
    the fix (quote it), because YAML may already have changed it (``010`` reads as 8, ``yes`` as true),
    so its text cannot be taken back for sure."""
    if isinstance(value, str) and value.strip():
        return value
    leaf = name.rpartition(".")[2]
    if isinstance(value, bool) or isinstance(value, (int, float)):
        kind = "true/false" if isinstance(value, bool) else "the number"
        raise ConfigError(f"{name} must be {what}, got {kind} {value!r} (YAML reads bare numbers and "
                          f"yes/no/true/false as such); quote it as you wrote it, e.g. {leaf}: \"{value}\" in a YAML file, "
                          f"\"{name}='{value}'\" on the command line")
    got = "an empty string" if isinstance(value, str) else repr(value)
    raise ConfigError(f"{name} must be {what}, got {got}")


def check_mapping(name: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a mapping (key: value pairs), got {value!r}")
    return value


def check_size(name: str, value: Any) -> float | int:
    """A held-out size: a fraction in (0, 1) or a whole number of examples >= 1 (a numeric string is
    read as a number: YAML reads ``1e-1`` as a string)."""
    def bad() -> ConfigError:
        return ConfigError(f"{name} must be a fraction between 0 and 1 (e.g. 0.2) or a whole number of "
                           f"examples (e.g. 200), got {value!r}")

    v = value
    if isinstance(v, str):
        try:
            v = int(v)
        except ValueError:
            try:
                v = float(v)
            except ValueError:
                raise bad() from None
    if isinstance(v, bool) or not isinstance(v, (int, float)) and not hasattr(v, "__index__"):
        raise bad()
    if isinstance(v, float):
        if not 0.0 < v < 1.0:  # also NaN and inf; 1.5 is neither a fraction nor a count
            raise bad()
        return v
    v = int(v)
    if v < 1:
        raise bad()
    return v
