"""Files the core writes and reads: the user cache folder and atomic JSON writes (no machine paths).

A path that cannot be used as given is bad input, reported as a :class:`~datadiet.errors.DataDietError`
that names the path and the fix, never as a bare ``OSError``: a file where a folder must go
(``--out`` under a file, ``DATADIET_CACHE`` pointing at one), or a folder where a file must go.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import DataDietError


def _label(path: Path, what: str) -> str:
    return f"{what} {str(path)!r}" if what else repr(str(path))


def _file_in_the_way(path: Path) -> Path | None:
    """The nearest of ``path`` and its parents that exists, if it is not a folder (else None)."""
    for p in (path, *path.parents):
        if p.exists():
            return None if p.is_dir() else p
    return None


def ensure_dir(path: str | Path, *, what: str = "", fix: str = "give the path of a folder (it is created if missing)"
               ) -> Path:
    """Make folder ``path`` with its parents; a file in the way is a clear error.

    ``what`` says where the path came from (e.g. ``"--out"``); ``fix`` ends the message.
    """
    path = check_dir_target(path, what=what, fix=fix)
    label = _label(path, what)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a file appeared meanwhile
        raise DataDietError(f"{label} is a file, not a folder; {fix}") from None
    except PermissionError as e:
        raise DataDietError(f"{label}: no permission to create {e.filename or path}; choose a folder you can "
                            "write to") from None
    return path


def check_dir_target(path: str | Path, *, what: str = "",
                     fix: str = "give the path of a folder (it is created if missing)") -> Path:
    """``path`` can be (made) a folder: neither it nor any of its parents is a file. Creates nothing."""
    path = Path(path)
    blocker = _file_in_the_way(path)
    if blocker is not None:
        where = "" if blocker == path else f": {str(blocker)!r}"
        raise DataDietError(f"{_label(path, what)}{where} is a file, not a folder; {fix}")
    return path


def check_file_target(path: str | Path, *, what: str = "", suffix: str = ".json") -> Path:
    """``path`` can be written as a file: it is not a folder, and no file stands where its folders go.

    ``suffix``: of the example file name that the message suggests when ``path`` is a folder.
    """
    path = Path(path)
    if path.is_dir():
        raise DataDietError(f"{_label(path, what)} is a folder, but a file is expected here; give a file name, "
                            f"e.g. {str(path / ('out' + suffix))!r}")
    blocker = _file_in_the_way(path.parent)
    if blocker is not None:
        raise DataDietError(f"{_label(path, what)}: {str(blocker)!r} is a file, not a folder; choose another path "
                            "or move that file away")
    return path


def cache_dir(*parts: str) -> Path:
    """``$DATADIET_CACHE`` or ``$XDG_CACHE_HOME/datadiet`` or ``~/.cache/datadiet``, joined with parts."""
    var = "DATADIET_CACHE" if os.environ.get("DATADIET_CACHE") else "XDG_CACHE_HOME" if os.environ.get("XDG_CACHE_HOME") else ""
    root = Path(os.environ[var]) if var else Path.home() / ".cache"
    base = root if var == "DATADIET_CACHE" else root / "datadiet"
    p = base.joinpath(*parts)
    blocker = _file_in_the_way(p)
    if blocker is not None and var and (blocker == root or blocker in root.parents):
        where = "" if blocker == root else f": {str(blocker)!r}"
        raise DataDietError(f"{var}={root}{where} is a file, not a folder; point {var} at a folder (it is created "
                            "if missing), or unset it to use the default cache folder")
    return ensure_dir(p, what="cache folder", fix="move that file away (or set DATADIET_CACHE to another folder)")


def write_json_atomic(path: Path, data: Any, *, indent: int | None = 2) -> None:
    """Write ``data`` as JSON to ``path`` (its folder created) through a temporary file and a rename.

    On any failure the temporary file is removed and ``path`` is left as it was.
    """
    path = check_file_target(path)
    text = json.dumps(data, indent=indent, default=_json_default)
    ensure_dir(path.parent)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)
