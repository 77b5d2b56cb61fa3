"""Scoring runs: fine-tune S fresh copies of the model for t steps, score every example, average.

This is the expensive half of the data diet (Fayyaz et al. 2022): the scores are only reliable
after at least one epoch of fine-tuning, so each of the S independent runs (its own seed: head
initialisation and data order) trains for ``steps`` optimizer steps and then scores the whole
training set (:mod:`datadiet.methods.data_diet.scores`). The mean over the runs is the score.

A scoring run is *the first ``steps`` steps of the run the training settings describe*: it is
:func:`datadiet.loop.fit` with ``stop_after_steps=steps`` (same optimizer, data order for its seed
and LR schedule, whose horizon is ``settings.epochs`` epochs, or ``steps`` if that is longer). So
with ``steps`` equal to a full run's steps it is exactly that run (tested).

Cost: each run costs ``steps * batch_size`` training examples (3 units each) plus one scoring
forward per example (1 unit; a per-example backward too for full GraNd). The wall-clock of every
run is measured and returned. Runs are cached on disk, one entry per (seed, score), keyed by the
model name, a hash of the tokenized training data (ids, tokens, labels), the step count and every
training setting; an entry stores the wall-clock it cost when it was computed, and a cache hit
reports that original cost (``cost_s``) next to what was spent now (``spent_s``).

Several processes (``ranks``): the S runs are shared out round-robin (run ``j`` on rank
``j % world_size``), each trained and scored locally exactly as one process would, and gathered so
that every rank averages the same S score vectors; a rank reads and writes only its own runs' entries.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..._validate import check_choice, check_float, check_int
from ...errors import DataDietError
from ...core.files import write_json_atomic
from ...core.cache import NpzCache, fields_fingerprint, key_digest
from ...core.filter import ID_KEY
from ...core.selection import FormatFile
from .scores import SCORES, forward_scores, grand_scores, mean_over_runs

log = logging.getLogger(__name__)

SCORES_FORMAT = "datadiet.scores/1"
CACHE_VERSION = 1


@dataclass(frozen=True)
class TrainSettings:
    """The training settings of a scoring run (all of them enter the cache key)."""

    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup: float = 0.0
    schedule: str = "linear"
    schedule_by: str = "examples"
    max_grad_norm: float = 1.0
    fused_adamw: bool = True
    epochs: int = 1  # LR-schedule horizon of the run the scoring run is the start of
    bf16: bool = False
    task: str = "classification"
    pad_token_id: int = 0
    score_batch_size: int = 64
    grand_chunk_size: int = 8

    def __post_init__(self) -> None:
        check_int("batch_size", self.batch_size, min=1)
        check_float("lr", self.lr, min=0.0, min_open=True)
        check_choice("schedule", self.schedule, ("linear", "constant"))
        check_choice("schedule_by", self.schedule_by, ("examples", "steps"))
        check_int("epochs", self.epochs, min=1)
        check_int("score_batch_size", self.score_batch_size, min=1)
        check_int("grand_chunk_size", self.grand_chunk_size, min=1)

    @classmethod
    def from_context(cls, ctx, *, grand_chunk_size: int = 8) -> TrainSettings:
        """The training settings of a planning context (:class:`datadiet.core.method.PlanContext`)."""
        return cls(batch_size=ctx.batch_size, lr=ctx.lr, weight_decay=ctx.weight_decay, warmup=ctx.warmup,
                   schedule=ctx.schedule, schedule_by=ctx.schedule_by, max_grad_norm=ctx.max_grad_norm,
                   fused_adamw=ctx.fused_adamw, epochs=max(1, ctx.epochs), bf16=ctx.bf16, task=ctx.task,
                   pad_token_id=ctx.pad_token_id, score_batch_size=ctx.eval_batch_size,
                   grand_chunk_size=grand_chunk_size)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.bf16 else None


def steps_for_epochs(epochs: float, *, n: int, batch_size: int) -> int:
    """Optimizer steps in ``epochs`` (possibly fractional) passes over ``n`` examples."""
    return int(round(float(epochs) * math.ceil(n / batch_size)))


# ------------------------------------------------------------------------------ the training part
def train_steps(
    model: torch.nn.Module,
    dataset,
    *,
    collator: Callable[[list], dict[str, torch.Tensor]],
    steps: int,
    settings: TrainSettings,
    seed: int,
    progress: bool = False,
) -> int:
    """Train ``model`` for the first ``steps`` optimizer steps of the run ``settings`` describe
    (:func:`datadiet.loop.fit` with ``stop_after_steps``: its data order for ``seed``, optimizer and
    LR schedule over ``settings.epochs`` epochs); return the number of examples trained on."""
    from ...core.engine import StepEngine
    from ...loop import fit

    steps = check_int("steps", steps, min=0)
    if steps == 0:
        return 0
    s = settings
    engine = StepEngine(task=s.task, batch_size=s.batch_size, pad_token_id=s.pad_token_id,
                        autocast_dtype=s.autocast_dtype)
    was = model.training
    try:
        fit(model, dataset, engine=engine, collator=collator, epochs=s.epochs, lr=s.lr, weight_decay=s.weight_decay,
            warmup=s.warmup, schedule=s.schedule, schedule_by=s.schedule_by,
            max_grad_norm=s.max_grad_norm if s.max_grad_norm > 0 else None, fused_adamw=s.fused_adamw, seed=seed,
            stop_after_steps=steps, progress=progress, progress_desc=f"scoring run (seed {seed})")
    finally:
        model.train(was)
    return engine.counts.examples_backpropagated


# -------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class ScoreResult:
    """Scores of every training example, averaged over ``len(seeds)`` scoring runs.

    ``scores[i]`` belongs to the example at position ``i`` (stable id ``ids[i]``); ``per_seed`` holds
    each run's scores. ``cost_s`` is the wall-clock the runs cost when they were computed (summed
    over runs, cached ones included); ``spent_s`` is what this call spent; ``cached[j]`` says
    whether run ``j`` came from the cache.
    """

    kind: str
    ids: np.ndarray
    scores: np.ndarray
    per_seed: np.ndarray
    seeds: tuple[int, ...]
    steps: int
    cost_s: float
    spent_s: float = 0.0
    cached: tuple[bool, ...] = ()
    labels: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def reused_s(self) -> float:
        """The part of ``cost_s`` paid earlier (runs taken from the cache)."""
        costs = self.info.get("run_cost_s", [])
        return float(sum(c for c, hit in zip(costs, self.cached) if hit))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SCORES_FORMAT,
            "kind": self.kind,
            "seeds": [int(s) for s in self.seeds],
            "steps": int(self.steps),
            "cost_s": float(self.cost_s),
            "spent_s": float(self.spent_s),
            "cached": [bool(c) for c in self.cached],
            "n": len(self),
            "ids": [int(i) for i in self.ids],
            "labels": None if self.labels is None else [int(x) for x in self.labels],
            "scores": [float(x) for x in self.scores],
            "per_seed": [[float(x) for x in row] for row in self.per_seed],
            "info": self.info,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        write_json_atomic(p, self.to_dict(), indent=None)
        return p

    def save_parquet(self, folder: str | Path, *, shard_rows: int | None = None) -> Path:
        """Write these scores as a Parquet score store in ``folder`` (:mod:`.store`): shards keyed by
        ``example_id``, written atomically one by one; rerun after an interruption, it resumes.
        Needs pyarrow (``pip install 'datadiet[hf]'``)."""
        from .store import SHARD_ROWS, write_store

        return write_store(self, folder, shard_rows=SHARD_ROWS if shard_rows is None else shard_rows)

    @classmethod
    def load(cls, path: str | Path) -> ScoreResult:
        """The scores in a scores file, every field checked (a DataDietError naming the file and the
        fault otherwise): unique integer ids, one finite score per id, ``per_seed`` one row per seed.

        ``path`` may also be a Parquet score store folder (:meth:`save_parquet`) or one ``.parquet``
        file of a one-shard store; it is checked the same way and gives the same ScoreResult."""
        from .store import is_store_path, read_store

        if is_store_path(path):
            return cls(**read_store(path, kinds=tuple(SCORES)))
        f = FormatFile(path, fmt=SCORES_FORMAT, what="scores", command="score")
        kind = f.name("kind")
        if kind not in SCORES:
            raise f.fail(f"'kind' is {kind!r}, not one of {', '.join(SCORES)}")
        ids = f.ints("ids", unique=True)
        if len(ids) == 0:
            raise f.fail("it holds no examples ('ids' is empty)")
        n = f.d.get("n")
        if n is not None and n != len(ids):
            raise f.fail(f"'n' is {n!r} but it holds {len(ids)} ids")
        scores = f.numbers("scores", n=len(ids))
        seeds = f.ints("seeds")
        if len(seeds) == 0:
            raise f.fail("'seeds' is empty (a score is the mean of at least one scoring run)")
        per_seed = f.rows("per_seed", rows=len(seeds), n=len(ids), per="seeds")
        cached = f.bools("cached", default=[])
        if cached and len(cached) != len(seeds):
            raise f.fail(f"'cached' has {len(cached)} entries for {len(seeds)} 'seeds'")
        return cls(kind=kind, ids=ids, scores=scores, per_seed=per_seed, seeds=tuple(int(s) for s in seeds),
                   steps=f.integer("steps", min=0), cost_s=f.number("cost_s"), spent_s=f.number("spent_s", 0.0),
                   cached=tuple(cached), labels=f.ints("labels", n=len(ids), optional=True), info=f.mapping("info"))


# ---------------------------------------------------------------------------------------- cache
_DATA_FIELDS = (ID_KEY, "input_ids", "token_type_ids", "labels")


def data_fingerprint(dataset) -> str:
    """sha256 of the tokenized training data in order: ids, token ids, token types, labels."""
    return fields_fingerprint(dataset, _DATA_FIELDS)


class ScoreCache(NpzCache):
    """One ``.npz`` per (model, data, settings, steps, seed, score) under ``root``; atomic writes."""

    subdir, what, field, dtype = "scores", "score", "scores", np.float64
    ndim = 1  # one score per id; an entry of another shape is recomputed

    @staticmethod
    def key(base: dict[str, Any], *, kind: str, seed: int, steps: int) -> str:
        return key_digest({**base, "kind": kind, "seed": int(seed), "steps": int(steps)}, version=CACHE_VERSION)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    def get(self, key: str, ids: np.ndarray) -> tuple[np.ndarray, float] | None:
        return self._read(self.path(key), ids)

    def put(self, key: str, ids: np.ndarray, scores: np.ndarray, cost_s: float, meta: dict[str, Any]) -> None:
        self._write(self.path(key), ids, scores, cost_s, json.dumps(meta, default=str))


# ------------------------------------------------------------------------------- the whole thing
def compute_scores(
    *,
    kind: str,
    seeds: Sequence[int],
    steps: int,
    build_model: Callable[[int], torch.nn.Module],
    dataset,
    collator: Callable[[list], dict[str, torch.Tensor]],
    settings: TrainSettings,
    labels: np.ndarray | None = None,
    cache: ScoreCache | None = None,
    cache_base: dict[str, Any] | None = None,
    progress: bool = False,
    ranks=None,
    engine=None,
) -> ScoreResult:
    """Run (or take from ``cache``) one scoring run per seed and average their ``kind`` scores.

    ``build_model(seed)`` returns a fresh model (pretrained body, head initialised from ``seed``)
    on the device to use. ``cache_base`` identifies model, data and settings (see
    :func:`data_fingerprint`); caching is off when ``cache`` or ``cache_base`` is ``None``.
    Each run also stores the scores it gets for free (EL2N and head GraNd share one forward).

    ``ranks`` (several processes, :class:`datadiet.core.distributed.Ranks`; every rank calls this):
    run ``j`` belongs to rank ``j % world_size``, which trains and scores it exactly as one process
    would (a local :func:`datadiet.loop.fit`) and alone reads and writes its cache entries; the
    per-run scores, costs and cache hits are then gathered, so every rank returns the same result
    (``cost_s``: the sum of every run's cost, as in one process; ``spent_s``: this rank's wall-clock).
    Ranks that own no run (fewer runs than ranks) wait at the gather.

    ``engine`` (a :class:`datadiet.core.ray_pool.RayEngine`): each run's scoring forward runs on Ray
    Data actors instead of this process (the training of a run stays here). With the cache on, a run
    keeps its trained weights and its finished shards in a work folder until its scores are cached,
    so a killed job, rerun, neither retrains nor rescores what it had finished. Full GraNd needs
    per-example gradients and is refused on Ray.
    """
    kind = check_choice("score", kind, SCORES)
    seeds = tuple(check_int("seed", s, min=0) for s in seeds)
    if not seeds:
        raise DataDietError("score_seeds must be >= 1 (the number of scoring runs to average)")
    steps = check_int("steps", steps, min=0)
    if engine is not None and kind == "grand":
        raise DataDietError("engine 'ray' runs the scoring forward (score=el2n or grand_head); full GraNd "
                            "(score=grand) needs per-example gradients and runs with engine=local")
    if engine is not None and ranks is not None:
        raise DataDietError("engine 'ray' and several processes (torchrun) do not mix: run the scoring on Ray from "
                            "one process (datadiet score --engine ray), then train on the selection")
    ids = np.asarray([int(dataset[i][ID_KEY]) for i in range(len(dataset))], dtype=np.int64)
    use_cache = cache is not None and cache_base is not None
    t_all = time.perf_counter()
    if ranks is not None:
        progress = progress and ranks.is_main  # bars for rank 0's runs only

    def one_run(seed: int) -> tuple[np.ndarray, float, bool, str | None]:
        """``(scores, cost_s, from the cache, GraNd implementation or None)`` of the run ``seed``."""
        key = ScoreCache.key(cache_base, kind=kind, seed=seed, steps=steps) if use_cache else None
        got = cache.get(key, ids) if use_cache else None
        if got is not None:
            log.info("scoring run seed %d: %s scores from the cache (cost %.1f s when computed)", seed, kind, got[1])
            return got[0], got[1], True, None
        impl = None
        work = _RunWork(cache_base, kind="forward", seed=seed, steps=steps) if engine is not None and use_cache else None
        t0 = time.perf_counter()
        model = build_model(seed)
        resumed = work.load_trained(model) if work is not None else None
        if resumed is not None:
            trained, train_s = resumed
        else:
            trained = train_steps(model, dataset, collator=collator, steps=steps, settings=settings, seed=seed,
                                  progress=progress)
            train_s = time.perf_counter() - t0
            if work is not None:
                work.save_trained(model, trained=trained, train_s=train_s)
        t1 = time.perf_counter()
        fwd = forward_scores(model, dataset, collator=collator, batch_size=settings.score_batch_size,
                             autocast_dtype=settings.autocast_dtype, head=True, progress=progress, engine=engine,
                             work_dir=None if work is None else work.folder,
                             work_key=None if work is None else work.key)
        fwd_s = time.perf_counter() - t1
        per_kind = {k: (v, train_s + fwd_s) for k, v in fwd.items()}
        if kind == "grand":
            t2 = time.perf_counter()
            g, impl = grand_scores(model, dataset, collator=collator, chunk_size=settings.grand_chunk_size,
                                   progress=progress)
            per_kind["grand"] = (g, train_s + time.perf_counter() - t2)
        del model
        if kind not in per_kind:
            raise DataDietError(
                "score 'grand_head' needs a final Linear layer whose output is the logits, and this model has "
                "none that matches; use score=el2n or score=grand")
        log.info("scoring run seed %d: %d steps (%d examples) in %.1f s, scored in %.1f s", seed, steps, trained,
                 train_s, time.perf_counter() - t1)
        if use_cache:
            for k, (v, c) in per_kind.items():
                k_key = ScoreCache.key(cache_base, kind=k, seed=seed, steps=steps)
                # the scores this run got for free never replace a run already cached (training is
                # not bit-reproducible across processes, so that would silently change earlier results)
                if k != kind and cache.get(k_key, ids) is not None:
                    continue
                cache.put(k_key, ids, v, c, {**cache_base, "kind": k, "seed": seed, "steps": steps})
        if work is not None:
            work.finish()  # the scores are cached: the trained weights and shards are no longer needed
        return per_kind[kind][0], per_kind[kind][1], False, impl

    if ranks is None:
        runs = [one_run(seed) for seed in seeds]
    else:
        runs = _runs_over_ranks(ranks, seeds, one_run, n=len(ids), kind=kind, steps=steps)
    rows = [r[0] for r in runs]
    costs = [r[1] for r in runs]
    hits = [r[2] for r in runs]
    impls = [r[3] for r in runs if r[3] is not None]
    impl = impls[-1] if impls else None
    per_seed = np.stack([np.asarray(r, dtype=np.float64) for r in rows])
    info: dict[str, Any] = {"run_cost_s": [float(c) for c in costs], "settings": asdict(settings)}
    if cache_base is not None:
        info["key"] = cache_base
    if impl is not None:
        info["grand_implementation"] = impl
    if ranks is not None:
        info["run_rank"] = [j % ranks.world_size for j in range(len(seeds))]
    return ScoreResult(kind=kind, ids=ids, scores=mean_over_runs(per_seed), per_seed=per_seed, seeds=seeds,
                       steps=steps, cost_s=float(sum(costs)), spent_s=time.perf_counter() - t_all,
                       cached=tuple(hits), labels=None if labels is None else np.asarray(labels, dtype=np.int64),
                       info=info)


class _RunWork:
    """A Ray scoring run's work folder: its trained weights (``trained.pt``, loaded with
    ``weights_only=True``, and ``trained.json``: examples trained and seconds) and the pass's finished
    shards, under ``cache_dir("ray_work")``, removed once the run's scores are in the score cache."""

    def __init__(self, cache_base: dict[str, Any], *, kind: str, seed: int, steps: int) -> None:
        from ...core.ray_pool import work_dir_for

        self.key = {**cache_base, "pass": kind, "seed": int(seed), "steps": int(steps)}
        self.folder = work_dir_for("scores", self.key)

    def load_trained(self, model: torch.nn.Module) -> tuple[int, float] | None:
        w, meta = self.folder / "trained.pt", self.folder / "trained.json"
        if not (w.exists() and meta.exists()):
            return None
        try:
            m = json.loads(meta.read_text())
            if m.get("key") != json.loads(json.dumps(self.key, default=str)):
                return None
            model.load_state_dict(torch.load(w, map_location=next(model.parameters()).device, weights_only=True))
        except Exception as e:  # noqa: BLE001 - damaged: train again
            log.warning("ignoring the saved scoring-run weights in %s (%s); training again", self.folder, e)
            return None
        log.info("scoring run seed %d: trained weights from an interrupted run (%s), not trained again",
                 self.key["seed"], self.folder)
        return int(m["trained"]), float(m["train_s"])

    def save_trained(self, model: torch.nn.Module, *, trained: int, train_s: float) -> None:
        import os

        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".trained.{os.getpid()}.tmp"
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, self.folder / "trained.pt")
        write_json_atomic(self.folder / "trained.json", {"key": self.key, "trained": int(trained),
                                                         "train_s": float(train_s)})

    def finish(self) -> None:
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)


