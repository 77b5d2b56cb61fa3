"""Data diet: prune the training set by EL2N / GraNd scores (Fayyaz et al. 2022, after Paul et al. 2021).

Method ``data_diet``. Mechanism: prune (offline). Steps:

1. ``score_seeds`` scoring runs (S, default 5 as in Fayyaz et al.), each fine-tuning a fresh copy
   of the model from its own seed for ``score_epochs`` epochs (default 1.0: the paper finds
   scores unreliable before one epoch) or ``score_steps`` steps, then scoring every training
   example (:mod:`~datadiet.methods.data_diet.score_runs`, cached on disk);
2. the mean score over the runs ranks the examples (larger = harder);
3. a selector keeps a subset: ``top`` (the hardest ``keep`` share), ``bottom`` (the easiest),
   ``offset`` (drop the hardest ``offset`` share, keep the next ``keep`` share) or ``random``
   (the baseline at the same size; no scoring runs), optionally ``stratified`` by class
   (same size, class proportions of the full set);
4. the run then trains from the pretrained checkpoint on the kept subset.

What it saves: forward + backward of every pruned example in the final training run. What it
costs: S scoring runs of ``t`` steps each plus S scoring passes (one forward per example; a
per-example backward too for full GraNd). With ``E`` training epochs on ``N`` examples, one
scoring epoch per run and keep share ``k``, the final run saves ``3 E N (1 - k)`` units and the
scoring costs about ``S (3 N + N)`` units: break-even needs ``E (1 - k) > 4 S / 3`` (S = 5:
``E (1 - k) > 6.7``, e.g. 10 epochs at keep 0.33), so it rarely pays for itself in one run; it pays
when the subset is reused (several seeds, sweeps, re-training) or when pruning improves accuracy. The scoring cost is counted in the run's
``selection_s`` even when the scores come from the cache (see ``selection_reused_s``).

The selectors are pure functions on a score array (:func:`select_positions`,
:func:`select_by_scores`) and return the shared :class:`~datadiet.core.selection.Selection`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..._validate import check_choice, check_float, check_int
from ...errors import ConfigError, DataDietError
from ..random_subset import random_subset
from .scores import SCORES
from ...core.method import Method
from ...core.ray_pool import engine_params
from ...core.params import Param, as_given, boolean, float_in, int_at_least, one_of, optional
from ...core.selection import Selection

log = logging.getLogger(__name__)

MODES = ("top", "bottom", "offset", "random")


# ------------------------------------------------------------------------------ pure selectors
def subset_sizes(n: int, *, keep: float, offset: float = 0.0) -> tuple[int, int]:
    """``(k, o)``: examples kept (``max(1, round(keep * n))``) and skipped at the top (``round(offset * n)``)."""
    n = check_int("n", n, min=1)
    keep = check_float("keep", keep, min=0.0, max=1.0, min_open=True)
    offset = check_float("offset", offset, min=0.0, max=1.0, max_open=True)
    k = max(1, int(round(keep * n)))
    o = int(round(offset * n))
    if o + k > n:
        raise ConfigError(f"offset + keep must be <= 1 (drop the top offset share, keep the next keep share); "
                          f"got offset={offset}, keep={keep} ({o} + {k} > {n} examples)")
    return k, o


def check_selector(
    *, mode: str, keep: float, offset: float, stratified: bool, modes: tuple[str, ...] = MODES
) -> tuple[str, float, float, bool]:
    """A method's selector parameters checked (sizes not yet known): ``(mode, keep, offset, stratified)``."""
    mode = check_choice("mode", mode, modes)
    keep = check_float("keep", keep, min=0.0, max=1.0, min_open=True)
    offset = check_float("offset", offset, min=0.0, max=1.0, max_open=True)
    if offset + keep > 1.0 + 1e-12:
        raise ConfigError(f"offset + keep must be <= 1; got offset={offset}, keep={keep}")
    if offset and mode != "offset":
        raise ConfigError(f"offset applies to mode='offset' only; got offset={offset} with mode={mode!r} "
                          "(set mode=offset or offset=0)")
    if not isinstance(stratified, bool):
        raise ConfigError(f"stratified must be true or false, got {stratified!r}")
    return mode, keep, offset, stratified


