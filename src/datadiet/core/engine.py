"""The one step engine.

Every front end (the plain loop in :mod:`datadiet.loop`, the Hugging Face ``Trainer`` mixin in
:mod:`datadiet.integrations.hf`, the benchmark harness) pushes batches through a
:class:`StepEngine`; the selection logic lives nowhere else.

Per incoming batch of ``B`` examples the engine:

1. runs the *pre-forward* filters on the raw batch (token ids, labels, ids); skipped examples cost
   nothing;
2. if there are *post-forward* filters, forwards the surviving examples once without grad (in eval
   mode by default, see ``scoring_mode``) to get their per-example losses and lets those filters
   decide; skipped examples cost that forward. Every filter (pre and post) is then shown these
   losses through ``observe(..., trained=False)``. When no post filter needs the scoring forward
   for this batch (:meth:`~datadiet.core.filter.OnlineFilter.needs_scoring_forward` returns
   ``False`` for all of them, e.g. a loss-threshold warm-up), it is not run: the batch is kept
   whole and the filters get its losses from the training forward only;
3. puts the kept examples (with their loss weights) in a buffer and, whenever the buffer holds
   ``B`` examples, emits a full-sized training batch, which the front end forwards with grad,
   backpropagates and steps on. ``flush()`` at the end of an epoch emits the remainder.

With no filters (or filters that keep everything) the incoming batch is passed through untouched,
so the engine reproduces a plain training loop exactly. Every skipped example is counted with the
reason of the filter that skipped it.

Loss normalisation: the training loss of a batch is ``sum_i(w_i * l_i) / D`` with ``w_i`` the
filters' weights (1 by default). With ``loss_weighting="example"`` (the default) ``l_i`` is the
per-example loss (cross-entropy for classification, mean next-token loss of the sequence for a
causal LM) and ``D`` the batch size: the plain mean over the batch. With ``"token"`` (causal LM)
``l_i`` is the sequence's summed token losses and ``D`` the tokens counted. A front end may pass a
larger ``D`` (the Trainer mixin: the units of a whole accumulation window).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

from .._validate import check_choice, check_int
from ..errors import DataDietError
from ..functional.precision import autocast
from ..functional.losses import lm_token_count, lm_token_terms, per_example_ce
from .distributed import FLUSH, SUBMIT, columns_digest, shard_slice, tensor_digest
from .filter import ID_KEY, NOT_MODEL_INPUTS, STEP_KEY, WEIGHT_KEY, BatchView, OnlineFilter

Task = Literal["classification", "causal_lm"]


@dataclass
class Counts:
    """Exact work counters. ``examples_forwarded`` = no-grad + grad forwards, per example."""

    examples_seen: int = 0
    examples_forwarded: int = 0
    examples_forwarded_nograd: int = 0
    examples_forwarded_grad: int = 0
    examples_backpropagated: int = 0
    optimizer_steps: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StepResult:
    """What one :meth:`StepEngine.step` call did."""

    optimizer_steps: int
    examples_backpropagated: int
    loss: float | None  # mean training loss of the batches stepped on (None if none)


class StepEngine:
    """Forward -> filters -> backward on the kept examples, with exact counts.

    Parameters are keyword-only:

    task
        ``"classification"`` (per-example cross-entropy on ``labels``) or ``"causal_lm"``.
    batch_size
        the size of training batches emitted to the front end (normally the loader's batch size).
    filters
        online filters, applied in order within their stage.
    pad_token_id
        used when kept examples from different batches are re-batched.
    autocast_dtype
        e.g. ``torch.bfloat16`` to run forwards under autocast.
    loss_weighting
        ``"example"`` (default): every kept example counts equally in a batch's loss (a causal LM
        sequence by its mean token loss); ``"token"``: a causal LM's loss is the mean over the kept
        tokens (what the Hugging Face Trainer does with ``num_items_in_batch``).
    scoring_mode
        the mode of the no-grad scoring forward that post-forward filters decide on: ``"eval"``
        (default: dropout off, so an example's loss does not depend on a dropout draw, and about
        1.8x faster than a train-mode forward for MiniLM on CPU) or ``"train"``. Kept examples
        are always re-forwarded in train mode for the gradient.
    ranks
        several processes (:class:`datadiet.core.distributed.Ranks`): every decision is taken on the
        global batch (every rank's incoming batch, gathered), identically on every rank, and each
        rank trains its share of every global training batch of ``batch_size * world_size``
        examples; see :meth:`submit`. ``None`` (default): one process.
    """

    def __init__(
        self,
        *,
        task: Task,
        batch_size: int,
        filters: Sequence[OnlineFilter] = (),
        pad_token_id: int = 0,
        autocast_dtype: torch.dtype | None = None,
        scoring_mode: str = "eval",
        loss_weighting: str = "example",
        ranks: Any = None,
    ) -> None:
        self.loss_weighting = check_choice("loss_weighting", loss_weighting, ("example", "token"))
        self.scoring_mode = check_choice("scoring_mode", scoring_mode, ("eval", "train"))
        self.task = check_choice("task", task, ("classification", "causal_lm"))
        self.batch_size = check_int("batch_size", batch_size, min=1)
        for f in filters:
            if not isinstance(f, OnlineFilter):
                raise TypeError(f"filters must be OnlineFilter instances, got {type(f).__name__}")
        self.filters = list(filters)
        self.pre = [f for f in self.filters if f.stage == "pre_forward"]
        self.post = [f for f in self.filters if f.stage == "post_forward"]
        self.pad_token_id = int(pad_token_id)
        self.autocast_dtype = autocast_dtype
        self.counts = Counts()
        self.timings: Counter[str] = Counter()
        self.epoch = 0
        self.history: list[dict[str, float]] = []  # one row per incoming batch
        self._buffer: list[dict[str, torch.Tensor]] = []
        self._skipped: Counter[str] = Counter()
        self._announced: int | None = None  # the epoch the filters were last told about
        self.ranks = ranks
        self.world_size = 1 if ranks is None else int(ranks.world_size)
        # several processes: the work of every rank together (identical on every rank, since every
        # rank sees every decision); ``counts`` / ``skipped()`` are this rank's own work
        self._global = Counts()
        self._skipped_global: Counter[str] = Counter()
        self._submits = 0
        self._digest = 0  # checksum of the last global decision, compared across ranks at the next submit

    # ------------------------------------------------------------------ forward
    def model_inputs(self, batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
        """The model's keyword inputs of ``batch`` on ``device`` (no ids, weights, labels or document ids)."""
        return {k: v.to(device, non_blocking=True) for k, v in batch.items() if k not in NOT_MODEL_INPUTS}

    def loss_terms(self, outputs: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per example: ``(loss sum, items)`` from a model's outputs, [B] each.

        Classification: the cross-entropy and 1. Causal LM: the summed next-token losses of the
        sequence and the number of tokens counted (labels not -100, not padding). ``outputs`` may
        carry ``logits``, or (TRL's fused LM head) per-token ``log_probs`` with a ``label_mask``.
        """
        logits = getattr(outputs, "logits", None) if not torch.is_tensor(outputs) else outputs
        if logits is None and isinstance(outputs, dict):
            logits = outputs.get("logits")
        device = (logits if logits is not None else outputs.log_probs).device
        if self.task == "classification":
            if "labels" not in batch:
                raise ValueError("a classification batch needs a 'labels' tensor")
            if logits is None or logits.ndim != 2:
                shape = None if logits is None else tuple(logits.shape)
                raise DataDietError(
                    f"task='classification' needs [batch, classes] logits from the model, got {shape}; for a causal "
                    "language model use task='causal_lm'")
            ce = per_example_ce(logits, batch["labels"].to(device))
            return ce, torch.ones_like(ce)
        if logits is None:
            log_probs, mask = getattr(outputs, "log_probs", None), getattr(outputs, "label_mask", None)
            if log_probs is None or mask is None:
                raise DataDietError("the model's outputs have neither logits nor per-token log_probs; datadiet needs "
                                    "one of them to compute a loss per example")
            return -(log_probs.float() * mask).sum(dim=1), mask.sum(dim=1)
        labels = batch.get("labels")
        am = batch.get("attention_mask")
        return lm_token_terms(logits, batch["input_ids"].to(device), None if am is None else am.to(device),
                              labels=None if labels is None else labels.to(device))

    def forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> Any:
        """The model's outputs on ``batch`` (under the engine's autocast)."""
        device = next(model.parameters()).device
        with autocast(self.autocast_dtype, device.type):
            return model(**self.model_inputs(batch, device))

    def per_example_loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Forward ``batch`` through ``model`` and return one loss per example (a causal LM's: its mean
        next-token loss)."""
        sums, items = self.loss_terms(self.forward(model, batch), batch)
        return sums / items.clamp(min=1)

    def loss_units(self, batch: dict[str, torch.Tensor]) -> float:
        """What a training batch counts for in the loss's denominator: its examples, or (token
        weighting) the tokens its loss counts. A rank's share of a global batch (several processes)
        counts for the global batch's units over the world size (data-parallel training averages
        the ranks' gradients)."""
        if STEP_KEY in batch:
            return float(batch[STEP_KEY][0])
        if self.loss_weighting == "token" and self.task == "causal_lm":
            return int(lm_token_count(batch["input_ids"], batch.get("attention_mask"), batch.get("labels")).sum())
        return int(batch["input_ids"].shape[0])

    # ------------------------------------------------------------------ filtering
    def _view(self, batch: dict[str, torch.Tensor]) -> BatchView:
        ids = batch.get(ID_KEY)
        if ids is None:
            raise ValueError(
                f"batches need a stable '{ID_KEY}' column so filters can track examples; "
                "datadiet's collators add it (see datadiet.data.Collator)"
            )
        return BatchView(
            ids=ids, input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"),
            labels=batch.get("labels") if self.task == "classification" else None,
        )

    def _apply(self, stage_filters, view, losses, keep, weight, mine=None):
        for f in stage_filters:
            if not bool(keep.any()):
                break
            d = f.decide(view, losses)
            newly = keep & ~d.keep.to(torch.bool)
            n = int(newly.sum())
            if n and mine is not None:  # several processes: this rank counts its own examples
                self._skipped_global[f.reason] += n
                n = int((newly & mine).sum())
            if n:
                self._skipped[f.reason] += n
            keep = keep & d.keep.to(torch.bool)
            if d.weight is not None:
                weight = weight * d.weight.to(weight.dtype)
        return keep, weight

    def submit(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Filter one incoming batch; return the training batches now ready (0 or 1).

        Several processes (``ranks``): every rank calls this with its own incoming batch (it may
        have no rows), and every rank gets back the same number of ready batches (see
        :meth:`_submit_ranks`)."""
        if self.ranks is not None:
            return self._submit_ranks(model, batch)
        t0 = time.perf_counter()
        self._announce()
        n = int(batch["input_ids"].shape[0])
        self.counts.examples_seen += n
        row: dict[str, float] = {"epoch": self.epoch, "seen": n}
        keep = torch.ones(n, dtype=torch.bool)
        weight = torch.ones(n)
        if self.filters:
            view = self._view(batch)
            keep, weight = self._apply(self.pre, view, None, keep, weight)
            # A post filter may waive the scoring forward for a batch (``needs_scoring_forward``,
            # e.g. a loss-threshold warm-up that trains on everything): when none needs it, the
            # batch is kept whole and the filters get its losses from the training forward.
            if self.post and bool(keep.any()) and any(f.needs_scoring_forward() for f in self.post):
                sub = _select(batch, keep) if not bool(keep.all()) else batch
                sub_losses = self._score(model, sub)
                m = int(sub["input_ids"].shape[0])
                self.counts.examples_forwarded += m
                self.counts.examples_forwarded_nograd += m
                row["full_loss"] = float(sub_losses.mean())
                losses = torch.full((n,), float("nan"))
                losses[keep] = sub_losses
                keep, weight = self._apply(self.post, view, losses, keep, weight)
                mask = ~torch.isnan(losses)
                scored = _view_select(view, mask)
                for f in self.filters:  # pre filters too: they let these examples through
                    f.observe(scored, losses[mask], trained=False)
        self.timings["filter_s"] += time.perf_counter() - t0
        kept = int(keep.sum())
        row["kept"] = kept
        self.history.append(row)
        if kept == n and not self._buffer and (weight == 1).all() and n == self.batch_size:
            return [batch]  # nothing skipped: pass through untouched (exact plain-loop equivalence)
        if kept == 0:
            return []
        rows = _rows(batch, keep, weight if not bool((weight == 1).all()) else None)
        self._buffer.extend(rows)
        ready = []
        while len(self._buffer) >= self.batch_size:
            chunk, self._buffer = self._buffer[: self.batch_size], self._buffer[self.batch_size :]
            ready.append(_collate(chunk, self.pad_token_id))
        return ready

    def _score(self, model: torch.nn.Module, sub: dict[str, torch.Tensor]) -> torch.Tensor:
        """The no-grad scoring forward: per-example losses on the CPU. Runs the unwrapped module (a
        DDP wrapper would start collectives that other ranks do not join)."""
        inner = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
        was_training = inner.training
        inner.train(self.scoring_mode == "train")
        try:
            with torch.no_grad():
                return self.per_example_loss(inner, sub).detach().float().cpu()
        finally:
            inner.train(was_training)

    def _submit_ranks(self, model: torch.nn.Module, local: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """:meth:`submit` on several processes: global decisions, a global buffer, one share per rank.

        1. The ranks check that they agree (this call's number, the epoch, the buffer, the batch's
           columns and the checksum of the last decision) and raise ``RankMismatchError`` if not.
        2. The incoming batches are gathered into the global batch (rank order). Pre-forward filters
           decide on it on every rank: same inputs, same state, same decisions.
        3. Post-forward filters: each rank scores its own surviving examples, the losses are
           gathered, and the filters decide on the global losses.
        4. Kept examples go to the global buffer (the same on every rank). Each global training
           batch of ``batch_size * world_size`` examples is split into equal contiguous shares,
           one per rank, each carrying the loss denominator of the global batch (``STEP_KEY``).

        With no filters and full batches on every rank nothing is gathered: each rank's batch passes
        through (with the global denominator), which is plain data-parallel training.
        """
        t0 = time.perf_counter()
        R = self.ranks
        self._announce()
        self._submits += 1
        n_local = int(local["input_ids"].shape[0])
        header = R.agree(SUBMIT, {
            "submit": self._submits, "epoch": self.epoch, "buffered": len(self._buffer),
            "columns": columns_digest(local), "last_decision": self._digest}, extra=[n_local])
        if any(h[6] > self.batch_size for h in header):
            raise DataDietError(f"an incoming batch holds {max(h[6] for h in header)} examples, more than the engine's "
                                f"batch size {self.batch_size}; build the engine with the loader's batch size per rank")
        sizes = [h[6] for h in header]
        n = sum(sizes)
        B, W = self.batch_size, self.world_size
        self.counts.examples_seen += n_local
        self._global.examples_seen += n
        row: dict[str, float] = {"epoch": self.epoch, "seen": n_local}
        if not self.filters and not self._buffer and all(k == B for k in sizes):
            self.history.append({**row, "kept": n_local})
            self.timings["sync_s"] += time.perf_counter() - t0
            units = self.loss_units(local)
            if self.loss_weighting == "token" and self.task == "causal_lm":
                units = R.sum([units], what="a batch's tokens")[0]
            else:
                units = float(n)
            return [self._share(local, denominator=units / W, rows=n)]
        glob = self._gather_batch(local)
        self.timings["sync_s"] += time.perf_counter() - t0
        offset = sum(sizes[: R.rank])
        mine = torch.zeros(n, dtype=torch.bool)
        mine[offset : offset + n_local] = True
        keep = torch.ones(n, dtype=torch.bool)
        weight = torch.ones(n)
        if self.filters and n:
            view = self._view(glob)
            keep, weight = self._apply(self.pre, view, None, keep, weight, mine)
            if self.post and bool(keep.any()) and any(f.needs_scoring_forward() for f in self.post):
                local_keep = keep[mine]
                m = int(local_keep.sum())
                own = self._score(model, _select(local, local_keep)) if m else torch.zeros(0)
                t1 = time.perf_counter()
                scored, _ = R.gather_rows(own.float(), what="scoring losses")
                self.timings["sync_s"] += time.perf_counter() - t1
                self.counts.examples_forwarded += m
                self.counts.examples_forwarded_nograd += m
                self._global.examples_forwarded += int(keep.sum())
                self._global.examples_forwarded_nograd += int(keep.sum())
                losses = torch.full((n,), float("nan"))
                losses[keep] = scored
                row["full_loss"] = float(scored.mean())
                keep, weight = self._apply(self.post, view, losses, keep, weight, mine)
                mask = ~torch.isnan(losses)
                seen = _view_select(view, mask)
                for f in self.filters:
                    f.observe(seen, losses[mask], trained=False)
        self._digest = tensor_digest(keep, weight)
        self.timings["filter_s"] += time.perf_counter() - t0
        row["kept"] = int((keep & mine).sum())
        self.history.append(row)
        if bool(keep.any()):
            self._buffer.extend(_rows(glob, keep, weight if not bool((weight == 1).all()) else None))
        ready = []
        while len(self._buffer) >= B * W:
            chunk, self._buffer = self._buffer[: B * W], self._buffer[B * W :]
            ready.append(self._split(chunk))
        return ready

    def _gather_batch(self, local: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every rank's incoming batch, concatenated in rank order (per-token columns right-padded)."""
        out = {}
        for k in sorted(local):
            pad = self.pad_token_id if k == "input_ids" else (-100 if k == "labels" else 0)
            out[k], _ = self.ranks.gather_rows(local[k].cpu(), pad=pad, what=f"the batch column {k!r}")
        return out

    def _share(self, batch: dict[str, torch.Tensor], *, denominator: float, rows: int,
               participation: bool = False) -> dict[str, torch.Tensor]:
        out = dict(batch)
        out[STEP_KEY] = torch.tensor([float(denominator), float(rows), 1.0 if participation else 0.0],
                                     dtype=torch.float64)
        return out

    def _split(self, chunk: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """This rank's share of a global training batch (a list of rows), with the global denominator.
        A rank whose share is empty (fewer rows than ranks) gets one zero-weight row to take part in
        the gradient all-reduce; it counts as no work."""
        R, W = self.ranks, self.world_size
        if self.loss_weighting == "token" and self.task == "causal_lm":
            units = float(sum(int(lm_token_count(r["input_ids"][None], None if "attention_mask" not in r else
                                                 r["attention_mask"][None], None if "labels" not in r else
                                                 r["labels"][None]).sum()) for r in chunk))
        else:
            units = float(len(chunk))
        mine = chunk[shard_slice(len(chunk), rank=R.rank, world_size=W)]
        if not mine:
            row = dict(chunk[0])
            row[WEIGHT_KEY] = torch.tensor(0.0)
            return self._share(_collate([row], self.pad_token_id), denominator=max(units, 1.0) / W, rows=len(chunk),
                               participation=True)
        return self._share(_collate([dict(r) for r in mine], self.pad_token_id), denominator=max(units, 1.0) / W,
                           rows=len(chunk))

    def flush(self) -> list[dict[str, torch.Tensor]]:
        """Emit the partial training batch left in the buffer (end of an epoch).

        Several processes: every rank calls it; the buffer is global, so every rank gets its share
        of the same last batch (or none, on every rank)."""
        if self.ranks is not None:  # a checkpoint: a rank still submitting batches raises instead of hanging
            self.ranks.agree(FLUSH, {"epoch": self.epoch, "buffered": len(self._buffer)})
        if not self._buffer:
            return []
        chunk, self._buffer = self._buffer, []
        if self.ranks is not None:
            return [self._split(chunk)]
        return [_collate(chunk, self.pad_token_id)]

    def drop_buffer(self, reason: str) -> int:
        """Discard the buffered kept examples, counting them as skipped under ``reason`` (several
        processes: the global buffer is shared out over the ranks' counts as a batch would be)."""
        n = len(self._buffer)
        if n:
            self._buffer = []
            if self.ranks is not None:
                self._skipped_global[reason] += n
                s = shard_slice(n, rank=self.ranks.rank, world_size=self.world_size)
                n = s.stop - s.start
            if n:
                self._skipped[reason] += n
        return n

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    # ------------------------------------------------------------------ training
    def training_loss(
        self,
        model: torch.nn.Module,
        batch: dict[str, torch.Tensor],
        *,
        outputs: Any = None,
        denominator: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Grad forward of a ready batch: returns ``(loss, per_example_losses)``.

        ``loss = sum_i(w_i * l_i) / D``: with example weighting ``l_i`` is the example's loss (a causal LM's
        mean next-token loss) and ``D`` the batch size; with token weighting (causal LM) ``l_i`` is the
        sequence's summed token losses and ``D`` its token count. ``denominator`` replaces ``D`` (the
        Trainer front end passes the units of a whole accumulation window, see :meth:`loss_units`).
        ``outputs``: the model's outputs when the front end has already forwarded the batch.

        Counts the examples as forwarded with grad and as backpropagated (the caller is expected
        to call ``loss.backward()``), and feeds the per-example losses back to the filters.

        Several processes: ``batch`` is this rank's share of a global training batch; its
        denominator is the global one (``STEP_KEY``), and the filters observe the losses of the
        whole global batch (gathered), so their state stays the same on every rank. A share that
        only participates (a zero-weight row) has a zero loss and counts as no work.
        """
        if outputs is None:
            outputs = self.forward(model, batch)
        sums, items = self.loss_terms(outputs, batch)
        losses = sums / items.clamp(min=1)
        w = batch.get(WEIGHT_KEY)
        w = None if w is None else w.to(losses.device, losses.dtype)
        if self.loss_weighting == "token" and self.task == "causal_lm":
            num, units = (sums if w is None else sums * w).sum(), items.sum()
        else:
            num, units = (losses if w is None else losses * w).sum(), losses.numel()
        step = batch.get(STEP_KEY)
        if denominator is None and step is not None:
            denominator = float(step[0])
        loss = num / (float(denominator) if denominator is not None else max(int(units), 1))
        only_participates = step is not None and bool(step[2] > 0)
        m = 0 if only_participates else int(losses.shape[0])
        self.counts.examples_forwarded += m
        self.counts.examples_forwarded_grad += m
        self.counts.examples_backpropagated += m
        if step is not None:
            g = int(step[1])
            self._global.examples_forwarded += g
            self._global.examples_forwarded_grad += g
            self._global.examples_backpropagated += g
        if self.filters and ID_KEY in batch:
            det = losses.detach().float().cpu()
            view = self._view(batch)
            if self.ranks is not None:
                t0 = time.perf_counter()
                view, det = self._gather_view(view, det, 0 if only_participates else m)
                self.timings["sync_s"] += time.perf_counter() - t0
            for f in self.filters:
                f.observe(view, det, trained=True)
        return loss, losses

    def _gather_view(self, view: BatchView, losses: torch.Tensor, m: int) -> tuple[BatchView, torch.Tensor]:
        """The first ``m`` rows of every rank's view and losses, concatenated in rank order."""
        def g(t, pad=0):
            return self.ranks.gather_rows(t[:m].cpu(), pad=pad, what="training losses")[0]

        am = None if view.attention_mask is None else g(view.attention_mask)
        labels = None if view.labels is None else g(view.labels, pad=-100)
        return BatchView(ids=g(view.ids), input_ids=g(view.input_ids, self.pad_token_id), attention_mask=am,
                         labels=labels), g(losses)

    def note_optimizer_step(self) -> None:
        self.counts.optimizer_steps += 1
        if self.ranks is not None:
            self._global.optimizer_steps += 1

    @property
    def global_counts(self) -> Counts:
        """The work of every rank together (one process: :attr:`counts`); the same on every rank."""
        if self.ranks is None:
            return self.counts
        self._global.skipped = dict(self._skipped_global)
        return self._global

    def global_skipped(self) -> dict[str, int]:
        """Skipped examples per reason, over every rank."""
        return dict(self._skipped) if self.ranks is None else dict(self._skipped_global)

    def step(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        batch: dict[str, torch.Tensor],
        *,
        max_grad_norm: float | None = None,
        before_optimizer_step: Callable[[], None] | None = None,
    ) -> StepResult:
        """The plain-loop step: submit, then forward/backward/step each ready batch."""
        return self._train_on(model, optimizer, self.submit(model, batch), max_grad_norm, before_optimizer_step)

    def end_epoch(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        max_grad_norm: float | None = None,
        before_optimizer_step: Callable[[], None] | None = None,
    ) -> StepResult:
        """Train on what is left in the buffer, then advance the epoch counter.

        The next epoch is announced to the filters (``on_epoch_start``) once, when its first batch
        arrives or when the front end calls :meth:`start_epoch` for it, whichever comes first; an
        epoch that never starts is never announced."""
        res = self._train_on(model, optimizer, self.flush(), max_grad_norm, before_optimizer_step)
        self.epoch += 1
        return res

    def bind(self, ctx: Any) -> None:
        """Let every filter fill in what it was built without from a planning context (see ``OnlineFilter.bind``)."""
        for f in self.filters:
            f.bind(ctx)

    def start_epoch(self, epoch: int) -> None:
        """Begin pass ``epoch``: the filters' ``on_epoch_start`` runs once per epoch, however often this is called."""
        self.epoch = int(epoch)
        self._announce()

    def _announce(self) -> None:
        if self._announced != self.epoch:
            self._announced = self.epoch
            for f in self.filters:
                f.on_epoch_start(self.epoch)

    def _train_on(self, model, optimizer, ready, max_grad_norm, before_optimizer_step) -> StepResult:
        if not ready:
            return StepResult(0, 0, None)
        t0 = time.perf_counter()
        total, nb, steps = 0.0, 0, 0
        for tb in ready:
            loss, losses = self.training_loss(model, tb)
            loss.backward()
            if max_grad_norm is not None and max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
            if before_optimizer_step is not None:
                before_optimizer_step()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            self.note_optimizer_step()
            total += float(loss.detach()) if self.ranks is None else self.ranks.sum([float(loss.detach())], what="a step's loss")[0] / self.world_size
            nb += int(losses.shape[0])
            steps += 1
        self.timings["train_s"] += time.perf_counter() - t0
        return StepResult(steps, nb, total / steps)

    # ------------------------------------------------------------------ reporting & state
    def skipped(self) -> dict[str, int]:
        return dict(self._skipped)

    def summary(self) -> dict[str, Any]:
        """Counts (over every rank), timings and the filters' telemetry. Several processes: also
        ``world_size`` and ``per_rank`` (every rank's own counts; a collective, so every rank calls it)."""
        c = self.counts
        c.skipped = dict(self._skipped)
        if self.ranks is None:
            out = c.as_dict()
        else:
            out = self.global_counts.as_dict()
            out["world_size"] = self.world_size
            out["per_rank"] = self.ranks.gather_objects(c.as_dict())
        out["timings"] = dict(self.timings)
        out["filters"] = {type(f).__name__: f.telemetry() for f in self.filters}
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "counts": self.counts.as_dict(),
            "skipped": dict(self._skipped),
            "epoch": self.epoch,
            "announced": self._announced,
            "buffer": [dict(r) for r in self._buffer],
            "filters": [f.state_dict() for f in self.filters],
            **({} if self.ranks is None else {"ranks": {
                "world_size": self.world_size, "global": self._global.as_dict(),
                "skipped_global": dict(self._skipped_global), "submits": self._submits, "digest": self._digest}}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.counts = Counts(**state["counts"])
        self._skipped = Counter(state["skipped"])
        self.epoch = int(state["epoch"])
        self._announced = state.get("announced")
        self._buffer = [dict(r) for r in state["buffer"]]
        if len(state["filters"]) != len(self.filters):
            raise ValueError(
                f"saved engine state has {len(state['filters'])} filters, this engine has "
                f"{len(self.filters)}; resume with the same method settings"
            )
        for f, s in zip(self.filters, state["filters"]):
            f.load_state_dict(s)
        r = state.get("ranks")
        if (r["world_size"] if r else 1) != self.world_size:
            raise DataDietError(f"this state was saved by a run on {r['world_size'] if r else 1} processes; resume it "
                                f"on as many (this run has {self.world_size})")
        if r:
            self._global = Counts(**r["global"])
            self._skipped_global = Counter(r["skipped_global"])
            self._submits, self._digest = int(r["submits"]), int(r["digest"])


# ---------------------------------------------------------------------- batch helpers (pure)
def _select(batch: dict[str, torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v[mask] for k, v in batch.items()}


def _view_select(view: BatchView, mask: torch.Tensor) -> BatchView:
    return BatchView(
        ids=view.ids[mask], input_ids=view.input_ids[mask],
        attention_mask=None if view.attention_mask is None else view.attention_mask[mask],
        labels=None if view.labels is None else view.labels[mask],
    )


def _rows(batch, keep, weight) -> list[dict[str, torch.Tensor]]:
    """Split the kept examples of a padded batch into unpadded per-example rows."""
    idx = keep.nonzero().flatten().tolist()
    am = batch.get("attention_mask")
    rows = []
    for i in idx:
        length = int(am[i].sum()) if am is not None else batch["input_ids"].shape[1]
        r = {}
        for k, v in batch.items():
            if v.ndim >= 2 and v.shape[1] == batch["input_ids"].shape[1]:
                r[k] = v[i, :length]
            else:
                r[k] = v[i]
        if weight is not None:
            r[WEIGHT_KEY] = weight[i]
        rows.append(r)
    return rows


def _collate(rows: list[dict[str, torch.Tensor]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad per-example rows back into a batch."""
    keys = set().union(*(r.keys() for r in rows))
    if WEIGHT_KEY in keys:
        for r in rows:
            r.setdefault(WEIGHT_KEY, torch.tensor(1.0))
    out: dict[str, torch.Tensor] = {}
    seq_len = max(int(r["input_ids"].shape[0]) for r in rows)
    for k in keys:
        vals = [r[k] for r in rows]
        if vals[0].ndim >= 1:  # per-token tensor: right-pad
            pad = pad_token_id if k == "input_ids" else (-100 if k == "labels" else 0)
            padded = torch.full((len(vals), seq_len, *vals[0].shape[1:]), pad, dtype=vals[0].dtype)
            for i, v in enumerate(vals):
                padded[i, : v.shape[0]] = v
            out[k] = padded
        else:
            out[k] = torch.stack(vals)
    return out
