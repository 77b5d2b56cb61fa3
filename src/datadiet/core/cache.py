"""What the on-disk caches of offline selection share (scoring runs, embeddings).

One ``.npz`` per key under ``cache_dir(subdir)``: a per-example array, the example ids it belongs
to, the seconds it cost when it was computed and a JSON ``meta`` string. Writes are atomic (a
uniquely named temporary file, then a rename); a damaged entry (unreadable, or whose array is not
one row of numbers per id: ``ndim`` dimensions, ``len(ids)`` rows, no empty dimension) is logged as
a warning and treated as a miss, so it is recomputed and rewritten; one whose ids differ from the
ones asked for is a quiet miss. Keys are the first 40 hex digits of the sha256 of a sorted JSON of
the key dict plus a format version ``v``; the data enters a key through :func:`fields_fingerprint`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def fields_fingerprint(dataset, keys: Sequence[str]) -> str:
    """sha256 of the integer fields ``keys`` of every example of a tokenized dataset, in order
    (a field an example lacks is left out)."""
    h = hashlib.sha256()
    for i in range(len(dataset)):
        f = dataset[i]
        for k in keys:
            if k in f:
                h.update(k.encode())
                h.update(np.asarray(f[k], dtype=np.int64).tobytes())
    return h.hexdigest()


def key_digest(key: dict[str, Any], *, version: int) -> str:
    """The file name (without ``.npz``) of the entry for ``key``."""
    blob = json.dumps({"v": version, **key}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:40]


class NpzCache:
    """Base of the per-example array caches: subclasses name the folder, the array and its dtype."""

    subdir: str = ""  # folder under cache_dir()
    what: str = ""  # what the entries hold, for the log ("score", "embedding")
    field: str = ""  # name of the per-example array in the .npz
    dtype: type = np.float64
    ndim: int | None = None  # dimensions of the per-example array (None: any, one row per id)

    def __init__(self, root: str | Path | None = None) -> None:
        if root is None:
            from .files import cache_dir

            root = cache_dir(self.subdir)
        self.root = Path(root)

    def _read(self, p: Path, ids: np.ndarray) -> tuple[np.ndarray, float] | None:
        """``(array, cost_s)`` of the entry at ``p``, or None when it is missing, damaged or for other ids."""
        if not p.exists():
            return None
        try:
            with np.load(p, allow_pickle=False) as z:
                values, cids, cost = z[self.field], z["ids"], float(z["cost_s"])
        except Exception as e:  # noqa: BLE001 - a damaged entry is recomputed
            log.warning("ignoring damaged %s cache entry %s (%s)", self.what, p, e)
            return None
        if cids.ndim != 1 or cids.dtype.kind not in "iu":
            log.warning("ignoring damaged %s cache entry %s (its ids have shape %s, dtype %s)", self.what, p,
                        cids.shape, cids.dtype)
            return None
        if len(cids) != len(ids) or not np.array_equal(cids, ids):
            return None
        fault = self._shape_fault(values, len(ids))
        if fault is not None:
            log.warning("ignoring damaged %s cache entry %s (%s); recomputing it", self.what, p, fault)
            return None
        return values, cost

    def _shape_fault(self, values: np.ndarray, n: int) -> str | None:
        """Why ``values`` cannot be the per-example array of ``n`` ids, or None."""
        if values.dtype.kind not in "fiu":
            return f"{self.field!r} holds {values.dtype}, not numbers"
        if values.ndim == 0 or (self.ndim is not None and values.ndim != self.ndim):
            want = "" if self.ndim is None else f", expected {self.ndim} dimension{'s' if self.ndim != 1 else ''}"
            return f"{self.field!r} has shape {values.shape}{want}"
        if values.shape[0] != n:
            return f"{self.field!r} has {values.shape[0]} entries for {n} ids"
        if 0 in values.shape[1:]:
            return f"{self.field!r} has shape {values.shape}, an empty dimension"
        return None

    def _write(self, p: Path, ids: np.ndarray, values: np.ndarray, cost_s: float, meta: str) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f"{p.stem}.tmp{time.monotonic_ns()}.npz")
        try:
            np.savez(tmp, **{self.field: np.asarray(values, dtype=self.dtype)}, ids=np.asarray(ids, dtype=np.int64),
                     cost_s=np.float64(cost_s), meta=np.asarray(meta))
            tmp.replace(p)
        finally:
            if tmp.exists():
                tmp.unlink()
        return p