def ranked(scores: np.ndarray) -> np.ndarray:
    """Positions sorted by score, highest first; ties keep position order (deterministic)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be one-dimensional, got shape {s.shape}")
    if np.isnan(s).any():
        raise DataDietError(f"{int(np.isnan(s).sum())} scores are NaN; recompute the scores")
    return np.lexsort((np.arange(len(s)), -s))


def allocate(counts: np.ndarray, k: int) -> np.ndarray:
    """Split ``k`` over classes in proportion to ``counts`` (largest remainder; sums to ``k``)."""
    counts = np.asarray(counts, dtype=np.int64)
    n = int(counts.sum())
    if not 0 <= k <= n:
        raise ValueError(f"cannot keep {k} of {n} examples")
    quota = counts * (k / n)
    base = np.floor(quota).astype(np.int64)
    rest = k - int(base.sum())
    order = np.lexsort((np.arange(len(counts)), -(quota - base)))  # largest remainder, then class order
    base[order[:rest]] += 1
    return np.minimum(base, counts)


def _window(order: np.ndarray, mode: str, k: int, o: int) -> np.ndarray:
    n = len(order)
    if mode == "bottom":
        return order[n - k :]
    if mode == "offset":
        return order[o : o + k]
    return order[:k]  # top (and random, whose "scores" are a random permutation)


def select_positions(
    scores: np.ndarray,
    *,
    mode: str = "top",
    keep: float,
    offset: float = 0.0,
    labels: np.ndarray | None = None,
    stratified: bool = False,
    seed: int = 0,
) -> np.ndarray:
    """Positions (sorted) kept by ``mode`` from ``scores`` (larger = harder).

    ``top``: the ``k = max(1, round(keep n))`` highest scores; ``bottom``: the ``k`` lowest;
    ``offset``: skip the ``o = round(offset n)`` highest, keep the next ``k``; ``random``: a seeded
    uniform sample of ``k`` (scores ignored; identical to :func:`random_subset` when not
    stratified). ``stratified``: the same rule inside each class, with ``k`` split over classes in
    proportion to their sizes (largest remainder), so the subset has ``k`` examples and the class
    proportions of the full set (up to rounding); the per-class offset is ``round(offset n_c)``.
    """
    mode = check_choice("mode", mode, MODES)
    s = np.asarray(scores, dtype=np.float64)
    n = len(s)
    k, o = subset_sizes(n, keep=keep, offset=offset)
    if mode != "offset" and o:
        raise ConfigError(f"offset applies to mode='offset' only; got offset={offset} with mode={mode!r} "
                          "(set mode=offset or offset=0)")
    seed = check_int("seed", seed, min=0)
    if mode == "random":
        if not stratified:
            return random_subset(np.arange(n), fraction=keep, seed=seed).indices
        s = np.empty(n)
        s[np.random.default_rng(seed).permutation(n)] = np.arange(n, 0, -1)
    if not stratified:
        return np.sort(_window(ranked(s), mode, k, o))
    if labels is None:
        raise ConfigError("stratified selection needs class labels; set stratified=false or give labels")
    lab = np.asarray(labels)
    if len(lab) != n:
        raise ValueError(f"labels has {len(lab)} rows but scores has {n}")
    classes, inv = np.unique(lab, return_inverse=True)
    quotas = allocate(np.bincount(inv, minlength=len(classes)), k)
    out = []
    for c in range(len(classes)):
        members = np.flatnonzero(inv == c)
        kc = int(quotas[c])
        if kc == 0:
            continue
        oc = min(int(round(offset * len(members))), len(members) - kc)
        out.append(members[_window(ranked(s[members]), mode, kc, oc)])
    return np.sort(np.concatenate(out)) if out else np.zeros(0, dtype=np.int64)


def select_by_scores(
    scores: np.ndarray,
    ids: np.ndarray,
    *,
    mode: str = "top",
    keep: float,
    offset: float = 0.0,
    labels: np.ndarray | None = None,
    stratified: bool = False,
    seed: int = 0,
    method: str = "data_diet",
    params: dict[str, Any] | None = None,
    info: dict[str, Any] | None = None,
) -> Selection:
    """:func:`select_positions` wrapped into a :class:`Selection` (ids, selected scores, provenance)."""
    s = np.asarray(scores, dtype=np.float64)
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) != len(s):
        raise ValueError(f"ids has {len(ids)} rows but scores has {len(s)}")
    pos = select_positions(s, mode=mode, keep=keep, offset=offset, labels=labels, stratified=stratified, seed=seed)
    extra: dict[str, Any] = {}
    if labels is not None:
        lab = np.asarray(labels)
        vals, cnt = np.unique(lab[pos], return_counts=True)
        extra["class_counts"] = {str(v): int(c) for v, c in zip(vals, cnt)}
        vals, cnt = np.unique(lab, return_counts=True)
        extra["class_counts_full"] = {str(v): int(c) for v, c in zip(vals, cnt)}
    p = {"mode": mode, "keep": keep, "offset": offset, "stratified": stratified, **(params or {})}
    if mode == "random":
        p["seed"] = seed
    return Selection(method=method, indices=pos.astype(np.int64), ids=ids[pos], n_total=len(s), params=p,
                     scores=None if mode == "random" else s[pos], info={**extra, **(info or {})})


# ----------------------------------------------------------------------------------- the method
class DataDiet(Method):
    """Method ``data_diet``: score with S short fine-tuning runs, then keep a subset by score.

    Mechanism: prune (offline). Saves forward + backward of every pruned example; costs
    ``score_seeds`` scoring runs (see the module docstring for the break-even). Parameters
    (defaults and sources in ``docs/methods/data-diet.md``):

    score
        ``el2n`` (default; Fayyaz et al. find EL2N and GraNd similar after one epoch, EL2N is one
        forward), ``grand`` (all parameters, per-example gradients) or ``grand_head`` (final
        Linear layer only, closed form).
    mode, keep, offset, stratified
        the selector (:func:`select_positions`); default ``top`` with ``keep=0.7`` (the paper's
        k = 70%), ``offset=0``, not stratified.
    score_seeds
        S, the number of scoring runs averaged (default 5, Fayyaz et al.).
    score_epochs / score_steps
        when to score (give at most one; default 1.0 epoch, the paper's "at least one epoch").
        ``0`` scores the untrained model (the "early scores" end of the curve).
    seed
        the first scoring run's seed (runs use ``seed, seed+1, ...``); default the run's seed. The
        ``random`` mode draws its sample from it too.
    cache
        reuse scoring runs from the on-disk cache (default true).
    grand_chunk_size
        examples per ``vmap`` chunk for full GraNd (memory ~ this many gradient copies).
    engine, ray_workers
        ``local`` (default; this process) or ``ray``: each scoring run's scoring forward on
        ``ray_workers`` Ray Data actors (:mod:`datadiet.core.ray_pool`); the runs' training stays in
        this process. Resumable: a killed job, rerun, keeps its trained runs and finished shards.
    """

    name = "data_diet"
    mechanism = "prune"
    saves = "forward + backward of every pruned example (after S scoring runs of >= 1 epoch each)"

    score = Param("el2n", one_of(*SCORES), "'el2n' (default, one forward), 'grand' (all parameters) or 'grand_head' "
                  "(final Linear layer only)")
    mode = Param("top", one_of(*MODES), "the selector: 'top' (hardest), 'bottom' (easiest), 'offset' or 'random'")
    keep = Param(0.7, float_in(0.0, 1.0, min_open=True), "share of the training set kept (paper: k = 70%)")
    offset = Param(0.0, float_in(0.0, 1.0, max_open=True), "mode='offset': share of the hardest examples dropped")
    stratified = Param(False, boolean, "keep the class proportions of the full set")
    score_seeds = Param(5, int_at_least(1), "S, the number of scoring runs averaged (Fayyaz et al.)")
    score_epochs = Param(None, as_given(optional(float_in(0.0))),
                         "epochs of each scoring run (give at most one of score_epochs / score_steps; default 1.0)")
    score_steps = Param(None, optional(int_at_least(0)), "steps of each scoring run (0: score the untrained model)")
    seed = Param(None, optional(int_at_least(0)), "the first scoring run's seed (runs use seed, seed+1, ...); None: "
                 "the run's seed")
    cache = Param(True, boolean, "reuse scoring runs from the on-disk cache")
    grand_chunk_size = Param(8, int_at_least(1), "examples per vmap chunk for full GraNd")
    engine, ray_workers = engine_params()

    def __post_init__(self) -> None:
        if self.engine == "ray" and self.score == "grand":
            raise ConfigError("engine='ray' runs the scoring forward (score=el2n or grand_head); full GraNd "
                              "(score=grand) needs per-example gradients: use engine='local' for it")
        self.__dict__.update(zip(("mode", "keep", "offset", "stratified"), check_selector(
            mode=self.mode, keep=self.keep, offset=self.offset, stratified=self.stratified)))
        if self.score_epochs is not None and self.score_steps is not None:
            raise ConfigError(f"give score_epochs or score_steps, not both (got score_epochs={self.score_epochs}, "
                              f"score_steps={self.score_steps})")
        if self.score_epochs is not None:
            self.__dict__["score_epochs"] = check_float("score_epochs", self.score_epochs, min=0.0)
        elif self.score_steps is None:
            self.__dict__["score_epochs"] = 1.0

    # ---------------------------------------------------------------------------- the two halves
    def scoring_steps(self, n: int, batch_size: int) -> int:
        from .score_runs import steps_for_epochs

        if self.score_steps is not None:
            return self.score_steps
        return steps_for_epochs(self.score_epochs, n=n, batch_size=batch_size)

    def compute_scores(self, ctx, *, progress: bool = False, engine=None):
        """Run (or reuse from the cache) the scoring runs for ``ctx``; returns a ``ScoreResult``.

        With ``ctx.ranks`` (several processes) the runs are shared out over the ranks round-robin and
        gathered (:func:`~datadiet.methods.data_diet.score_runs.compute_scores`): every rank gets the
        same result. ``engine``: a :class:`~datadiet.core.ray_pool.RayEngine` to use instead of the one
        the ``engine`` / ``ray_workers`` parameters describe (e.g. with a cluster address)."""
        from .score_runs import ScoreCache, TrainSettings, compute_scores, data_fingerprint

        if ctx.task != "classification":
            raise DataDietError(f"data_diet scores classifiers (EL2N/GraNd need class labels), but the task is "
                                f"{ctx.task!r}; use a classification dataset, or an online method for causal LM")
        ctx.need("data_diet", "model", "train_dataset", "collator", "build_model")
        device = next(ctx.model.parameters()).device
        n = len(ctx.train_dataset)
        steps = self.scoring_steps(n, ctx.batch_size)
        base = ctx.seed if self.seed is None else self.seed
        seeds = [base + i for i in range(self.score_seeds)]
        settings = TrainSettings.from_context(ctx, grand_chunk_size=self.grand_chunk_size)
        build = ctx.build_model

        cache_base = None
        if self.cache:
            cache_base = {"model": ctx.model_name, "max_length": ctx.max_length,
                          "data": data_fingerprint(ctx.train_dataset), "device": device.type,
                          "settings": {k: v for k, v in vars(settings).items() if k not in ("score_batch_size", "grand_chunk_size")}}
            if ctx.model_name is None:  # no name to key the cache by: a fingerprint of the weights instead
                from ..ingenious.embeddings import weights_fingerprint

                cache_base["model"] = weights_fingerprint(ctx.model)
        return compute_scores(kind=self.score, seeds=seeds, steps=steps, build_model=build, dataset=ctx.train_dataset,
                              collator=ctx.collator, settings=settings, labels=ctx.labels,
                              cache=ScoreCache() if self.cache else None, cache_base=cache_base, progress=progress,
                              ranks=getattr(ctx, "ranks", None),
                              engine=engine if engine is not None else self.ray_engine())

    def ray_engine(self):
        """``None`` (engine='local') or the :class:`~datadiet.core.ray_pool.RayEngine` of these parameters."""
        from ...core.ray_pool import ray_engine

        return ray_engine(self.engine, workers=self.ray_workers)

    def select_from_scores(self, result, *, seed: int | None = None) -> Selection:
        """Apply this method's selector to precomputed scores (a ``ScoreResult``, e.g. from a scores file)."""
        if self.mode != "random" and result.kind != self.score:
            raise DataDietError(f"the scores are {result.kind!r} scores but score={self.score!r}; "
                                f"set score={result.kind} or recompute with `datadiet score --score {self.score}`")
        if self.stratified and result.labels is None:
            raise DataDietError("stratified selection needs labels, and these scores have none; set stratified=false")
        s = self.seed if self.seed is not None else (0 if seed is None else seed)
        info = {"score": {"kind": result.kind, "seeds": list(result.seeds), "steps": result.steps,
                          "cost_s": result.cost_s, "reused_s": result.reused_s}}
        return select_by_scores(result.scores, result.ids, mode=self.mode, keep=self.keep, offset=self.offset,
                                labels=result.labels, stratified=self.stratified, seed=s, method=self.name,
                                params={"score": result.kind}, info=info)

    def plan(self, ctx):
        """The selection for ``ctx``. With ``ctx.ranks`` (several processes) it runs on every rank: the
        scoring runs are shared out over the ranks and gathered, every rank selects the same subset,
        and only rank 0 writes ``scores.json``."""
        from ...core.method import Plan

        if self.mode == "random":  # the baseline: no scoring runs at all
            sel = select_by_scores(np.zeros(len(ctx.ids)), ctx.ids, mode="random", keep=self.keep,
                                   labels=ctx.labels, stratified=self.stratified,
                                   seed=ctx.seed if self.seed is None else self.seed)
            return Plan(selection=sel, info={"scoring": None})
        result = self.compute_scores(ctx)
        if not np.array_equal(result.ids, np.asarray(ctx.ids)):
            raise DataDietError("the scored examples do not match the training set's ids; clear the score cache")
        ranks = getattr(ctx, "ranks", None)
        if ctx.out_dir is not None and (ranks is None or ranks.is_main):  # several processes: rank 0 writes
            result.save(Path(ctx.out_dir) / "scores.json")
        sel = self.select_from_scores(result, seed=ctx.seed)
        scoring = {"kind": result.kind, "seeds": list(result.seeds), "steps": result.steps, "cost_s": result.cost_s,
                   "spent_s": result.spent_s, "cached": list(result.cached), "reused_s": result.reused_s}
        log.info("data_diet: kept %d of %d examples (%s, keep %.2f); scoring cost %.1f s (%.1f s reused from the cache)",
                 len(sel), sel.n_total, self.mode, self.keep, result.cost_s, result.reused_s)
        return Plan(selection=sel, info={"scoring": scoring, "selection_reused_s": result.reused_s})