def _runs_over_ranks(ranks, seeds: tuple[int, ...], one_run, *, n: int, kind: str, steps: int) -> list[tuple]:
    """Several processes: each rank does the runs it owns (run ``j`` on rank ``j % world_size``), then
    every run's scores (``gather_rows``, float64) and cost / cache hit / GraNd implementation
    (``gather_objects``) are gathered; returns every run's ``one_run`` tuple in seed order, on every rank."""
    from ...core.distributed import RankMismatchError

    W, r = ranks.world_size, ranks.rank
    ranks.agree("data_diet's scoring runs", {"examples": n, "runs": len(seeds), "first_seed": seeds[0],
                                             "steps": steps, "score": SCORES.index(kind)},
                fix="give every rank the whole training set and the same data_diet parameters")
    mine = list(range(r, len(seeds), W))
    done: list[tuple] = []
    failed: BaseException | None = None
    for j in mine:
        try:
            done.append(one_run(seeds[j]))
        except Exception as e:  # noqa: BLE001 - told to every rank below (so none waits forever), then re-raised
            failed = e
            break
    ok = failed is None
    said = None if ok else f"{type(failed).__name__}: {failed}"
    meta = ranks.gather_objects({"runs": mine if ok else [], "failed": said,
                                 "meta": [(float(d[1]), bool(d[2]), d[3]) for d in done] if ok else []})
    if failed is not None:
        raise failed
    errors = [(k, m["failed"]) for k, m in enumerate(meta) if m["failed"]]
    if errors:
        raise DataDietError("a data_diet scoring run failed on another rank ("
                            + "; ".join(f"rank {k}: {msg}" for k, msg in errors) + ")")
    # one row per owned run; a rank that owns none sends [0, n]
    rows = np.stack([np.asarray(d[0], dtype=np.float64) for d in done]) if done else np.zeros((0, n), dtype=np.float64)
    full, counts = ranks.gather_rows(torch.from_numpy(rows))
    full = full.cpu().numpy()
    out: list[tuple | None] = [None] * len(seeds)
    start = 0
    for k, m in enumerate(meta):
        if counts[k] != len(m["runs"]):
            raise RankMismatchError(f"rank {k} sent {counts[k]} score rows for runs {m['runs']}")
        for t, j in enumerate(m["runs"]):
            cost, hit, impl = m["meta"][t]
            out[j] = (full[start + t], cost, hit, impl)
        start += counts[k]
    missing = [j for j, o in enumerate(out) if o is None]
    if missing:
        raise RankMismatchError(f"no rank did scoring runs {missing}")
    return out  # type: ignore[return-value]
