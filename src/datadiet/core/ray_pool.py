"""Per-example passes (scoring forwards, embeddings) on Ray Data, resumable shard by shard.

A *pass* runs one model over every row of a pool and returns one value (or vector) per row. The
computation on a batch is a *kernel*: a picklable callable ``make_kernel(model) -> kernel`` with
``kernel(batch) -> {column: array with one row per example}``, where ``batch`` is what the pool's
collator makes of a list of rows. The single-process path (the reference, and the default) calls
the same kernel in a loop; :func:`ray_pass` runs it in Ray Data's stateful actors:

- the pool becomes a Ray Dataset with one block per *shard* (at most ``shard_rows`` consecutive
  positions of ``order``, whole batches, and at least :data:`MIN_SHARDS` shards when the pool has
  that many batches, so that every actor gets work; the rows are the pool's own dicts:
  ``example_id``, token ids, labels), read with
  ``map_batches`` over an actor pool of ``workers`` actors (``batch_size`` rows per call; the model
  is put in the object store once and each actor loads it once; GPU actors when Ray sees GPUs);
- results stream back to the driver, which writes each finished shard atomically as a Parquet
  file keyed by ``example_id`` (plus the pool position) in ``work_dir``; a rerun of the same pass
  (same ``work_dir``, same ``key``) reads the finished shards and sends only the others to Ray, so
  a killed job loses at most the shards that were in flight.

With ``shard_rows`` a multiple of ``batch_size`` and the order preserved, an actor sees exactly the
batches the single-process loop makes, so both paths compute the same numbers (up to the thread
count of the matrix kernels; tested).

Ray is started on first use: ``ray.init(num_cpus=<this machine's cores>)`` without a dashboard,
or joined at ``address`` (``RayEngine.address``, else Ray's own ``RAY_ADDRESS``). Nothing here is
imported unless a pass asks for Ray; a missing Ray is one error naming the extra to install.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._validate import check_int
from ..errors import ConfigError, DataDietError
from .files import cache_dir, write_json_atomic
from .filter import ID_KEY

log = logging.getLogger(__name__)

POSITION = "position"  # the pool position of a row, in every shard beside ID_KEY
WORK_FORMAT = "datadiet.raypass/1"
MIN_SHARDS = 16  # a pool is cut into at least this many shards (Ray blocks) when it has enough batches
INSTALL_HINT = "engine 'ray' needs Ray Data; install it with: pip install 'datadiet[ray]'"


@dataclass(frozen=True)
class RayEngine:
    """How a pass runs on Ray: ``workers`` actors with ``threads`` torch threads each (default: this
    machine's cores shared out), shards of ``shard_rows`` rows, at ``address`` (a running cluster;
    default ``RAY_ADDRESS``, else a local Ray started with this machine's cores). ``gpus``: one GPU
    per actor (``None``: when the cluster has GPUs)."""

    workers: int = 1
    threads: int | None = None
    shard_rows: int = 4096
    address: str | None = None
    gpus: bool | None = None

    def __post_init__(self) -> None:
        check_int("ray workers", self.workers, min=1)
        if self.threads is not None:
            check_int("ray threads", self.threads, min=1)
        check_int("ray shard_rows", self.shard_rows, min=1)
        if self.address is not None and (not isinstance(self.address, str) or not self.address.strip()):
            raise ConfigError(f"ray address must be a non-empty string such as 'ray://host:10001' or 'auto', "
                              f"got {self.address!r}")

    def threads_per_worker(self) -> int:
        return self.threads if self.threads is not None else max(1, (os.cpu_count() or 1) // self.workers)

    def summary(self) -> dict[str, Any]:
        return {**asdict(self), "threads": self.threads_per_worker()}


ENGINES = ("local", "ray")


def ray_engine(engine: str, *, workers: int = 1, threads: int | None = None, address: str | None = None,
               shard_rows: int | None = None) -> RayEngine | None:
    """``None`` for the single-process path (``engine='local'``), else a checked :class:`RayEngine`
    (and Ray imported, so a missing Ray fails here, before any work)."""
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "local":
        return None
    import_ray()
    return RayEngine(workers=workers, threads=threads, address=address,
                     **({} if shard_rows is None else {"shard_rows": shard_rows}))


def _engine_check(name: str, v: Any) -> str:
    if v not in ENGINES:
        raise ConfigError(f"{name} must be one of {', '.join(ENGINES)}, got {v!r}")
    if v == "ray":
        import_ray()  # a missing Ray fails when the method is built, before any work
    return v


def engine_params() -> tuple:
    """The ``engine`` and ``ray_workers`` parameters (``core.params.Param``) of a method with an
    offline pass (data_diet's scoring forwards, INGENIOUS's embedding), declared here once."""
    from .params import Param, int_at_least

    return (Param("local", _engine_check, "'local' (this process; the reference) or 'ray': the per-example pass "
                  "on Ray Data actors (pip install 'datadiet[ray]'; RAY_ADDRESS joins a running cluster)"),
            Param(1, int_at_least(1), "engine='ray': actors, each loading the model once (one GPU each where the "
                  "cluster has GPUs); the machine's cores are shared out among them"))


def import_ray():
    """The ``ray`` module with Ray Data, or one error naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401 - the pass needs Ray Data, not only Ray core
    except ImportError as e:
        raise DataDietError(f"{INSTALL_HINT} ({e})") from None
    return ray


PROBE_TIMEOUT_S = 5.0


def probe_address(address: str, *, timeout_s: float = PROBE_TIMEOUT_S) -> None:
    """Fail fast when nothing listens at a ``host:port`` or ``ray://host:port`` cluster address.

    ``ray.init`` on an address where no cluster runs retries its connection for many minutes (seen
    here: still retrying after 5); one TCP connect, bounded by ``timeout_s``, turns that into one
    error naming the address. ``auto`` / ``local`` (Ray finds or starts the cluster itself) and
    addresses without a port are left to Ray."""
    import socket

    a = address.strip()
    if a in ("auto", "local"):
        return
    hostport = a.split("://", 1)[1] if "://" in a else a
    host, sep, port = hostport.rstrip("/").rpartition(":")
    if not sep or not port.isdigit():
        return
    host = host.strip("[]") or "127.0.0.1"
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return
    except OSError as e:
        why = "timed out" if isinstance(e, TimeoutError) else (e.strerror or type(e).__name__)
        raise DataDietError(f"no Ray cluster answers at {address!r} ({host}:{port}: {why} within {timeout_s:g} s); "
                            "start one there (`ray start --head`), fix --ray-address / RAY_ADDRESS, or unset it to "
                            "start a local Ray") from None


def ensure_ray(engine: RayEngine):
    """Ray, started (a local Ray with this machine's cores, no dashboard) or joined (``address``)."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    address = engine.address or os.environ.get("RAY_ADDRESS") or None
    kw: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                          "configure_logging": True}
    try:
        if address:
            probe_address(address)
            log.info("ray: joining the cluster at %s", address)
            ray.init(address=address, **kw)
        else:
            log.info("ray: starting a local Ray with %d CPUs", os.cpu_count() or 1)
            ray.init(num_cpus=os.cpu_count() or 1, **kw)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {address!r}" if address else "a local Ray"
        raise DataDietError(f"could not start or join {where}: {str(e).splitlines()[0][:300]}; check the address "
                            "(or unset RAY_ADDRESS to start a local Ray)") from None
    return ray


# ------------------------------------------------------------------------------------ the actor
class _PassActor:
    """One Ray Data actor: loads the model once, then runs the kernel on each batch of rows."""

    def __init__(self, model_box: list, make_kernel: Callable, collator: Callable, threads: int, gpu: bool) -> None:
        ray = import_ray()
        torch.set_num_threads(threads)
        model = model_box[0]
        if isinstance(model, ray.ObjectRef):
            model = ray.get(model)
        if gpu and torch.cuda.is_available():
            model = model.to("cuda")
        model.eval()
        self.kernel = make_kernel(model)
        self.collator = collator

    def __call__(self, table) -> dict[str, np.ndarray]:
        rows = table.to_pylist()
        pos = np.asarray([r.pop(POSITION) for r in rows], dtype=np.int64)
        out = {k: np.asarray(v) for k, v in self.kernel(self.collator(rows)).items()}
        out[POSITION] = pos
        out[ID_KEY] = np.asarray([r[ID_KEY] for r in rows], dtype=np.int64)
        return out


# -------------------------------------------------------------------------------- shard files
def _shard_path(work: Path, k: int) -> Path:
    return work / f"shard-{k:05d}.parquet"


def _write_shard(work: Path, k: int, cols: dict[str, np.ndarray]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrays = {}
    for name, v in cols.items():
        if v.ndim == 1:
            arrays[name] = pa.array(v)
        else:  # a vector per row: a fixed-size list column
            flat = pa.array(np.ascontiguousarray(v).reshape(-1))
            arrays[name] = pa.FixedSizeListArray.from_arrays(flat, int(np.prod(v.shape[1:])))
    dest = _shard_path(work, k)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    pq.write_table(pa.table(arrays), tmp)
    os.replace(tmp, dest)


def _read_shard(path: Path, positions: np.ndarray, ids: np.ndarray) -> dict[str, np.ndarray] | None:
    """A finished shard's columns sorted by position, or ``None`` (logged) when it does not hold exactly
    the rows ``positions`` with their example ids (``ids``: the whole pool's, by position)."""
    import pyarrow.parquet as pq

    try:
        t = pq.read_table(path)
        cols: dict[str, np.ndarray] = {}
        for name in t.column_names:
            c = t.column(name).combine_chunks()
            if hasattr(c, "list_size"):
                cols[name] = c.flatten().to_numpy(zero_copy_only=False).reshape(len(c), c.type.list_size)
            else:
                cols[name] = c.to_numpy(zero_copy_only=False)
    except Exception as e:  # noqa: BLE001 - a damaged shard is recomputed, never trusted
        log.warning("ray pass: ignoring unreadable shard %s (%s); recomputing it", path.name, e)
        return None
    order = np.argsort(cols.get(POSITION, np.zeros(0)), kind="stable")
    if (POSITION not in cols or ID_KEY not in cols or len(order) != len(positions)
            or not np.array_equal(cols[POSITION][order], np.sort(positions))):
        log.warning("ray pass: shard %s does not hold the rows it should; recomputing it", path.name)
        return None
    cols = {k: v[order] for k, v in cols.items()}
    if not np.array_equal(cols[ID_KEY], ids[cols[POSITION]]):
        log.warning("ray pass: shard %s holds other example ids; recomputing it", path.name)
        return None
    return cols


def _claim_work(work: Path, key: dict[str, Any]) -> None:
    """Use ``work`` for the pass ``key``: a folder left by another pass (another key) is cleared."""
    manifest = work / "manifest.json"
    want = {"format": WORK_FORMAT, "key": key}
    if manifest.exists():
        try:
            have = json.loads(manifest.read_text())
        except (OSError, ValueError):
            have = None
        if have == json.loads(json.dumps(want, default=str)):
            return
        log.info("ray pass: the shards in %s belong to another pass; starting it afresh", work)
        for old in work.glob("shard-*.parquet"):
            old.unlink(missing_ok=True)
    write_json_atomic(manifest, want)


# ------------------------------------------------------------------------------------ the pass
@dataclass
class PassStats:
    """What one pass did: shards in all, shards read back from ``work_dir``, rows computed now, seconds."""

    shards: int = 0
    resumed_shards: int = 0
    rows_computed: int = 0
    seconds: float = 0.0


def ray_pass(
    make_kernel: Callable[[torch.nn.Module], Callable[[dict], dict[str, Any]]],
    model: torch.nn.Module,
    dataset,
    *,
    collator: Callable[[list], dict[str, torch.Tensor]],
    batch_size: int,
    engine: RayEngine,
    order: Sequence[int] | None = None,
    work_dir: str | Path | None = None,
    key: dict[str, Any] | None = None,
    progress: bool = False,
    desc: str = "ray pass",
    stats: PassStats | None = None,
) -> dict[str, np.ndarray]:
    """Run ``make_kernel(model)`` over every row of ``dataset`` on Ray; return each output column
    with its rows in dataset order (positions ``0..n-1``).

    ``order``: the order in which rows are batched (default: dataset order); shards are consecutive
    runs of it. ``work_dir`` (with ``key``, what identifies the pass: model weights, data, settings):
    finished shards are written there and a rerun with the same key resumes from them; ``None``: no
    resuming. ``stats`` is filled in with what the pass did."""
    t0 = time.perf_counter()
    batch_size = check_int("batch_size", batch_size, min=1)
    n = len(dataset)
    if n == 0:
        raise DataDietError("nothing to run: the pool is empty")
    order_a = np.arange(n, dtype=np.int64) if order is None else np.asarray(order, dtype=np.int64)
    if order_a.shape != (n,) or not np.array_equal(np.sort(order_a), np.arange(n)):
        raise DataDietError("order must be a permutation of the dataset's positions")
    # whole batches per shard (an actor then sees the batches the single-process loop makes), and at
    # least MIN_SHARDS shards where the pool allows: a shard is one Ray block, the unit an actor takes,
    # so fewer shards than actors would leave actors idle
    cap = max(batch_size, engine.shard_rows - engine.shard_rows % batch_size)
    rows = min(cap, batch_size * max(1, -(-n // (MIN_SHARDS * batch_size))))
    shards = [order_a[s : s + rows] for s in range(0, n, rows)]
    ids = np.asarray([int(dataset[int(i)][ID_KEY]) for i in range(n)], dtype=np.int64)
    st = stats if stats is not None else PassStats()
    st.shards = len(shards)

    done: dict[int, dict[str, np.ndarray]] = {}
    work = Path(work_dir) if work_dir is not None else None
    if work is not None:
        _claim_work(work, {**(key or {}), "n": n, "shard_rows": rows, "batch_size": batch_size,
                           "order": _order_digest(order_a)})
        for k, pos in enumerate(shards):
            p = _shard_path(work, k)
            if p.exists():
                got = _read_shard(p, pos, ids)
                if got is not None:
                    done[k] = got
        st.resumed_shards = len(done)
        if done:
            log.info("ray pass: %d of %d shards already finished in %s; computing the other %d",
                     len(done), len(shards), work, len(shards) - len(done))
    todo = [k for k in range(len(shards)) if k not in done]
    if todo:
        _run_shards(make_kernel, model, dataset, shards, todo, done, ids=ids, collator=collator,
                    batch_size=batch_size, engine=engine, work=work, progress=progress, desc=desc, stats=st)
    out = _assemble(done, n)
    st.seconds = time.perf_counter() - t0
    return out


def _order_digest(order: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(order, dtype=np.int64).tobytes()).hexdigest()[:16]


def _run_shards(make_kernel, model, dataset, shards, todo, done, *, ids, collator, batch_size, engine, work,
                progress, desc, stats) -> None:
    import pyarrow as pa

    ray = ensure_ray(engine)
    import ray.data as rd

    ctx = rd.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False  # one bar, ours
    # its per-pass INFO lines, the bar notice, and its ERROR lines for a failed actor (re-raised below, in one line)
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)
    tables = []
    for k in todo:
        rows = []
        for p in shards[k].tolist():
            r = dict(dataset[int(p)])
            r[POSITION] = int(p)
            rows.append(r)
        tables.append(pa.Table.from_pylist(rows))
    ds = rd.from_arrow(tables)
    gpu = engine.gpus if engine.gpus is not None else bool(ray.cluster_resources().get("GPU", 0))
    cpu_model = model if next(model.parameters()).device.type == "cpu" else _cpu_copy(model)
    box = [ray.put(cpu_model)]
    threads = engine.threads_per_worker()
    log.info("ray pass (%s): %d rows in %d shards on %d actor(s) x %d thread(s)%s", desc,
             sum(len(shards[k]) for k in todo), len(todo), engine.workers, threads, " with a GPU each" if gpu else "")
    with warnings.catch_warnings():  # Ray 2.60 warns that remote args will move; pinned, so not yet
        warnings.simplefilter("ignore", DeprecationWarning)
        mapped = ds.map_batches(
            _PassActor, fn_constructor_args=(box, make_kernel, collator, threads, gpu), batch_size=batch_size,
            batch_format="pyarrow", compute=rd.ActorPoolStrategy(size=engine.workers), num_cpus=threads,
            num_gpus=1 if gpu else 0, max_restarts=0)  # a lost actor fails the pass (the rerun resumes)
    shard_of = np.empty(len(ids), dtype=np.int64)
    for k in todo:
        shard_of[shards[k]] = k
    pending: dict[int, list[dict[str, np.ndarray]]] = {k: [] for k in todo}
    filled = {k: 0 for k in todo}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(shards[k]) for k in todo), unit="ex", desc=desc, leave=False, disable=None)
    try:
        for batch in mapped.iter_batches(batch_size=None, batch_format="numpy"):
            pos = np.asarray(batch[POSITION], dtype=np.int64)
            owner = shard_of[pos]
            for k in np.unique(owner).tolist():
                sel = owner == k
                pending[k].append({c: np.asarray(v)[sel] for c, v in batch.items()})
                filled[k] += int(sel.sum())
                if filled[k] == len(shards[k]):
                    cols = _concat(pending.pop(k))
                    srt = np.argsort(cols[POSITION], kind="stable")
                    cols = {c: v[srt] for c, v in cols.items()}
                    if work is not None:
                        _write_shard(work, k, cols)
                    done[k] = cols
            stats.rows_computed += len(pos)
            if bar is not None:
                bar.update(len(pos))
    except Exception as e:  # noqa: BLE001 - a failure inside an actor comes back wrapped by Ray
        raise DataDietError(f"the Ray pass ({desc}) failed: {_root_message(e)}"
                            + (f"; {len(done)} finished shard(s) are kept in {work} and a rerun resumes from them"
                               if work is not None else "")) from e
    finally:
        if bar is not None:
            bar.close()
    missing = [k for k in todo if k not in done]
    if missing:
        raise DataDietError(f"the Ray pass ({desc}) returned no results for {len(missing)} shard(s)")


_RAISED = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)): (.+)$")


