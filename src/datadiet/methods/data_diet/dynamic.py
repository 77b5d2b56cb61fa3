"""Dynamic data diet (Attendu & Corbeil 2023, "NLU on Data Diets"): re-score with EL2N during training.

Within one fine-tuning run: train on the full set until epoch ``start_epoch`` (default 1: one
initial epoch on everything), then at the start of that epoch and every ``every`` epochs after it
score every training example with EL2N on the *current* model (one no-grad forward per example, in
eval mode) and train only on the kept share (``keep``, default the hardest 50%) until the next
re-scoring. Pruned examples are skipped before the forward, so they cost nothing.

What it saves: forward + backward of every pruned example, in every epoch from ``start_epoch``
on. What it costs: one scoring forward per training example per re-scoring (about 1 unit against
3 for training it), so a pruned epoch costs about ``N (1 + 3 keep)`` units instead of ``3 N``:
with re-scoring every epoch it saves time when ``keep < 2/3``. The scoring time is measured
(``scoring_s`` in the filter's telemetry) and falls inside the run's ``train_s``; the scoring
forwards are counted in the telemetry (``scoring_forwards``), not in the engine's counts, which
stay counts of training-path work.

LR schedule: the pruned epochs take fewer optimizer steps. With ``train.schedule_by: examples``
(the default) the schedule's progress is the share of the planned example stream *seen*
(skipped examples included), so the LR at the end of every epoch is what full training would use
and it reaches its final value on the last step; with ``schedule_by: steps`` progress is
optimizer steps over the steps full training would take, so the LR never finishes decaying
(tested; use ``examples``).

The filter takes a ``score_fn`` returning one EL2N score per training example (dataset order),
so it works with any front end whose engine calls ``on_epoch_start``; :func:`el2n_score_fn`
builds one for a model, dataset and collator (several processes: each rank scores its shard of the
pool and the shards are gathered).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..._validate import check_choice, check_float, check_int
from ...errors import ConfigError, DataDietError
from .method import check_selector, select_positions, subset_sizes
from ...core.filter import BatchView, Decision, OnlineFilter
from ...core.method import Method
from ...core.params import Param, boolean, float_in, int_at_least, one_of

log = logging.getLogger(__name__)

DYNAMIC_MODES = ("top", "bottom", "offset")


def el2n_score_fn(model: torch.nn.Module, dataset, *, collator, batch_size: int = 64,
                  autocast_dtype: torch.dtype | None = None, ranks=None) -> Callable[[], np.ndarray]:
    """A ``score_fn``: EL2N of every example of ``dataset`` under ``model`` as it is when called.

    ``ranks`` (several processes): each call scores only this rank's contiguous shard
    (``ranks.shard(n)``) and gathers the shards (``gather_rows``), so the pool is scored once in all,
    not once per rank, and every rank gets every score; every rank must call it at the same time
    (each rank's filter does, at the same epoch start)."""
    from .scores import forward_scores, sharded_rows, subset, unwrap_ddp

    if ranks is None:
        def score() -> np.ndarray:
            return forward_scores(model, dataset, collator=collator, batch_size=batch_size,
                                  autocast_dtype=autocast_dtype, head=False)["el2n"]

        return score

    def score_shard(positions) -> np.ndarray:
        return forward_scores(unwrap_ddp(model), subset(dataset, positions), collator=collator,
                              batch_size=batch_size, autocast_dtype=autocast_dtype, head=False)["el2n"]

    def score_sharded() -> np.ndarray:
        return sharded_rows(ranks, len(dataset), score_shard, empty=np.zeros(0, dtype=np.float64))

    return score_sharded


class DataDietDynamic(OnlineFilter):
    """Pre-forward filter: keep only the examples selected at the latest re-scoring."""

    stage = "pre_forward"
    reason = "data_diet_dynamic"

    def __init__(
        self,
        *,
        ids: np.ndarray,
        score_fn: Callable[[], np.ndarray],
        keep: float = 0.5,
        every: int = 1,
        start_epoch: int = 1,
        epochs: int | None = None,
        mode: str = "top",
        offset: float = 0.0,
        labels: np.ndarray | None = None,
        stratified: bool = False,
    ) -> None:
        self.ids = np.asarray(ids, dtype=np.int64)
        if len(self.ids) == 0:
            raise ValueError("ids is empty: nothing to select from")
        if not callable(score_fn):
            raise TypeError("score_fn must be a callable returning one score per example")
        self.score_fn = score_fn
        self.keep = check_float("keep", keep, min=0.0, max=1.0, min_open=True)
        self.every = check_int("every", every, min=1)
        self.start_epoch = check_int("start_epoch", start_epoch, min=0)
        self.epochs = None if epochs is None else check_int("epochs", epochs, min=1)
        self.mode = check_choice("mode", mode, DYNAMIC_MODES)
        self.offset = check_float("offset", offset, min=0.0, max=1.0, max_open=True)
        subset_sizes(len(self.ids), keep=self.keep, offset=self.offset)  # offset + keep <= 1
        self.labels = None if labels is None else np.asarray(labels)
        self.stratified = bool(stratified)
        if self.stratified and self.labels is None:
            raise ConfigError("stratified=true needs the training labels")
        self.kept: torch.Tensor | None = None  # sorted ids kept since the last re-scoring; None = all
        self._last_epoch: int | None = None
        self.rescores: list[dict[str, Any]] = []
        self.scoring_s = 0.0
        self.scoring_forwards = 0
        self._seen = 0
        self._pruned = 0

    def due(self, epoch: int) -> bool:
        """Whether the examples are re-scored at the start of ``epoch``."""
        if epoch < self.start_epoch or (self.epochs is not None and epoch >= self.epochs):
            return False
        return (epoch - self.start_epoch) % self.every == 0

    def on_epoch_start(self, epoch: int) -> None:
        # The plain loop announces each epoch twice (end of the previous one, start of this one):
        # act once per epoch.
        if epoch == self._last_epoch:
            return
        self._last_epoch = int(epoch)
        if not self.due(epoch):
            return
        t0 = time.perf_counter()
        scores = np.asarray(self.score_fn(), dtype=np.float64)
        if scores.shape != self.ids.shape:
            raise DataDietError(f"score_fn returned {scores.shape} scores for {len(self.ids)} examples")
        pos = select_positions(scores, mode=self.mode, keep=self.keep, offset=self.offset, labels=self.labels,
                               stratified=self.stratified)
        self.kept = torch.from_numpy(np.sort(self.ids[pos]))
        dt = time.perf_counter() - t0
        self.scoring_s += dt
        self.scoring_forwards += len(self.ids)
        self.rescores.append({"epoch": int(epoch), "kept": len(pos), "seconds": dt,
                              "mean_score": float(scores.mean()), "kept_mean_score": float(scores[pos].mean())})
        log.info("data_diet_dynamic: epoch %d re-scored %d examples in %.1f s, keeping %d", epoch, len(self.ids),
                 dt, len(pos))

    def decide(self, batch: BatchView, losses: torch.Tensor | None) -> Decision:
        n = len(batch)
        self._seen += n
        if self.kept is None:
            return Decision(keep=torch.ones(n, dtype=torch.bool))
        keep = torch.isin(batch.ids.cpu(), self.kept)
        self._pruned += int((~keep).sum())
        return Decision(keep=keep)

    def telemetry(self) -> dict[str, Any]:
        return {"keep": self.keep, "every": self.every, "start_epoch": self.start_epoch, "mode": self.mode,
                "rescored_epochs": [r["epoch"] for r in self.rescores], "rescores": list(self.rescores),
                "scoring_s": self.scoring_s, "scoring_forwards": self.scoring_forwards,
                "pruned": self._pruned, "seen": self._seen}

    def state_dict(self) -> dict[str, Any]:
        return {"kept": None if self.kept is None else self.kept.clone(), "last_epoch": self._last_epoch,
                "rescores": [dict(r) for r in self.rescores], "scoring_s": self.scoring_s,
                "scoring_forwards": self.scoring_forwards, "seen": self._seen, "pruned": self._pruned}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.kept = None if state["kept"] is None else torch.as_tensor(state["kept"], dtype=torch.int64).clone()
        self._last_epoch = state["last_epoch"]
        self.rescores = [dict(r) for r in state["rescores"]]
        self.scoring_s = float(state["scoring_s"])
        self.scoring_forwards = int(state["scoring_forwards"])
        self._seen, self._pruned = int(state["seen"]), int(state["pruned"])


class DataDietDynamicMethod(Method):
    """Method ``data_diet_dynamic``: see :class:`DataDietDynamic`.

    Mechanism: skip before forward. Saves forward + backward of pruned examples from
    ``start_epoch`` on; costs one EL2N forward per example per re-scoring. Defaults: ``keep=0.5``
    (the paper's headline: full accuracy on 50% of the data), ``start_epoch=1`` (one initial epoch
    on the full set), ``every=1`` (re-score at every epoch start), ``mode=top`` (hardest),
    ``offset=0``, not stratified.
    """

    name = "data_diet_dynamic"
    mechanism = "skip_pre_forward"
    saves = "forward + backward of pruned examples in every epoch from start_epoch on (costs 1 EL2N forward per example per re-scoring)"

    keep = Param(0.5, float_in(0.0, 1.0, min_open=True), "share kept at each re-scoring (paper: 50%)")
    every = Param(1, int_at_least(1), "re-score every this many epochs")
    start_epoch = Param(1, int_at_least(0), "first pruned epoch, counting from 0 (one initial epoch on the full set)")
    mode = Param("top", one_of(*DYNAMIC_MODES), "'top' (hardest), 'bottom' (easiest) or 'offset'")
    offset = Param(0.0, float_in(0.0, 1.0, max_open=True), "mode='offset': share of the hardest examples dropped")
    stratified = Param(False, boolean, "keep the class proportions of the full set")

    def __post_init__(self) -> None:
        self.__dict__.update(zip(("mode", "keep", "offset", "stratified"), check_selector(
            mode=self.mode, keep=self.keep, offset=self.offset, stratified=self.stratified, modes=DYNAMIC_MODES)))

    def plan(self, ctx):
        """The filter for ``ctx``; with ``ctx.ranks`` (several processes) its re-scoring is sharded
        over the ranks (:func:`el2n_score_fn`)."""
        from ...core.method import Plan

        if ctx.task != "classification":
            raise DataDietError(f"data_diet_dynamic scores classifiers (EL2N needs class labels), but the task is "
                                f"{ctx.task!r}; use a classification dataset")
        ctx.need("data_diet_dynamic", "model", "train_dataset", "collator")
        if ctx.epochs <= self.start_epoch:
            raise ConfigError(f"data_diet_dynamic first prunes at epoch start_epoch={self.start_epoch} (counting from 0) "
                              f"but the run has train.epochs={ctx.epochs}; set train.epochs >= {self.start_epoch + 1} "
                              "or a smaller start_epoch")
        model, batch_size, autocast = ctx.model, ctx.eval_batch_size, ctx.autocast_dtype
        fn = el2n_score_fn(model, ctx.train_dataset, collator=ctx.collator, batch_size=batch_size,
                           autocast_dtype=autocast, ranks=getattr(ctx, "ranks", None))
        f = DataDietDynamic(ids=np.asarray(ctx.ids), score_fn=fn, keep=self.keep, every=self.every,
                            start_epoch=self.start_epoch, epochs=ctx.epochs, mode=self.mode, offset=self.offset,
                            labels=ctx.labels, stratified=self.stratified)
        return Plan(filters=[f])
