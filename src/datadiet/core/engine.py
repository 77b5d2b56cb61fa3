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
from .filter import ID_KEY, NOT_MODEL_INPUTS, WEIGHT_KEY, BatchView, OnlineFilter

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

    def loss_units(self, batch: dict[str, torch.Tensor]) -> int:
        """What a training batch counts for in the loss's denominator: its examples, or (token
        weighting) the tokens its loss counts."""
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

    def _apply(self, stage_filters, view, losses, keep, weight):
        for f in stage_filters:
            if not bool(keep.any()):
                break
            d = f.decide(view, losses)
            newly = keep & ~d.keep.to(torch.bool)
            n = int(newly.sum())
            if n:
                self._skipped[f.reason] += n
            keep = keep & d.keep.to(torch.bool)
            if d.weight is not None:
                weight = weight * d.weight.to(weight.dtype)
        return keep, weight

    def submit(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Filter one incoming batch; return the training batches now ready (0 or 1)."""
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
                was_training = model.training
                model.train(self.scoring_mode == "train")
                try:
                    with torch.no_grad():
                        sub_losses = self.per_example_loss(model, sub).detach().float().cpu()
                finally:
                    model.train(was_training)
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

    def flush(self) -> list[dict[str, torch.Tensor]]:
        """Emit the partial training batch left in the buffer (end of an epoch)."""
        if not self._buffer:
            return []
        chunk, self._buffer = self._buffer, []
        return [_collate(chunk, self.pad_token_id)]

    def drop_buffer(self, reason: str) -> int:
        """Discard the buffered kept examples, counting them as skipped under ``reason``."""
        n = len(self._buffer)
        if n:
            self._buffer = []
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
        loss = num / (float(denominator) if denominator is not None else max(int(units), 1))
        m = int(losses.shape[0])
        self.counts.examples_forwarded += m
        self.counts.examples_forwarded_grad += m
        self.counts.examples_backpropagated += m
        if self.filters and ID_KEY in batch:
            det = losses.detach().float().cpu()
            view = self._view(batch)
            for f in self.filters:
                f.observe(view, det, trained=True)
        return loss, losses

    def note_optimizer_step(self) -> None:
        self.counts.optimizer_steps += 1

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
            total += float(loss.detach())
            nb += int(losses.shape[0])
            steps += 1
        self.timings["train_s"] += time.perf_counter() - t0
        return StepResult(steps, nb, total / steps)

    # ------------------------------------------------------------------ reporting & state
    def skipped(self) -> dict[str, int]:
        return dict(self._skipped)

    def summary(self) -> dict[str, Any]:
        c = self.counts
        c.skipped = dict(self._skipped)
        out = c.as_dict()
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