def _root_message(e: BaseException) -> str:
    """The one-line message of the error behind a failed pass. Ray sends an actor's exception back as
    text inside its own (a task error wrapping a user-code error), so the first ``Name: message``
    line there that Ray did not raise itself is the cause."""
    for line in str(e).splitlines():
        m = _RAISED.match(line.strip())
        if m and not m.group(1).startswith("ray."):
            name = m.group(1).rsplit(".", 1)[-1]
            return m.group(2)[:400] if name in ("DataDietError", "ConfigError") else f"{name}: {m.group(2)[:400]}"
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[-1][:400] if lines else ''}"


def _cpu_copy(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model).to("cpu")


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    keys = set(parts[0])
    for p in parts[1:]:
        keys &= set(p)  # a column missing from any batch (e.g. head GraNd found unavailable) is dropped
    return {k: np.concatenate([p[k] for p in parts]) for k in sorted(keys)}


def _assemble(done: dict[int, dict[str, np.ndarray]], n: int) -> dict[str, np.ndarray]:
    parts = [done[k] for k in sorted(done)]
    cols = _concat(parts)
    pos = cols.pop(POSITION)
    cols.pop(ID_KEY, None)
    if len(pos) != n or not np.array_equal(np.sort(pos), np.arange(n)):
        raise DataDietError(f"the Ray pass returned {len(pos)} rows for {n} examples")
    out = {}
    for k, v in cols.items():
        a = np.empty_like(v)
        a[pos] = v
        out[k] = a
    return out


def work_dir_for(kind: str, key: dict[str, Any]) -> Path:
    """The folder under the user cache where the pass ``key`` keeps its finished shards."""
    from .cache import key_digest

    return cache_dir("ray_work") / kind / key_digest(key, version=1)


__all__ = ["RayEngine", "ENGINES", "ray_engine", "import_ray", "ensure_ray", "ray_pass", "PassStats", "work_dir_for",
           "INSTALL_HINT", "POSITION"]
