"""The one result type of offline selection, and its file format."""

from __future__ import annotations

import json
import math
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


_MISSING = object()


def _show(x: Any, limit: int = 40) -> str:
    r = repr(x)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def _is_int(x: Any) -> bool:
    """A JSON integer (a float with an integral value counts: other tools write ids as 3.0)."""
    return type(x) is int or (type(x) is float and math.isfinite(x) and x.is_integer())


def _is_number(x: Any) -> bool:
    return type(x) is int or (type(x) is float and math.isfinite(x))


class FormatFile:
    """Checked fields of a datadiet file (:func:`read_format_file`): every accessor returns the value
    in the type the format says or raises one :class:`DataDietError` naming the file, the field and
    the fault, and how to recreate the file. The one place selection and scores files are checked."""

    def __init__(self, path: str | Path, *, fmt: str, what: str, command: str) -> None:
        self.path, self.what, self.command = Path(path), what, command
        self.d = read_format_file(path, fmt=fmt, what=what, command=command)

    def fail(self, fault: str) -> DataDietError:
        return DataDietError(f"{self.what} file {str(self.path)!r} is damaged: {fault}; recreate it with "
                             f"`datadiet {self.command}`")

    def _get(self, key: str, default: Any) -> Any:
        if key in self.d:
            return self.d[key]
        if default is _MISSING:
            raise self.fail(f"{key!r} is missing")
        return default

    def name(self, key: str) -> str:
        v = self._get(key, _MISSING)
        if not isinstance(v, str) or not v:
            raise self.fail(f"{key!r} must be a name (text), got {_show(v)}")
        return v

    def integer(self, key: str, default: Any = _MISSING, *, min: int | None = None) -> int:
        v = self._get(key, default)
        if not _is_int(v):
            raise self.fail(f"{key!r} must be an integer, got {_show(v)}")
        if min is not None and v < min:
            raise self.fail(f"{key!r} must be >= {min}, got {_show(v)}")
        return int(v)

    def number(self, key: str, default: Any = _MISSING) -> float:
        v = self._get(key, default)
        if not _is_number(v):
            raise self.fail(f"{key!r} must be a finite number, got {_show(v)}")
        return float(v)

    def mapping(self, key: str) -> dict[str, Any]:
        """An optional JSON object (absent or null: empty)."""
        v = self._get(key, None)
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise self.fail(f"{key!r} must be an object, got {_show(v)}")
        return v

    def _list(self, key: str, v: Any, n: int | None, of: str) -> list:
        if not isinstance(v, list):
            raise self.fail(f"{key!r} must be a list of {of}, got {_show(v)}")
        if n is not None and len(v) != n:
            raise self.fail(f"it has {len(v)} {key!r} for {n} 'ids'")
        return v

    def ints(self, key: str, *, n: int | None = None, unique: bool = False, optional: bool = False,
             default: Any = _MISSING) -> np.ndarray | None:
        """A list of integers as int64 (``n``: its length must be ``n``; ``unique``: no repeats;
        ``optional``: null gives None)."""
        v = self._get(key, None if optional else default)
        if v is None and optional:
            return None
        v = self._list(key, v, n, "integers")
        for k, x in enumerate(v):
            if not _is_int(x):
                raise self.fail(f"{key!r} must hold integers, got {_show(x)} at position {k}")
        try:
            a = np.asarray(v, dtype=np.int64).reshape(len(v))
        except OverflowError:
            raise self.fail(f"{key!r} holds integers too large for 64 bits") from None
        if unique and len(np.unique(a)) != len(a):
            vals, counts = np.unique(a, return_counts=True)
            rep = vals[counts > 1]
            raise self.fail(f"{key!r} repeats {len(rep)} ids (e.g. {[int(i) for i in rep[:5]]}); each example "
                            "may appear once")
        return a

    def numbers(self, key: str, *, n: int | None = None, optional: bool = False, row: Any = None,
                v: Any = _MISSING) -> np.ndarray | None:
        """A list of finite numbers as float64 (``n``, ``optional`` as for :meth:`ints`)."""
        if v is _MISSING:
            v = self._get(key, None if optional else _MISSING)
        if v is None and optional:
            return None
        if row is None:
            v = self._list(key, v, n, "numbers")
        elif not isinstance(v, list):
            raise self.fail(f"{key!r} row {row} must be a list of numbers, got {_show(v)}")
        elif n is not None and len(v) != n:
            raise self.fail(f"{key!r} row {row} has {len(v)} scores for {n} 'ids'")
        for k, x in enumerate(v):
            if not _is_number(x):
                where = f"position {k}" if row is None else f"row {row}, position {k}"
                raise self.fail(f"{key!r} must hold finite numbers, got {_show(x)} at {where}")
        return np.asarray(v, dtype=np.float64).reshape(len(v))

    def rows(self, key: str, *, rows: int, n: int, per: str) -> np.ndarray:
        """A list of ``rows`` lists of ``n`` finite numbers, as a ``(rows, n)`` float64 array."""
        v = self._get(key, _MISSING)
        if not isinstance(v, list):
            raise self.fail(f"{key!r} must be a list of lists of numbers, got {_show(v)}")
        if len(v) != rows:
            raise self.fail(f"{key!r} has {len(v)} rows for {rows} {per!r}")
        out = np.zeros((rows, n), dtype=np.float64)
        for r, row in enumerate(v):
            out[r] = self.numbers(key, n=n, row=r, v=row)
        return out

    def bools(self, key: str, default: Any = _MISSING) -> list[bool]:
        v = self._get(key, default)
        v = self._list(key, v, None, "true/false")
        for k, x in enumerate(v):
            if type(x) is not bool:
                raise self.fail(f"{key!r} must hold true/false, got {_show(x)} at position {k}")
        return v

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
        """The selection in a selection file, every field checked (a DataDietError naming the file and
        the fault otherwise): unique integer ids, at least one, as many in-range positions, n_total."""
        f = FormatFile(path, fmt=FORMAT, what="selection", command="select")
        method = f.name("method")
        ids = f.ints("ids", unique=True)
        if len(ids) == 0:
            raise f.fail("it selects no examples ('ids' is empty)")
        n_total = f.integer("n_total")
        if n_total < len(ids):
            raise f.fail(f"'n_total' is {n_total}, but it must be at least the {len(ids)} selected examples")
        n_sel = f.d.get("n_selected")
        if n_sel is not None and (not _is_int(n_sel) or int(n_sel) != len(ids)):
            raise f.fail(f"'n_selected' is {_show(n_sel)} but it holds {len(ids)} ids")
        indices = f.ints("indices", unique=True)
        if len(indices) != len(ids):
            raise f.fail(f"it has {len(indices)} 'indices' but {len(ids)} 'ids'")
        out = indices[(indices < 0) | (indices >= n_total)]
        if len(out):
            raise f.fail(f"'indices' must be positions in [0, {n_total}) (n_total), got {int(out[0])}")
        return cls(method=method, indices=indices, ids=ids, n_total=n_total, params=f.mapping("params"),
                   scores=f.numbers("scores", n=len(ids), optional=True),
                   gains=f.numbers("gains", n=len(ids), optional=True), info=f.mapping("info"))
