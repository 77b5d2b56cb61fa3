"""User-facing errors.

Every error that a user can cause by bad input is a :class:`DataDietError` whose message names the
problem *and* the fix. The CLI prints these without a traceback and exits with status 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DataDietError(Exception):
    """Bad input or an impossible request; the message says what is wrong and how to fix it."""


class ConfigError(DataDietError, ValueError):
    """A configuration key or value is invalid."""


class DataError(DataDietError, ValueError):
    """A dataset is missing, empty or malformed."""


class RunExistsError(DataDietError, FileExistsError):
    """The run folder already holds a finished run."""


def suggest(name: str, known: Iterable[str]) -> str:
    """A ' Did you mean ...?' hint for ``name`` among ``known`` (empty if nothing is close)."""
    close = difflib.get_close_matches(str(name), list(known), n=1, cutoff=0.5)
    return f" Did you mean {close[0]!r}?" if close else ""


def unknown_name(kind: str, name: str, known: Iterable[str], *, extra: str = "") -> DataDietError:
    known = sorted(known)
    return DataDietError(
        f"unknown {kind} {name!r}.{suggest(name, known)} Known {kind}s: {', '.join(known)}.{extra}"
    )


def missing_extra(package: str, extra: str) -> ImportError:
    return ImportError(
        f"this feature needs the optional package {package!r}; install it with "
        f"`pip install 'datadiet[{extra}]'` (or run scripts/setup.sh)."
    )
