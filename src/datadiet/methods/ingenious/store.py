"""The Parquet embedding store: one vector per example, keyed by example id, written resumably.

Layout (``Embeddings.save_parquet(folder)``, or ``datadiet convert`` from an embedding cache entry)::

    folder/
      manifest.json          format "datadiet.embeddings-store/1": the planned shards, the ones done,
                             the content digest, the dimension, the stored dtype and the provenance
      part-00000.parquet     rows 0 .. shard_rows-1
      ...

Every shard has the columns ``example_id`` (int64) and ``embedding`` (a fixed-size list of ``dim``
float32, or float16 with ``dtype="float16"``, which halves the store and its memory when read),
and carries the provenance (the embedding key: source, weights or encoder, layer, data fingerprint;
the seconds the embedding cost) under the schema metadata key ``datadiet``.
``datasets.Dataset.from_parquet("folder/*.parquet")`` reads it as a table with an ``embedding``
column. Written through :mod:`datadiet.core.parquet` (atomic shards, resumable); read back with
every shard checked (unique ids, one dimension, finite values, the digest) and returned as
:class:`~datadiet.methods.ingenious.embeddings.Embeddings` rows (float32 in memory unless asked).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ...core.parquet import META_KEY, arrow, read_manifest, read_shard, write_shards
from ...errors import DataDietError

STORE_FORMAT = "datadiet.embeddings-store/1"
SHARD_ROWS = 200_000  # 200k x 384 float32 = 307 MB per shard at most in memory while writing
ID_COL, VEC_COL = "example_id", "embedding"
DTYPES = ("float32", "float16")
_FIX = "recreate it with Embeddings.save_parquet or `datadiet convert`"


def _fail(path: Path, fault: str) -> DataDietError:
    return DataDietError(f"embedding store file {str(path)!r} is damaged: {fault}; {_FIX}")


def content_digest(ids: np.ndarray, vectors: np.ndarray, prov: dict[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(str(vectors.shape).encode() + str(vectors.dtype).encode())
    h.update(np.ascontiguousarray(ids, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(vectors).tobytes())
    h.update(json.dumps(prov, sort_keys=True).encode())
    return h.hexdigest()


def write_embedding_store(ids: np.ndarray, vectors: np.ndarray, folder: str | Path, *, key: dict[str, Any],
                          cost_s: float, dtype: str = "float32", shard_rows: int = SHARD_ROWS) -> Path:
    """Write ``vectors[i]`` (the embedding of example ``ids[i]``) as an embedding store in ``folder``.

    An interrupted write rerun with the same content resumes; ``dtype="float16"`` stores half-size rows
    (values beyond float16's range are refused rather than turned into infinities).
    """
    pa, _pq = arrow()
    if dtype not in DTYPES:
        raise DataDietError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    ids = np.asarray(ids)
    vectors = np.asarray(vectors)
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise DataDietError(f"ids must be a 1-D array of integer example ids, got shape {ids.shape}, dtype {ids.dtype}")
    if vectors.ndim != 2 or vectors.shape[0] != len(ids) or vectors.shape[1] == 0 or vectors.dtype.kind not in "fiu":
        raise DataDietError(f"vectors must be a [n, d] array of numbers with one row per id ({len(ids)}), "
                            f"got shape {vectors.shape}, dtype {vectors.dtype}")
    if len(np.unique(ids)) != len(ids):
        raise DataDietError("ids repeat: an embedding store holds one vector per example")
    if not np.isfinite(vectors).all():
        raise DataDietError("vectors hold NaN or infinite values; an embedding store holds finite vectors only")
    if dtype == "float16" and np.abs(vectors).max(initial=0.0) > np.finfo(np.float16).max:
        raise DataDietError("vectors hold values beyond float16's range (65504); store them with dtype='float32'")
    ids = ids.astype(np.int64, copy=False)
    vec = np.ascontiguousarray(vectors, dtype=np.dtype(dtype))
    n, dim = vec.shape
    prov = json.loads(json.dumps({"key": key, "cost_s": float(cost_s)}, default=str))
    digest = content_digest(ids, vec, prov)
    value_type = pa.float16() if dtype == "float16" else pa.float32()

    def table(k: int, shards: int, lo: int, hi: int):
        flat = pa.array(vec[lo:hi].reshape(-1), type=value_type)
        cols = {ID_COL: pa.array(ids[lo:hi], type=pa.int64()), VEC_COL: pa.FixedSizeListArray.from_arrays(flat, dim)}
        meta = {"format": STORE_FORMAT, "digest": digest, "n": n, "dim": dim, "dtype": dtype, "shard": k,
                "shards": shards, "first_row": lo, "rows": hi - lo, **prov}
        return pa.table(cols).replace_schema_metadata({META_KEY: json.dumps(meta).encode()})

    return write_shards(folder, fmt=STORE_FORMAT, what="embedding store", digest=digest, n=n, shard_rows=shard_rows,
                        manifest={"dim": dim, "dtype": dtype, "columns": [ID_COL, VEC_COL], "provenance": prov},
                        table=table)


def read_embedding_store(path: str | Path, *, dtype: str = "float32") -> dict[str, Any]:
    """``{"ids", "vectors", "key", "cost_s", "stored_dtype"}`` of a store folder (or a one-shard file), checked.

    ``vectors`` come back as ``dtype`` (float32 by default, whatever was stored; ``"float16"`` keeps a
    float16 store at half the memory).
    """
    pa, pq = arrow()
    if dtype not in DTYPES:
        raise DataDietError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    p = Path(path)
    if not p.exists():
        raise DataDietError(f"embedding store {str(p)!r} does not exist; create one with Embeddings.save_parquet or "
                            "`datadiet convert CACHE_ENTRY.npz --out FOLDER`")
    if p.is_dir():
        m = read_manifest(p, fmt=STORE_FORMAT, what="embedding store", fail=_fail, no_manifest_hint=_FIX)
        files, digest = [p / s for s in m["shards"]], m.get("digest")
    else:
        files, digest, m = [p], None, None
    ids_parts, vec_parts = [], []
    first: dict[str, Any] | None = None
    for k, f in enumerate(files):
        table, meta = read_shard(pq, f, fmt=STORE_FORMAT, fail=_fail)
        if m is None:
            if meta.get("shards") != 1:
                raise DataDietError(f"{str(f)!r} is shard {meta.get('shard')} of {meta.get('shards')} of an embedding "
                                    "store; give the store's folder instead")
            digest = meta.get("digest")
        elif meta.get("digest") != digest or meta.get("shard") != k:
            raise _fail(f, f"it is not shard {k} of this store (its digest or shard number differs from the manifest's)")
        here = {x: meta.get(x) for x in ("key", "cost_s", "dim", "dtype", "n")}
        if first is None:
            first = here
        elif here != first:
            raise _fail(f, "its provenance differs from the first shard's")
        for col in (ID_COL, VEC_COL):
            if col not in table.column_names:
                raise _fail(f, f"column {col!r} missing")
        idc, vc = table.column(ID_COL), table.column(VEC_COL)
        if idc.null_count or vc.null_count:
            raise _fail(f, "it holds missing values")
        if not pa.types.is_integer(idc.type):
            raise _fail(f, f"column {ID_COL!r} must hold integers, got {idc.type}")
        vt = vc.type
        if not pa.types.is_fixed_size_list(vt) or not pa.types.is_floating(vt.value_type):
            raise _fail(f, f"column {VEC_COL!r} must be a fixed-size list of floats, got {vt}")
        if vt.list_size != meta.get("dim"):
            raise _fail(f, f"its vectors have {vt.list_size} dimensions, its metadata says {meta.get('dim')}")
        arr = vc.combine_chunks()
        vals = arr.values.to_numpy(zero_copy_only=False)
        if arr.values.null_count:
            raise _fail(f, "it holds missing vector entries")
        ids_parts.append(np.asarray(idc.to_numpy(), dtype=np.int64))
        vec_parts.append(vals.reshape(len(arr), vt.list_size))
    assert first is not None
    ids = np.concatenate(ids_parts)
    stored = first["dtype"] if first["dtype"] in DTYPES else None
    if stored is None:
        raise _fail(files[0], f"'dtype' is {first['dtype']!r}, not one of {', '.join(DTYPES)}")
    vectors = np.concatenate(vec_parts).astype(np.dtype(stored), copy=False)
    where = files[0] if m is None else p / "manifest.json"
    if first["n"] != len(ids):
        raise _fail(where, f"'n' is {first['n']!r} but the shards hold {len(ids)} rows")
    vals, counts = np.unique(ids, return_counts=True)
    if len(vals) != len(ids):
        raise _fail(where, f"{ID_COL!r} repeats {int((counts > 1).sum())} ids (e.g. {[int(i) for i in vals[counts > 1][:5]]})")
    if not np.isfinite(vectors).all():
        raise _fail(where, "its vectors hold NaN or infinite values")
    prov = {"key": first["key"], "cost_s": first["cost_s"]}
    if digest is not None and content_digest(ids, vectors, prov) != digest:
        raise _fail(where, "its rows do not match the digest they were written with (a shard was changed)")
    if not isinstance(first["key"], dict) or not isinstance(first["cost_s"], (int, float)):
        raise _fail(where, "its provenance needs a 'key' mapping and a number 'cost_s'")
    return {"ids": ids, "vectors": vectors.astype(np.dtype(dtype), copy=False), "key": first["key"],
            "cost_s": float(first["cost_s"]), "stored_dtype": stored}


def read_npz_entry(path: str | Path) -> dict[str, Any]:
    """The ids, vectors, key and cost of one embedding cache entry (``.npz``), for conversion to a store."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            vectors, ids, cost = z["vectors"], z["ids"], float(z["cost_s"])
            meta = str(z["meta"]) if "meta" in z.files else "{}"
    except FileNotFoundError:
        raise DataDietError(f"embedding cache entry {str(p)!r} does not exist") from None
    except Exception as e:  # noqa: BLE001 - any unreadable entry: one message
        raise DataDietError(f"{str(p)!r} is not a datadiet embedding cache entry ({type(e).__name__}: "
                            f"{str(e).strip()[:200]}); give a .npz from the embeddings cache folder") from None
    try:
        key = json.loads(meta)
    except ValueError:
        key = None
    if not isinstance(key, dict):
        raise DataDietError(f"{str(p)!r} holds no embedding key in its 'meta' field; it is not a datadiet embedding "
                            "cache entry")
    return {"ids": ids, "vectors": vectors, "key": key, "cost_s": cost}
