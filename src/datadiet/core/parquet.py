"""Folders of Parquet shards written resumably: what the score store and the embedding store share.

A store folder holds ``manifest.json`` (its ``format``, the content ``digest``, the planned
``shards``, the ones ``done`` and whether it is ``complete``) and ``part-00000.parquet``... Each
shard is written atomically (``part-k.parquet.tmp`` then ``os.replace``) and the manifest is
rewritten atomically after each one, so a writer interrupted at any point and rerun with the same
content keeps the shards it finished (each is checked against the digest in its own schema
metadata) and writes only the rest. Leftover ``.tmp`` files are removed and never read.

pyarrow is imported only inside the functions here (``pip install 'datadiet[hf]'``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import DataDietError, missing_extra
from .files import ensure_dir, write_json_atomic

MANIFEST = "manifest.json"
META_KEY = b"datadiet"


def arrow():
    """``(pyarrow, pyarrow.parquet)``, or the one-line "install datadiet[hf]" error."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise missing_extra("pyarrow", "hf") from None
    return pa, pq


def shard_name(k: int) -> str:
    return f"part-{k:05d}.parquet"


def shard_names(n: int, shard_rows: int) -> list[str]:
    return [shard_name(k) for k in range((n + shard_rows - 1) // shard_rows)]


def write_table_atomic(pq, table, dest: Path) -> None:
    """Write one shard atomically: ``dest.tmp`` then ``os.replace`` onto ``dest``."""
    tmp = dest.with_name(dest.name + ".tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def shard_digest(pq, path: Path) -> str | None:
    """The digest in a shard's schema metadata (None when it cannot be read)."""
    try:
        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta[META_KEY]).get("digest")
    except Exception:  # noqa: BLE001 - any unreadable shard is simply rewritten
        return None


def write_shards(folder: str | Path, *, fmt: str, what: str, digest: str, n: int, shard_rows: int,
                 manifest: dict[str, Any], table: Callable[[int, int, int, int], Any]) -> Path:
    """Write (or resume writing) the store of ``n`` rows in ``folder``; ``table(k, shards, lo, hi)`` builds
    shard ``k`` of ``shards`` (rows ``lo:hi``) as a pyarrow table, its schema metadata already set.

    A store of the same ``fmt``, ``digest`` and shard plan keeps its finished shards; one of other content
    is replaced (its shards removed); a folder holding anything else is refused.
    """
    _pa, pq = arrow()
    if int(shard_rows) < 1:
        raise DataDietError(f"shard_rows must be >= 1, got {shard_rows!r}")
    if n == 0:
        raise DataDietError(f"cannot write a {what} of no examples")
    folder = ensure_dir(folder, what=what)
    names = shard_names(n, int(shard_rows))
    for tmp in folder.glob("*.parquet.tmp"):  # left by an interrupted writer: never a finished shard
        tmp.unlink(missing_ok=True)
    mpath = folder / MANIFEST
    done: list[str] = []
    if mpath.is_file():
        try:
            old = json.loads(mpath.read_text())
        except (OSError, ValueError):
            old = None
        same = (isinstance(old, dict) and old.get("format") == fmt and old.get("digest") == digest
                and old.get("shards") == names)
        if same:
            done = [s for s in old.get("done", []) if s in names and (folder / s).is_file()
                    and shard_digest(pq, folder / s) == digest]
    else:
        others = [p.name for p in folder.iterdir() if not (p.name.startswith("part-") and p.suffix == ".parquet")]
        if others:
            raise DataDietError(f"{what} {str(folder)!r} is a folder holding other files ({', '.join(sorted(others)[:3])}"
                                f"); give an empty or new folder")
    for p in folder.glob("part-*.parquet"):  # shards of another content or another plan
        if p.name not in done:
            p.unlink(missing_ok=True)

    m = {"format": fmt, "digest": digest, "n": n, "shard_rows": int(shard_rows), "shards": names, "done": list(done),
         "complete": False, **manifest, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json_atomic(mpath, m)
    for k, name in enumerate(names):
        if name in done:
            continue
        lo, hi = k * int(shard_rows), min(n, (k + 1) * int(shard_rows))
        write_table_atomic(pq, table(k, len(names), lo, hi), folder / name)
        m["done"].append(name)
        write_json_atomic(mpath, m)
    m["complete"] = True
    write_json_atomic(mpath, m)
    return folder


def read_manifest(p: Path, *, fmt: str, what: str, fail: Callable[[Path, str], DataDietError],
                  no_manifest_hint: str) -> dict[str, Any]:
    """The checked manifest of the store folder ``p``: complete, of format ``fmt``, with a shard list."""
    mpath = p / MANIFEST
    if not mpath.is_file():
        raise DataDietError(f"{str(p)!r} is not a datadiet {what} (no {MANIFEST} in it); {no_manifest_hint}")
    try:
        m = json.loads(mpath.read_text())
    except (OSError, ValueError) as e:
        raise fail(mpath, f"it is not valid JSON ({e})") from None
    if not isinstance(m, dict) or m.get("format") != fmt:
        got = m.get("format") if isinstance(m, dict) else None
        raise fail(mpath, f"format {got!r}, expected {fmt!r}")
    shards = m.get("shards")
    if not isinstance(shards, list) or not shards or not all(isinstance(s, str) and "/" not in s for s in shards):
        raise fail(mpath, "'shards' must be a non-empty list of shard file names")
    done = m.get("done", [])
    if m.get("complete") is not True or not isinstance(done, list) or set(shards) - set(done):
        k = len(set(shards) & set(done)) if isinstance(done, list) else 0
        raise DataDietError(f"{what} {str(p)!r} is incomplete: {k} of {len(shards)} shards written (the "
                            "writer was interrupted); rerun it with the same content to resume")
    return m


def read_shard(pq, f: Path, *, fmt: str, fail: Callable[[Path, str], DataDietError]) -> tuple[Any, dict[str, Any]]:
    """``(table, provenance)`` of one shard file, or ``fail``'s error naming the fault."""
    if not f.is_file():
        raise fail(f, "the shard is missing (the manifest lists it)")
    try:
        table = pq.read_table(f)
    except Exception as e:  # noqa: BLE001 - pyarrow's errors: one clear message
        raise fail(f, f"it is not a readable Parquet file ({type(e).__name__}: {str(e).strip()[:200]})") from None
    raw = (table.schema.metadata or {}).get(META_KEY)
    try:
        meta = json.loads(raw) if raw is not None else None
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise fail(f, f"its Parquet metadata holds no {fmt!r} provenance under key 'datadiet'")
    return table, meta
