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
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ...core.files import ensure_dir, write_json_atomic
from ...core.selection import FormatFile
from ...errors import DataDietError, missing_extra

STORE_FORMAT = "datadiet.scores-store/1"
MANIFEST = "manifest.json"
META_KEY = b"datadiet"
SHARD_ROWS = 1_000_000
ID_COL, SCORE_COL, LABEL_COL = "example_id", "score", "label"
_FIX = "recreate it with `datadiet score` (or ScoreResult.save_parquet)"


def seed_column(seed: int) -> str:
    return f"score_seed{int(seed)}"


def shard_name(k: int) -> str:
    return f"part-{k:05d}.parquet"


def is_store_path(path: str | Path) -> bool:
    """``path`` is a score store folder or a single Parquet file (not a JSON scores file)."""
    p = Path(path)
    return p.is_dir() or p.suffix.lower() == ".parquet"


def _arrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise missing_extra("pyarrow", "hf") from None
    return pa, pq


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
def _write_shard(pq, table, dest: Path) -> None:
    """Write one shard atomically: ``dest.tmp`` then ``os.replace`` onto ``dest``."""
    tmp = dest.with_name(dest.name + ".tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _shard_digest(pq, path: Path) -> str | None:
    """The digest in a shard's schema metadata (None when it cannot be read)."""
    try:
        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta[META_KEY]).get("digest")
    except Exception:  # noqa: BLE001 - any unreadable shard is simply rewritten
        return None


