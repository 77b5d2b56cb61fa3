"""INGENIOUS: train on a representative subset chosen by submodular maximisation (Renduchintala et al. 2023).

Method ``ingenious``. Mechanism: prune (before training, and every ``reselect_every`` optimizer
steps when set). Steps:

1. embed every training example (:mod:`~datadiet.methods.ingenious.embeddings`): the training model's own
   mean-pooled hidden states at ``layer`` (default, ``embedding=model``) or a frozen sentence encoder
   (``embedding=minilm``); cached on disk;
2. partition the examples (``random`` or ``kmeans``, parts of at most ``max_part_size``), build a
   similarity kernel per part (``dense`` cosine or sparse ``knn``) and run greedy maximisation of
   ``objective`` over each whole part, recording every example's marginal gain
   (:func:`~datadiet.methods.ingenious.submodular.submodular_gains`, exact lazy greedy by default);
3. draw ``fraction`` of each part from the gains (``taylor_softmax`` importance sampling, ``top_k`` or
   ``uniform``; :func:`~datadiet.methods.ingenious.submodular.subset_from_gains`);
4. train on the subset. Without re-selection the plan is a :class:`~datadiet.core.selection.Selection`
   (the loop trains on its positions). With ``reselect_every=R`` the plan is a pre-forward filter,
   :class:`IngeniousFilter`, that keeps the current subset and after every R optimizer steps draws a
   new one: ``resample`` (new sampling seed, same gains: the published method) or ``recompute``
   (embed again with the current model and re-run greedy: the paper's earlier variant).

What it saves: forward + backward of every example outside the subset (``1 - fraction`` of the
training compute: 75% at the default 0.25). What it costs: one embedding forward per example
(about 1 unit against 3 per trained example-epoch, for ``embedding=model``; a MiniLM forward for
``minilm``), plus kernels and greedy (``O(m^2 d)`` and ``O(m^2)`` per dense part of ``m``). With
``E`` epochs over ``N`` examples it saves ``3 E N (1 - fraction)`` units for about ``N`` of
embedding: break-even at ``E (1 - fraction) > 1/3``, which every practical setting clears; with
``reselect=recompute`` each re-selection costs another ``N`` units (timed in the filter's telemetry,
inside the training time). Defaults and their sources: ``docs/methods/ingenious.md``.

Seeds: every random draw comes from ``seed`` (the run's seed unless given) through
``numpy.random.SeedSequence([seed, stream, i])``: stream 1 seeds the partition/greedy of selection
``i``, stream 2 its sampling. Selection 0 is the one before training, so ``datadiet select`` and a
training run with the same seed start from the same subset.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..._validate import check_choice, check_float, check_fraction, check_int, check_str
from ...errors import ConfigError, DataDietError
from ...core.filter import BatchView, Decision, OnlineFilter
from ...core.method import Method
from ...core.params import Param, boolean, float_in, int_at_least, one_of, optional
from ...core.ray_pool import engine_params
from ...core.selection import Selection
from .submodular import OBJECTIVES, OPTIMIZERS, SAMPLINGS, SubmodularGains, submodular_gains, subset_from_gains
from .submodular.kernels import IVF_STORAGES, KNN_SEARCHES
from .submodular.pipeline import KERNELS, PARTITIONS

log = logging.getLogger(__name__)

EMBEDDINGS = ("model", "minilm")
RESELECT = ("resample", "recompute")
_GAINS, _SAMPLE, _WARM = 1, 2, 3  # seed streams


def derive_seed(seed: int, stream: int, i: int) -> int:
    """Pure: the seed of stream ``stream`` for selection ``i`` (a non-negative 32-bit int)."""
    return int(np.random.SeedSequence([int(seed), int(stream), int(i)]).generate_state(1)[0])


# ------------------------------------------------------------------------------- the re-selection filter
class IngeniousFilter(OnlineFilter):
    """Pre-forward filter: keep the current INGENIOUS subset; draw a new one every ``every`` steps.

    ``ids``: the training set's stable ids in the order of the gains' rows. ``kept``: the ids of
    the first subset (selection 0). Steps are counted as training batches the engine emitted
    (``observe(..., trained=True)``): one optimizer step each in the plain loop, one micro-batch
    each under Hugging Face gradient accumulation. The new subset is drawn when the first batch
    after step ``every * j`` arrives, so it never changes inside an optimizer step; examples
    already buffered by the engine under the old subset are still trained.

    ``reselect``: ``resample`` draws from ``gains`` (fixed) with the sampling seed of selection
    ``i``; ``recompute`` calls ``recompute(i)`` (fresh embeddings with the current model and a
    greedy run seeded for selection ``i``) and draws from its gains. Skipped examples cost nothing
    and are counted under reason ``"ingenious"``.

    State (:meth:`state_dict`): the current subset, the step and selection counters (the selection
    counter is the random state: every draw is seeded by ``(seed, stream, selection)``), the next
    due step, the history and the counts; the gains are not saved (``resample`` gets them again from
    the plan, ``recompute`` recomputes at the next re-selection).
    """

    stage = "pre_forward"
    reason = "ingenious"

    def __init__(
        self,
        *,
        ids: np.ndarray,
        kept: np.ndarray,
        fraction: float,
        every: int,
        seed: int,
        gains: SubmodularGains | None = None,
        reselect: str = "resample",
        sampling: str = "taylor_softmax",
        temperature: float = 1.0,
        recompute: Callable[[int], SubmodularGains] | None = None,
    ) -> None:
        self.ids = np.asarray(ids, dtype=np.int64)
        if self.ids.ndim != 1 or len(self.ids) == 0:
            raise ConfigError("ids must be a non-empty 1-D array of example ids")
        self.fraction = check_fraction("fraction", fraction)
        self.every = check_int("reselect_every", every, min=1)
        self.seed = check_int("seed", seed, min=0)
        self.reselect = check_choice("reselect", reselect, RESELECT)
        self.sampling = check_choice("sampling", sampling, SAMPLINGS)
        self.temperature = check_float("temperature", temperature, min=0.0, min_open=True)
        if self.reselect == "resample":
            if gains is None:
                raise ConfigError("reselect='resample' draws from fixed gains; give gains")
            if gains.n != len(self.ids):
                raise ConfigError(f"gains cover {gains.n} examples but there are {len(self.ids)} ids")
        elif recompute is None or not callable(recompute):
            raise ConfigError("reselect='recompute' needs a recompute(i) -> SubmodularGains callable")
        self._gains = gains
        self._recompute = recompute
        k = np.sort(np.asarray(kept, dtype=np.int64))
        if len(k) == 0 or not np.isin(k, self.ids).all():
            raise ConfigError("kept must be a non-empty subset of ids")
        self.kept = torch.from_numpy(k)
        self.steps = 0  # training batches seen (optimizer steps in the plain loop)
        self.next_at = self.every
        self.selections = 1  # selection 0 was made before training
        self.history: list[dict[str, Any]] = []
        self.selection_s = 0.0
        self.embedding_forwards = 0
        self._seen = 0
        self._pruned = 0

    # -------------------------------------------------------------------------------- the hooks
    def decide(self, batch: BatchView, losses: torch.Tensor | None) -> Decision:
        if self.steps >= self.next_at:
            self._reselect()
        n = len(batch)
        self._seen += n
        keep = torch.isin(batch.ids.cpu(), self.kept)
        self._pruned += int((~keep).sum())
        return Decision(keep=keep)

    def observe(self, batch: BatchView, losses: torch.Tensor, *, trained: bool) -> None:
        if trained:
            self.steps += 1

    def _reselect(self) -> None:
        t0 = time.perf_counter()
        i = self.selections
        if self.reselect == "recompute":
            gains = self._recompute(i)
            if gains.n != len(self.ids):
                raise DataDietError(f"recompute returned gains for {gains.n} examples, expected {len(self.ids)}")
            self._gains = gains
            self.embedding_forwards += len(self.ids)
        assert self._gains is not None
        sel = subset_from_gains(self._gains, fraction=self.fraction, ids=self.ids, sampling=self.sampling,
                                temperature=self.temperature, seed=derive_seed(self.seed, _SAMPLE, i))
        new = torch.from_numpy(np.sort(np.asarray(sel.ids, dtype=np.int64)))
        changed = int((~torch.isin(new, self.kept)).sum())
        dt = time.perf_counter() - t0
        self.kept = new
        self.selections += 1
        self.selection_s += dt
        self.history.append({"step": int(self.steps), "selection": int(i), "kept": len(new), "changed": changed,
                             "seconds": dt})
        # the next one is due ``every`` steps after the step it was due at (not after a late arrival)
        while self.next_at <= self.steps:
            self.next_at += self.every
        log.info("ingenious: re-selection %d at step %d (%s): %d kept, %d new, %.2f s", i, self.steps, self.reselect,
                 len(new), changed, dt)

    # ---------------------------------------------------------------------------- reporting & state
    def telemetry(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "reselect_every": self.every, "reselect": self.reselect,
                "sampling": self.sampling, "selections": self.selections,
                "reselected_at_steps": [h["step"] for h in self.history], "history": [dict(h) for h in self.history],
                "selection_s": self.selection_s, "embedding_forwards": self.embedding_forwards,
                "current_size": int(len(self.kept)), "seen": self._seen, "pruned": self._pruned}

    def state_dict(self) -> dict[str, Any]:
        return {"kept": self.kept.clone(), "steps": self.steps, "next_at": self.next_at, "selections": self.selections,
                "history": [dict(h) for h in self.history], "selection_s": self.selection_s,
                "embedding_forwards": self.embedding_forwards, "seen": self._seen, "pruned": self._pruned}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.kept = torch.as_tensor(state["kept"], dtype=torch.int64).clone()
        self.steps = int(state["steps"])
        self.next_at = int(state["next_at"])
        self.selections = int(state["selections"])
        self.history = [dict(h) for h in state["history"]]
        self.selection_s = float(state["selection_s"])
        self.embedding_forwards = int(state["embedding_forwards"])
        self._seen, self._pruned = int(state["seen"]), int(state["pruned"])


# ---------------------------------------------------------------------------------------- the method
class Ingenious(Method):
    """Method ``ingenious``: facility location (or graph cut / log-determinant) over example embeddings.

    Mechanism: prune (offline; re-drawn every ``reselect_every`` steps when set). Saves forward +
    backward of every example outside the subset; costs one embedding pass (see the module
    docstring for the break-even). Parameters (defaults and sources in ``docs/methods/ingenious.md``):

    fraction
        share of the training set in the subset (default 0.25, the paper's budget).
    objective
        ``facility_location`` (default, the paper), ``graph_cut`` or ``log_determinant`` (dense only).
    sampling
        ``taylor_softmax`` (default, the paper; temperature ``temperature``=1.0), ``top_k`` (the greedy
        order, deterministic) or ``uniform`` (ablations).
    embedding, layer
        ``model`` (default: the training model's own mean-pooled hidden states, as the paper) or
        ``minilm`` (a frozen all-MiniLM-L6-v2); ``layer`` picks the hidden state (default ``None``: the
        last layer; 0 = token embeddings; negative counts from the end).
    warm_start_steps
        ``0`` (default): embed with the model as loaded. ``W > 0`` (``embedding=model`` only): train a
        *copy* of the model for W optimizer steps on the whole training set (the run's optimizer
        settings, its own data order), embed with the copy, and discard it; the run itself still
        trains only on the subset, from the loaded weights. The W steps are selection cost (timed,
        and counted in ``warm_start_examples``); the embedding cache is bypassed (the copy is new
        each run).
    kernel, knn, knn_search
        ``dense`` cosine kernel per part (default) or a sparse ``knn``-nearest-neighbour kernel
        (default k = 10) for large parts; its neighbours are exact within each part
        (``knn_search=exact_per_part``, default) or approximate over the whole pool (``faiss_ivf``,
        ``faiss_hnsw``; needs faiss), so they cross parts.
    ivf_storage
        ``knn_search=faiss_ivf`` only: what the whole-pool index's lists hold, ``flat`` float32
        (default), ``fp16`` or ``sq8`` (half / a quarter of the index memory); the neighbours found
        are re-scored exactly, so only the recall can change. The IVF tuning numbers (``nprobe``,
        ``nlist``, ``train_per_list``) stay at the core's defaults (set them through
        ``submodular_gains``).
    partition, max_part_size
        ``random`` (default, the paper) or ``kmeans`` parts of at most ``max_part_size`` examples
        (default 10,000 dense / 50,000 knn).
    optimizer
        ``lazy`` exact greedy (default), ``stochastic`` or ``naive``.
    reselect_every, reselect
        ``None`` (default): one subset for the whole run. ``R``: draw a new subset every R optimizer
        steps, ``resample`` (default; the paper) or ``recompute`` (needs ``embedding=model``).
    seed
        default the run's seed.
    cache
        reuse embeddings from the on-disk cache (default true).
    embeddings_store
        ``None`` (default): embed here (cached). A path: read every training example's vector from
        this Parquet embedding store (``Embeddings.save_parquet``, ``datadiet convert``) by
        ``example_id`` instead, e.g. embeddings computed once on a Ray cluster; its stored cost counts
        as reused selection cost.
    engine, ray_workers
        ``local`` (default) or ``ray``: the embedding pass (embedding=model) on ``ray_workers`` Ray
        Data actors (:mod:`datadiet.core.ray_pool`), resumable from its finished shards.
    """

    name = "ingenious"
    mechanism = "prune"
    saves = "forward + backward of every example outside the subset (re-drawn every R steps if reselect_every is set)"

    fraction = Param(0.25, check_fraction, "share of the training set in the subset (the paper's budget)")
    objective = Param("facility_location", one_of(*OBJECTIVES),
                      "'facility_location' (the paper), 'graph_cut' or 'log_determinant' (dense only)")
    sampling = Param("taylor_softmax", one_of(*SAMPLINGS),
                     "'taylor_softmax' (the paper), 'top_k' (the greedy order) or 'uniform' (ablations)")
    temperature = Param(1.0, float_in(0.0, min_open=True), "temperature of the taylor_softmax sampling")
    embedding = Param("model", one_of(*EMBEDDINGS), "'model' (the training model's mean-pooled hidden states, as "
                      "the paper) or 'minilm' (a frozen all-MiniLM-L6-v2)")
    layer = Param(None, optional(lambda name, v: check_int(name, v)),
                  "the hidden state embedded; None: the last layer, 0: token embeddings, negative: from the end")
    warm_start_steps = Param(0, int_at_least(0), "embedding=model only: train a discarded copy of the model for "
                             "this many steps before embedding")
    kernel = Param("dense", one_of(*KERNELS), "'dense' cosine kernel per part or a sparse 'knn' kernel")
    knn = Param(10, int_at_least(1), "neighbours per example of the knn kernel")
    knn_search = Param("exact_per_part", one_of(*KNN_SEARCHES),
                       "kernel=knn only: 'exact_per_part' (exact kNN inside each part) or 'faiss_ivf' / 'faiss_hnsw' "
                       "(approximate kNN over the whole pool, neighbours cross parts; needs datadiet[scale])")
    ivf_storage = Param("flat", one_of(*IVF_STORAGES),
                        "knn_search=faiss_ivf only: the IVF lists hold 'flat' float32 rows (4 d bytes per point), "
                        "'fp16' (2 d) or 'sq8' (d, 8-bit scalar quantizer); the found neighbours are re-scored "
                        "exactly, so only the recall can change")
    partition = Param("random", one_of(*PARTITIONS), "'random' (the paper) or 'kmeans' parts")
    max_part_size = Param(None, optional(int_at_least(1)),
                          "examples per part at most; None: 10,000 dense / 50,000 knn")
    optimizer = Param("lazy", one_of(*OPTIMIZERS), "'lazy' exact greedy, 'stochastic' or 'naive'")
    reselect_every = Param(None, optional(int_at_least(1)),
                           "None: one subset for the whole run; R: draw a new subset every R optimizer steps")
    reselect = Param("resample", one_of(*RESELECT),
                     "'resample' (the paper) or 'recompute' (needs embedding=model)")
    seed = Param(None, optional(int_at_least(0)), "RNG seed; None: the run's seed")
    cache = Param(True, boolean, "reuse embeddings from the on-disk cache")
    embeddings_store = Param(None, optional(check_str), "a Parquet embedding store (Embeddings.save_parquet, "
                             "`datadiet convert`) holding every training example's vector by example_id, used "
                             "instead of embedding here")
    engine, ray_workers = engine_params()

    def __post_init__(self) -> None:
        if self.embeddings_store is not None:
            from pathlib import Path

            if not Path(self.embeddings_store).exists():
                raise ConfigError(f"embeddings_store {self.embeddings_store!r} does not exist; write one with "
                                  "Embeddings.save_parquet or `datadiet convert CACHE_ENTRY.npz --out FOLDER`")
            clash = [f"{k}={v!r}" for k, v in (("warm_start_steps", self.warm_start_steps), ("engine", self.engine))
                     if v not in (0, "local")]
            if self.reselect_every is not None and self.reselect == "recompute":
                clash.append("reselect='recompute'")
            if clash:
                raise ConfigError(f"embeddings_store gives fixed, precomputed vectors, which {', '.join(clash)} "
                                  "would recompute; leave embeddings_store unset or drop " + ", ".join(clash))
        if self.engine == "ray" and self.embedding != "model":
            raise ConfigError(f"engine='ray' runs the embedding pass of embedding=model; embedding="
                              f"{self.embedding!r} (a frozen encoder) runs with engine='local'")
        if self.warm_start_steps and self.embedding != "model":
            raise ConfigError(f"warm_start_steps={self.warm_start_steps} trains the model before embedding with "
                              f"it, but embedding={self.embedding!r} is a frozen encoder; set embedding=model or "
                              "warm_start_steps=0")
        if self.objective == "log_determinant" and self.kernel == "knn":
            raise ConfigError("objective='log_determinant' needs kernel='dense' (a kNN kernel is not positive "
                              "semi-definite); set kernel=dense or another objective")
        if self.knn_search != "exact_per_part" and self.kernel != "knn":
            raise ConfigError(f"knn_search={self.knn_search!r} builds a sparse kNN kernel over the whole pool; set "
                              "kernel=knn or knn_search=exact_per_part")
        if self.ivf_storage != "flat" and self.knn_search != "faiss_ivf":
            raise ConfigError(f"ivf_storage={self.ivf_storage!r} compresses the lists of the whole-pool IVF index, "
                              f"but knn_search={self.knn_search!r} builds none; set knn_search=faiss_ivf (with "
                              "kernel=knn) or ivf_storage=flat")
        if self.reselect_every is not None:
            if self.reselect == "recompute" and self.embedding != "model":
                raise ConfigError(f"reselect='recompute' re-embeds with the model being trained, but embedding="
                                  f"{self.embedding!r} is a frozen encoder whose embeddings never change; set "
                                  "embedding=model or reselect=resample")
            if self.reselect == "resample" and self.sampling == "top_k":
                raise ConfigError("sampling='top_k' draws the same subset from the same gains every time, so "
                                  "reselect='resample' would never change it; use reselect=recompute, another "
                                  "sampling, or reselect_every=null")

    # ----------------------------------------------------------------------------------- the parts
    def _gains_kwargs(self) -> dict[str, Any]:
        return dict(objective=self.objective, kernel=self.kernel, knn=self.knn, knn_search=self.knn_search,
                    ivf_storage=self.ivf_storage, partition=self.partition,
                    max_part_size=self.max_part_size, optimizer=self.optimizer, fraction=self.fraction)

    def gains(self, vectors: np.ndarray, *, seed: int, i: int = 0) -> SubmodularGains:
        """Greedy gains of every example for selection ``i`` (pure given ``vectors`` and ``seed``)."""
        return submodular_gains(vectors, seed=derive_seed(seed, _GAINS, i), **self._gains_kwargs())

    def draw(self, gains: SubmodularGains, ids: np.ndarray, *, seed: int, i: int = 0) -> Selection:
        """Selection ``i`` drawn from ``gains`` (``scores`` = ``gains`` = the selected examples' gains)."""
        sel = subset_from_gains(gains, fraction=self.fraction, ids=np.asarray(ids), sampling=self.sampling,
                                temperature=self.temperature, seed=derive_seed(seed, _SAMPLE, i))
        p = dict(sel.params)
        p["gains_seed"] = p.pop("seed")
        p.update(self.params())
        p["seed"] = seed
        p["max_part_size"] = gains.params["max_part_size"]
        return dataclasses.replace(sel, scores=sel.gains, params=p)

    def embed(self, ctx, *, progress: bool = False):
        """The embeddings of ``ctx``'s training set (an :class:`~datadiet.methods.ingenious.embeddings.Embeddings`)."""
        return self._embed(ctx, progress=progress)[0]

    def _embed(self, ctx, *, progress: bool):
        """``(embeddings, warm)``: ``warm`` holds the warm-start's cost (``warm_start_s``,
        ``warm_start_examples``; zeros without one).

        With ``ctx.ranks`` (several processes) the embedding pass is sharded over the ranks and
        gathered, and rank 0 alone reads and writes the cache (:func:`example_embeddings`); a
        warm-start trains its copy locally on every rank (same seed and data: the same copy)."""
        from .embeddings import EmbeddingCache, example_embeddings

        cache = EmbeddingCache() if self.cache and not self.warm_start_steps else None
        batch_size, max_length = ctx.eval_batch_size, ctx.max_length
        ids = np.asarray(ctx.ids, dtype=np.int64)
        ranks = getattr(ctx, "ranks", None)
        warm: dict[str, Any] = {"warm_start_s": 0.0, "warm_start_examples": 0}
        if self.embeddings_store is not None:
            from .embeddings import Embeddings

            emb = Embeddings.from_parquet(self.embeddings_store, ids=ids)
            log.info("ingenious: %d embeddings (dim %d) from the store %s", len(emb), emb.dim, self.embeddings_store)
            return emb, warm
        if self.embedding == "model":
            ctx.need("ingenious with embedding=model", "model", "train_dataset", "collator")
            model = ctx.model
            if self.warm_start_steps:
                model, warm = self._warm_started(ctx, model, progress=progress)
            return example_embeddings(ids=ids, model=model, dataset=ctx.train_dataset, collator=ctx.collator,
                                      model_name=ctx.model_name, layer=self.layer, max_length=max_length,
                                      batch_size=batch_size, autocast_dtype=ctx.autocast_dtype, cache=cache,
                                      progress=progress, ranks=ranks, engine=self.ray_engine()), warm
        texts = ctx.example_texts()
        device = next(ctx.model.parameters()).device if ctx.model is not None else None
        return example_embeddings(ids=ids, encoder=self.embedding, texts=texts, layer=self.layer,
                                  max_length=max_length, batch_size=batch_size, device=device, cache=cache,
                                  progress=progress, ranks=ranks), warm

    def ray_engine(self):
        """``None`` (engine='local') or the :class:`~datadiet.core.ray_pool.RayEngine` of these parameters."""
        from ...core.ray_pool import ray_engine

        return ray_engine(self.engine, workers=self.ray_workers)

    def _warm_started(self, ctx, model: torch.nn.Module, *, progress: bool) -> tuple[torch.nn.Module, dict[str, Any]]:
        """A copy of ``model`` trained for ``warm_start_steps`` steps on the whole training set, and its cost.

        Several processes: every rank trains its own copy locally (a single-process
        :func:`datadiet.loop.fit`, same seed and data), so no collective is involved."""
        import copy

        from ..data_diet.score_runs import TrainSettings, train_steps

        seed = ctx.seed if self.seed is None else self.seed
        settings = TrainSettings.from_context(ctx)
        t0 = time.perf_counter()
        if getattr(ctx, "ranks", None) is not None:
            from ..data_diet.scores import unwrap_ddp

            model = unwrap_ddp(model)
        warm = copy.deepcopy(model)
        examples = train_steps(warm, ctx.train_dataset, collator=ctx.collator, steps=self.warm_start_steps,
                               settings=settings, seed=derive_seed(seed, _WARM, 0), progress=progress)
        warm.eval()
        seconds = time.perf_counter() - t0
        log.info("ingenious: warm-started a copy of the model for %d steps (%d examples) in %.1f s",
                 self.warm_start_steps, examples, seconds)
        return warm, {"warm_start_s": seconds, "warm_start_examples": examples}

    def select(self, ctx, *, progress: bool = False) -> tuple[Selection, SubmodularGains, dict[str, Any]]:
        """Selection 0 for ``ctx``: ``(selection, gains, info)``; ``info`` holds the costs."""
        seed = ctx.seed if self.seed is None else self.seed
        ids = np.asarray(ctx.ids, dtype=np.int64)
        if len(ids) == 0:
            raise DataDietError("the training set is empty: nothing to select from")
        t0 = time.perf_counter()
        emb, warm = self._embed(ctx, progress=progress)
        if not np.array_equal(emb.ids, ids):
            raise DataDietError("the embedded examples do not match the training set's ids; clear the embedding cache")
        t1 = time.perf_counter()
        gains = self.gains(emb.vectors, seed=seed)
        t2 = time.perf_counter()
        sel = self.draw(gains, ids, seed=seed)
        t3 = time.perf_counter()
        info = {"embedding": emb.summary(), "embedding_s": t1 - t0, "gains_s": t2 - t1, "sampling_s": t3 - t2,
                "spent_s": t3 - t0, "cost_s": (t3 - t0) + emb.reused_s, "reused_s": emb.reused_s,
                **warm,
                "greedy": {k: gains.info[k] for k in ("n_parts", "part_size_max", "partition_s", "kernel_s", "greedy_s",
                                                      "n_evals", "kernel_bytes_per_part_max", "objective_value")}}
        sel = dataclasses.replace(sel, info={**sel.info, "cost": {k: v for k, v in info.items() if k != "greedy"}})
        log.info("ingenious: %d of %d examples (%s, %s); embedding %.1f s (%s), greedy %.1f s, sampling %.3f s",
                 len(sel), len(ids), self.objective, self.sampling, emb.cost_s,
                 "cached" if emb.cached else "computed", t2 - t1, t3 - t2)
        return sel, gains, info

    def plan(self, ctx, *, progress: bool = False):
        """Selection 0 (or the re-selection filter) for ``ctx``. With ``ctx.ranks`` (several processes) it
        runs on every rank: the embedding pass is sharded over the ranks and gathered, so every rank
        selects the same subset, and a ``recompute`` filter re-embeds the same sharded way."""
        from ...core.method import Plan

        sel, gains, info = self.select(ctx, progress=progress)
        plan_info = {"ingenious": info, "selection_reused_s": info["reused_s"]}
        if self.reselect_every is None:
            return Plan(selection=sel, info=plan_info)
        seed = ctx.seed if self.seed is None else self.seed
        recompute = None
        if self.reselect == "recompute":
            recompute = self._recompute_fn(ctx, seed)
        f = IngeniousFilter(ids=np.asarray(ctx.ids), kept=sel.ids, fraction=self.fraction, every=self.reselect_every,
                            seed=seed, gains=gains, reselect=self.reselect, sampling=self.sampling,
                            temperature=self.temperature, recompute=recompute)
        plan_info["ingenious"]["initial_selection"] = {"n_selected": len(sel), "n_total": int(sel.n_total)}
        return Plan(filters=[f], info=plan_info)

    def _recompute_fn(self, ctx, seed: int) -> Callable[[int], SubmodularGains]:
        """``recompute(i)`` for :class:`IngeniousFilter`: embed with the current model, greedy for selection
        ``i``. With ``ctx.ranks`` the embedding is sharded over the ranks and gathered (every rank's
        filter calls it at the same step, so the collectives line up)."""
        from .embeddings import model_embeddings

        ctx.need("ingenious with reselect=recompute", "model", "train_dataset", "collator")
        model, ds, collator = ctx.model, ctx.train_dataset, ctx.collator
        batch_size, autocast = ctx.eval_batch_size, ctx.autocast_dtype
        ranks = getattr(ctx, "ranks", None)

        def recompute(i: int) -> SubmodularGains:
            vec = model_embeddings(model, ds, collator=collator, layer=self.layer, batch_size=batch_size,
                                   autocast_dtype=autocast, ranks=ranks)
            return self.gains(vec, seed=seed, i=i)

        return recompute


__all__ = ["Ingenious", "IngeniousFilter", "derive_seed", "EMBEDDINGS", "RESELECT"]
