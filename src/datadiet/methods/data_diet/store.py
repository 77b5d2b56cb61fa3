"""The Parquet score store: a folder of Parquet shards of a scores file, written resumably.

Layout of a store folder (``ScoreResult.save_parquet(folder)``)::

    folder/
      manifest.json          format "datadiet.scores-store/1": the planned shards, the ones done,
                             the content digest and the provenance
      part-00000.parquet     rows 0 .. shard_rows-1, in the scores file's order
      part-00001.parquet     ...

Every shard has the columns ``example_id`` (int64), ``score`` (float64, the mean over the runs),
``label`` (int64, only when the scores carry labels) and one ``score_seed{S}`` (float64) per
scoring run, and carries the provenance (kind, seeds, steps, costs, cache hits, ``info`` with the
training settings and the model / data key) as JSON under the schema metadata key ``datadiet``,
so one shard read on its own still says where it came from. ``datasets.Dataset.from_parquet(
"folder/*.parquet")`` or pandas read the folder as one table.

Writing is atomic shard by shard (``part-00003.parquet.tmp`` then ``os.replace``) and the manifest
is rewritten (atomically) after each shard; a writer that is interrupted and rerun with the same
scores skips the shards already done. Leftover ``.tmp`` files are removed by the writer and never
read. A store is read only when its manifest says it is complete, and every shard is checked
(unique integer ids over the whole store, finite scores, the columns the provenance names, the
same digest in every shard): one :class:`~datadiet.errors.DataDietError` naming the file and fault.

pyarrow is imported only inside the functions here (``pip install 'datadiet[hf]'``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ...core.parquet import MANIFEST, META_KEY, arrow, read_manifest, read_shard, shard_name, write_shards
from ...core.selection import FormatFile
from ...errors import DataDietError

STORE_FORMAT = "datadiet.scores-store/1"
SHARD_ROWS = 1_000_000
__all__ = ["MANIFEST", "META_KEY", "STORE_FORMAT", "SHARD_ROWS", "shard_name", "seed_column", "is_store_path",
           "write_store", "read_store", "content_digest"]
ID_COL, SCORE_COL, LABEL_COL = "example_id", "score", "label"
_FIX = "recreate it with `datadiet score` (or ScoreResult.save_parquet)"


def seed_column(seed: int) -> str:
    return f"score_seed{int(seed)}"


def is_store_path(path: str | Path) -> bool:
    """``path`` is a score store folder or a single Parquet file (not a JSON scores file)."""
    p = Path(path)
    return p.is_dir() or p.suffix.lower() == ".parquet"


def _provenance(res) -> dict[str, Any]:
    """The fields of ``res`` besides its arrays, JSON-normalised (as a JSON scores file holds them)."""
    return json.loads(json.dumps({
        "kind": res.kind, "seeds": [int(s) for s in res.seeds], "steps": int(res.steps),
        "cost_s": float(res.cost_s), "spent_s": float(res.spent_s), "cached": [bool(c) for c in res.cached],
        "info": res.info,
    }))


def content_digest(ids: np.ndarray, scores: np.ndarray, per_seed: np.ndarray, labels: np.ndarray | None,
                   prov: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for a in (np.ascontiguousarray(ids, dtype="<i8"), np.ascontiguousarray(scores, dtype="<f8"),
              np.ascontiguousarray(per_seed, dtype="<f8")):
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    h.update(b"no labels" if labels is None else np.ascontiguousarray(labels, dtype="<i8").tobytes())
    h.update(json.dumps(prov, sort_keys=True).encode())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------- write
def write_store(res, folder: str | Path, *, shard_rows: int = SHARD_ROWS) -> Path:
    """Write ``res`` (a ScoreResult) as a score store in ``folder``; resume an interrupted write.

    A store already in ``folder`` with the same content keeps the shards it has done; one of other
    content is replaced (its shards removed). A folder holding anything else is refused.
    """
    pa, _pq = arrow()
    n = len(res.ids)
    seeds = [int(s) for s in res.seeds]
    if len(set(seeds)) != len(seeds):
        raise DataDietError(f"the seeds {seeds} repeat, and a score store names one column per seed")
    ids = np.asarray(res.ids, dtype=np.int64)
    scores = np.asarray(res.scores, dtype=np.float64)
    per_seed = np.asarray(res.per_seed, dtype=np.float64).reshape(len(seeds), n)
    labels = None if res.labels is None else np.asarray(res.labels, dtype=np.int64)
    prov = _provenance(res)
    digest = content_digest(ids, scores, per_seed, labels, prov)

    def table(k: int, shards: int, lo: int, hi: int):
        cols: dict[str, Any] = {ID_COL: pa.array(ids[lo:hi], type=pa.int64()),
                                SCORE_COL: pa.array(scores[lo:hi], type=pa.float64())}
        if labels is not None:
            cols[LABEL_COL] = pa.array(labels[lo:hi], type=pa.int64())
        for j, s in enumerate(seeds):
            cols[seed_column(s)] = pa.array(per_seed[j, lo:hi], type=pa.float64())
        meta = {"format": STORE_FORMAT, "digest": digest, "n": n, "shard": k, "shards": shards,
                "first_row": lo, "rows": hi - lo, **prov}
        return pa.table(cols).replace_schema_metadata({META_KEY: json.dumps(meta).encode()})

    return write_shards(folder, fmt=STORE_FORMAT, what="score store", digest=digest, n=n, shard_rows=shard_rows,
                        manifest={"columns": _columns(seeds, labels is not None), "provenance": prov}, table=table)


def _columns(seeds: list[int], labels: bool) -> list[str]:
    return [ID_COL, SCORE_COL, *([LABEL_COL] if labels else []), *(seed_column(s) for s in seeds)]


# ----------------------------------------------------------------------------------------- read
class _Checked(FormatFile):
    """FormatFile's checks over a dict already read (a manifest or a shard's metadata)."""

    def __init__(self, path: Path, d: dict[str, Any]) -> None:  # noqa: D107 - no file read here
        self.path, self.what, self.command, self.d = Path(path), "scores", "score", d

    def fail(self, fault: str) -> DataDietError:
        return DataDietError(f"score store file {str(self.path)!r} is damaged: {fault}; {_FIX}")


def _fail(path: Path, fault: str) -> DataDietError:
    return DataDietError(f"score store file {str(path)!r} is damaged: {fault}; {_FIX}")


def read_store(path: str | Path, *, kinds: tuple[str, ...]) -> dict[str, Any]:
    """The ScoreResult fields held by a score store folder or a single shard file, every one checked."""
    pa, pq = arrow()
    p = Path(path)
    if not p.exists():
        raise DataDietError(f"score store {str(p)!r} does not exist; create one with ScoreResult.save_parquet")
    if p.is_dir():
        hint = f"give its scores file {str(p / 'scores.json')!r}" if (p / "scores.json").is_file() else _FIX
        m = read_manifest(p, fmt=STORE_FORMAT, what="score store", fail=_fail, no_manifest_hint=hint)
        files = [p / s for s in m["shards"]]
        digest, n = m.get("digest"), m.get("n")
    else:
        files, digest, n, m = [p], None, None, None

    ids_parts, score_parts, label_parts, seed_parts = [], [], [], []
    prov: dict[str, Any] | None = None
    c_prov: _Checked | None = None
    for k, f in enumerate(files):
        table, meta = read_shard(pq, f, fmt=STORE_FORMAT, fail=_fail)
        c = _Checked(f, meta)
        if m is None:  # a single file: it must be the whole store
            shards_total = c.integer("shards", min=1)
            if shards_total != 1:
                raise DataDietError(f"{str(f)!r} is shard {meta.get('shard')} of {shards_total} of a score store; "
                                    "give the store's folder instead")
            digest, n = meta.get("digest"), meta.get("n")
        elif meta.get("digest") != digest or c.integer("shard", min=0) != k:
            raise _fail(f, f"it is not shard {k} of this store (its digest or shard number differs from "
                           f"{MANIFEST}'s)")
        here = {key: meta.get(key) for key in ("kind", "seeds", "steps", "cost_s", "spent_s", "cached", "info")}
        if prov is None:
            prov = here
            c_prov = c
        elif here != prov:
            raise _fail(f, "its provenance differs from the first shard's")
        seeds = c.ints("seeds")
        want = _columns([int(s) for s in seeds], LABEL_COL in table.column_names)
        missing = [col for col in want if col not in table.column_names]
        if missing:
            raise _fail(f, f"column(s) {', '.join(missing)} missing")
        ids_parts.append(_column(pa, table, ID_COL, f, integer=True))
        score_parts.append(_column(pa, table, SCORE_COL, f))
        label_parts.append(_column(pa, table, LABEL_COL, f, integer=True) if LABEL_COL in table.column_names else None)
        seed_parts.append([_column(pa, table, seed_column(s), f) for s in seeds])

    assert prov is not None and c_prov is not None
    where = files[0] if m is None else p / MANIFEST
    c = c_prov
    kind = c.name("kind")
    if kind not in kinds:
        raise c.fail(f"'kind' is {kind!r}, not one of {', '.join(kinds)}")
    seeds = c.ints("seeds")
    if len(seeds) == 0:
        raise c.fail("'seeds' is empty (a score is the mean of at least one scoring run)")
    cached = c.bools("cached", default=[])
    if cached and len(cached) != len(seeds):
        raise c.fail(f"'cached' has {len(cached)} entries for {len(seeds)} 'seeds'")
    has_labels = [x is not None for x in label_parts]
    if any(has_labels) and not all(has_labels):
        bad = files[has_labels.index(not has_labels[0])]
        raise _fail(bad, "some shards have a 'label' column and others not")
    ids = np.concatenate(ids_parts)
    if len(ids) == 0:
        raise _fail(where, "it holds no examples")
    if n is not None and n != len(ids):
        raise _fail(where, f"'n' is {n!r} but the shards hold {len(ids)} rows")
    vals, first, counts = np.unique(ids, return_index=True, return_counts=True)
    if len(vals) != len(ids):
        rep = vals[counts > 1]
        # the shard holding the second copy of the first repeated id (in row order)
        pos = np.flatnonzero(ids == rep[0])[1]
        bounds = np.cumsum([len(a) for a in ids_parts])
        bad = files[int(np.searchsorted(bounds, pos, side="right"))]
        raise _fail(bad, f"'{ID_COL}' repeats {len(rep)} ids (e.g. {[int(i) for i in rep[:5]]}); each example "
                         "may appear once")
    scores = np.concatenate(score_parts)
    per_seed = np.stack([np.concatenate([sp[j] for sp in seed_parts]) for j in range(len(seeds))])
    labels = np.concatenate(label_parts) if all(has_labels) else None
    fields = {"kind": kind, "ids": ids, "scores": scores, "per_seed": per_seed, "seeds": tuple(int(s) for s in seeds),
              "steps": c.integer("steps", min=0), "cost_s": c.number("cost_s"), "spent_s": c.number("spent_s", 0.0),
              "cached": tuple(bool(x) for x in cached), "labels": labels, "info": c.mapping("info")}
    if digest is not None and content_digest(ids, scores, per_seed, labels, prov) != digest:
        raise _fail(where, "its rows do not match the digest they were written with (a shard was changed)")
    return fields


def _column(pa, table, name: str, path: Path, *, integer: bool = False) -> np.ndarray:
    col = table.column(name)
    if col.null_count:
        raise _fail(path, f"column {name!r} holds {col.null_count} missing value(s)")
    t = col.type
    if integer:
        if not pa.types.is_integer(t):
            raise _fail(path, f"column {name!r} must hold integers, got {t}")
        return np.asarray(col.to_numpy(), dtype=np.int64)
    if not (pa.types.is_floating(t) or pa.types.is_integer(t)):
        raise _fail(path, f"column {name!r} must hold numbers, got {t}")
    a = np.asarray(col.to_numpy(), dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(a))
    if len(bad):
        raise _fail(path, f"column {name!r} must hold finite numbers, got {a[bad[0]]!r} at row {int(bad[0])}")
    return a
