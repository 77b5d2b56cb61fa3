"""The one result type of offline selection, and its file format."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataDietError

FORMAT = "datadiet.selection/1"


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
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(p.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict()))
        tmp.replace(p)
        return p

    @classmethod
    def load(cls, path: str | Path) -> Selection:
        p = Path(path)
        if not p.exists():
            raise DataDietError(f"selection file {str(p)!r} does not exist; create one with `datadiet select`")
        try:
            d = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise DataDietError(f"selection file {str(p)!r} is not valid JSON ({e}); recreate it") from None
        if d.get("format") != FORMAT:
            raise DataDietError(f"{str(p)!r} is not a datadiet selection file (format {d.get('format')!r}, expected {FORMAT!r})")
        arr = lambda k: None if d.get(k) is None else np.asarray(d[k])  # noqa: E731
        return cls(method=d["method"], indices=np.asarray(d["indices"], dtype=np.int64),
                   ids=np.asarray(d["ids"], dtype=np.int64), n_total=int(d["n_total"]), params=d.get("params", {}),
                   scores=arr("scores"), gains=arr("gains"), info=d.get("info", {}))
