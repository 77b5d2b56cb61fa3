"""The one result type of offline selection, and its file format."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataDietError
from .files import write_json_atomic

FORMAT = "datadiet.selection/1"


def read_format_file(path: str | Path, *, fmt: str, what: str, command: str) -> dict[str, Any]:
    """The JSON object in ``path``, checked to be a ``fmt`` file; a DataDietError that names the
    fix (``datadiet <command>``) when it is missing, not JSON or of another format."""
    p = Path(path)
    fix = f"`datadiet {command}`"
    if not p.exists():
        raise DataDietError(f"{what} file {str(p)!r} does not exist; create one with {fix}")
    try:
        d = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataDietError(f"{what} file {str(p)!r} is not valid JSON ({e}); recreate it with {fix}") from None
    if not isinstance(d, dict) or d.get("format") != fmt:
        got = d.get("format") if isinstance(d, dict) else None
        raise DataDietError(f"{str(p)!r} is not a datadiet {what} file (format {got!r}, expected {fmt!r}); "
                            f"create one with {fix}")
    return d


@dataclass(frozen=True)
class Selection:
    """A subset of a training split.

    ``indices`` are positions into the dataset the selection was computed on (what
    ``datasets.Dataset.select`` takes); ``ids`` are the same examples' stable ids (what survives
    re-ordering and re-loading). ``scores`` / ``gains`` are optional per-selected-example numbers
    (a larger score means harder, the library's one sign convention); ``params`` are the resolved
    parameters that produced it.
    """

    method: str
    indices: np.ndarray
    ids: np.ndarray
    n_total: int
    params: dict[str, Any] = field(default_factory=dict)
    scores: np.ndarray | None = None
    gains: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def fraction(self) -> float:
        return len(self) / self.n_total if self.n_total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "method": self.method,
            "params": self.params,
            "n_total": int(self.n_total),
            "n_selected": len(self),
            "indices": [int(i) for i in self.indices],
            "ids": [int(i) for i in self.ids],
            "scores": None if self.scores is None else [float(x) for x in self.scores],
            "gains": None if self.gains is None else [float(x) for x in self.gains],
            "info": self.info,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        write_json_atomic(p, self.to_dict(), indent=None)
        return p

    @classmethod
    def load(cls, path: str | Path) -> Selection:
        d = read_format_file(path, fmt=FORMAT, what="selection", command="select")
        arr = lambda k: None if d.get(k) is None else np.asarray(d[k])  # noqa: E731
        return cls(method=d["method"], indices=np.asarray(d["indices"], dtype=np.int64),
                   ids=np.asarray(d["ids"], dtype=np.int64), n_total=int(d["n_total"]), params=d.get("params", {}),
                   scores=arr("scores"), gains=arr("gains"), info=d.get("info", {}))