def write_store(res, folder: str | Path, *, shard_rows: int = SHARD_ROWS) -> Path:
    """Write ``res`` (a ScoreResult) as a score store in ``folder``; resume an interrupted write.

    A store already in ``folder`` with the same content keeps the shards it has done; one of other
    content is replaced (its shards removed). A folder holding anything else is refused.
    """
    pa, pq = _arrow()
    if int(shard_rows) < 1:
        raise DataDietError(f"shard_rows must be >= 1, got {shard_rows!r}")
    shard_rows = int(shard_rows)
    n = len(res.ids)
    if n == 0:
        raise DataDietError("cannot write a score store of no examples")
    seeds = [int(s) for s in res.seeds]
    if len(set(seeds)) != len(seeds):
        raise DataDietError(f"the seeds {seeds} repeat, and a score store names one column per seed")
    folder = ensure_dir(folder, what="score store")
    ids = np.asarray(res.ids, dtype=np.int64)
    scores = np.asarray(res.scores, dtype=np.float64)
    per_seed = np.asarray(res.per_seed, dtype=np.float64).reshape(len(seeds), n)
    labels = None if res.labels is None else np.asarray(res.labels, dtype=np.int64)
    prov = _provenance(res)
    digest = content_digest(ids, scores, per_seed, labels, prov)
    names = [shard_name(k) for k in range((n + shard_rows - 1) // shard_rows)]

    for tmp in folder.glob("*.parquet.tmp"):  # left by an interrupted writer: never a finished shard
        tmp.unlink(missing_ok=True)
    mpath = folder / MANIFEST
    done: list[str] = []
    if mpath.is_file():
        try:
            old = json.loads(mpath.read_text())
        except (OSError, ValueError):
            old = None
        same = (isinstance(old, dict) and old.get("format") == STORE_FORMAT and old.get("digest") == digest
                and old.get("shards") == names)
        if same:
            done = [s for s in old.get("done", []) if s in names and (folder / s).is_file()
                    and _shard_digest(pq, folder / s) == digest]
    else:
        others = [p.name for p in folder.iterdir() if not (p.name.startswith("part-") and p.suffix == ".parquet")]
        if others:
            raise DataDietError(f"score store {str(folder)!r} is a folder holding other files ({', '.join(sorted(others)[:3])}"
                                f"); give an empty or new folder")
    for p in folder.glob("part-*.parquet"):  # shards of another content or another plan
        if p.name not in done:
            p.unlink(missing_ok=True)

    manifest = {"format": STORE_FORMAT, "digest": digest, "n": n, "shard_rows": shard_rows, "shards": names,
                "done": list(done), "complete": False, "columns": _columns(seeds, labels is not None),
                "provenance": prov, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json_atomic(mpath, manifest)
    for k, name in enumerate(names):
        if name in done:
            continue
        lo, hi = k * shard_rows, min(n, (k + 1) * shard_rows)
        cols: dict[str, Any] = {ID_COL: pa.array(ids[lo:hi], type=pa.int64()),
                                SCORE_COL: pa.array(scores[lo:hi], type=pa.float64())}
        if labels is not None:
            cols[LABEL_COL] = pa.array(labels[lo:hi], type=pa.int64())
        for j, s in enumerate(seeds):
            cols[seed_column(s)] = pa.array(per_seed[j, lo:hi], type=pa.float64())
        meta = {"format": STORE_FORMAT, "digest": digest, "n": n, "shard": k, "shards": len(names),
                "first_row": lo, "rows": hi - lo, **prov}
        table = pa.table(cols).replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
        _write_shard(pq, table, folder / name)
        manifest["done"].append(name)
        write_json_atomic(mpath, manifest)
    manifest["complete"] = True
    write_json_atomic(mpath, manifest)
    return folder


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
    pa, pq = _arrow()
    p = Path(path)
    if not p.exists():
        raise DataDietError(f"score store {str(p)!r} does not exist; create one with ScoreResult.save_parquet")
    if p.is_dir():
        mpath = p / MANIFEST
        if not mpath.is_file():
            hint = f"give its scores file {str(p / 'scores.json')!r}" if (p / "scores.json").is_file() else _FIX
            raise DataDietError(f"{str(p)!r} is not a datadiet score store (no {MANIFEST} in it); {hint}")
        try:
            m = json.loads(mpath.read_text())
        except (OSError, ValueError) as e:
            raise _fail(mpath, f"it is not valid JSON ({e})") from None
        if not isinstance(m, dict) or m.get("format") != STORE_FORMAT:
            got = m.get("format") if isinstance(m, dict) else None
            raise _fail(mpath, f"format {got!r}, expected {STORE_FORMAT!r}")
        shards = m.get("shards")
        if not isinstance(shards, list) or not shards or not all(isinstance(s, str) and "/" not in s for s in shards):
            raise _fail(mpath, "'shards' must be a non-empty list of shard file names")
        done = m.get("done", [])
        if m.get("complete") is not True or not isinstance(done, list) or set(shards) - set(done):
            k = len(set(shards) & set(done)) if isinstance(done, list) else 0
            raise DataDietError(f"score store {str(p)!r} is incomplete: {k} of {len(shards)} shards written (the "
                                "writer was interrupted); rerun it with the same scores to resume")
        files = [p / s for s in shards]
        digest, n = m.get("digest"), m.get("n")
    else:
        files, digest, n, m = [p], None, None, None

    ids_parts, score_parts, label_parts, seed_parts = [], [], [], []
    prov: dict[str, Any] | None = None
    c_prov: _Checked | None = None
    for k, f in enumerate(files):
        if not f.is_file():
            raise _fail(f, "the shard is missing (the manifest lists it)")
        try:
            table = pq.read_table(f)
        except Exception as e:  # noqa: BLE001 - pyarrow's errors: one clear message
            raise _fail(f, f"it is not a readable Parquet file ({type(e).__name__}: {str(e).strip()[:200]})") from None
        raw = (table.schema.metadata or {}).get(META_KEY)
        try:
            meta = json.loads(raw) if raw is not None else None
        except ValueError:
            meta = None
        if not isinstance(meta, dict) or meta.get("format") != STORE_FORMAT:
            raise _fail(f, f"its Parquet metadata holds no {STORE_FORMAT!r} provenance under key 'datadiet'")
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
