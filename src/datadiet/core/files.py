"""Files the core writes and reads: the user cache folder and atomic JSON writes (no machine paths)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def cache_dir(*parts: str) -> Path:
    """``$DATADIET_CACHE`` or ``$XDG_CACHE_HOME/datadiet`` or ``~/.cache/datadiet``, joined with parts."""
    root = os.environ.get("DATADIET_CACHE")
    if root:
        base = Path(root)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "datadiet"
    p = base.joinpath(*parts)
    p.mkdir(parents=True, exist_ok=True)
    return p


def write_json_atomic(path: Path, data: Any, *, indent: int | None = 2) -> None:
    """Write ``data`` as JSON to ``path`` (its folder created) through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=indent, default=_json_default))
    tmp.replace(path)


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


