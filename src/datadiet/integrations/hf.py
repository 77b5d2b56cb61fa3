"""The Hugging Face ``Trainer`` front end.

``DataDietMixin`` goes *before* any ``transformers.Trainer`` subclass::

    class MyTrainer(DataDietMixin, Trainer): ...          # or (DataDietMixin, SFTTrainer)
    trainer = MyTrainer(model=model, args=args, train_dataset=ds, filters=[RandomSkip(rate=0.5)])

The Trainer keeps everything it owns (data loading, optimizer, LR schedule, clipping, mixed
precision, logging, checkpoints, evaluation); every incoming training batch goes through the same
:class:`datadiet.engine.StepEngine` as the plain loop, which holds all the selection logic. The mixin
only overrides the seams where the engine plugs in:

``training_step``
    submits the incoming batch to the engine. When the engine has a training batch ready, the
    Trainer's own ``training_step`` forwards and backpropagates it; when it has none (everything so
    far was skipped or is still buffered), a detached zero loss is returned and *no* backward
    happens, so every gradient stays ``None`` and the Trainer's ``optimizer.step()`` leaves the
    parameters (and AdamW's moments and step counts) untouched: torch optimizers skip parameters
    whose ``grad`` is ``None``, and clipping an all-``None`` gradient is a no-op.
``compute_loss``
    computes the training loss through :meth:`StepEngine.training_loss`, which applies the
    filters' per-example weights, counts the work and feeds the losses back to the filters.
    Evaluation falls back to the Trainer's ``compute_loss``.
``prediction_step``
    drops the id column, which the model does not accept, before evaluation and prediction.
``_set_signature_columns_if_needed``
    keeps the stable id column (and ``labels``) through ``remove_unused_columns``, for
    ``datasets.Dataset`` inputs and collator-wrapped torch datasets alike.
``log``
    adds the engine's counts (``datadiet/...`` keys) to every log written during training.

Loss normalisation: the loss of a training batch is the engine's, ``sum_i(w_i * l_i) / B`` over the
``B`` kept examples of that batch (the plain mean when no filter sets weights); the Trainer's
``num_items_in_batch`` token count is ignored. ``model_accepts_loss_kwargs`` is set to ``False`` and
``loss_is_scaled_for_ga`` to ``False``, so the Trainer divides the loss by the gradient accumulation
steps itself, as for any per-batch mean. With gradient accumulation, micro-steps that have no ready
training batch add no gradient, so such an optimizer step averages over fewer batches' worth.

Epoch boundaries: the plain loop trains the partial batch left in the engine's buffer at the end of
every epoch; the Trainer has no step to spare there. Here the leftover (< batch size) kept examples
of an epoch are carried over and lead the next epoch's first training batch. At the end of training
(the Trainer's last step) the buffer is flushed and trained on as a final, smaller batch: if the last
incoming batch also completed a full training batch, that one takes one extra optimizer step first
(through the Trainer's own ``training_step``, ``_clip_grad_norm`` and ``optimizer.step``), exactly
as the plain loop's last step followed by its end-of-epoch flush. If training stops early (a
callback's ``should_training_stop``), the leftover is dropped and counted as skipped with reason
``"buffer_leftover"``. A one-epoch run therefore trains the same batches as :func:`datadiet.loop.fit`.

Counts: the Trainer's ``global_step`` counts incoming batches (its LR schedule follows the example
stream, like ``fit(schedule_by="examples")``); the engine's ``optimizer_steps`` counts the steps
that had a backward (:class:`DataDietCallback` notes them after each ``optimizer.step()``).

Not supported yet (each raises a :class:`~datadiet.errors.DataDietError` naming the fix): several
processes (ranks would disagree on which steps have a backward), ``fp16`` (its gradient scaler fails
on a step with no gradients; use ``bf16``), ``auto_find_batch_size``, ``label_smoothing_factor`` and
``compute_loss_func`` (the engine computes the per-example training loss), packed / padding-free
batches (no per-example rows to skip). The engine's state is not saved in Trainer checkpoints.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..engine import ID_KEY, StepEngine, Task
from ..errors import DataDietError, missing_extra
from ..online.base import OnlineFilter

try:
    from transformers import Trainer, TrainerCallback
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise missing_extra("transformers", "hf") from e

log = logging.getLogger(__name__)

#: skip reason of the kept examples still buffered when training stops early.
LEFTOVER_REASON = "buffer_leftover"


def _pad_token_id(processing_class: Any) -> int:
    """The pad token of a tokenizer or of a processor's tokenizer; 0 when there is none."""
    tok = getattr(processing_class, "tokenizer", processing_class)
    pad = getattr(tok, "pad_token_id", None)
    return int(pad) if pad is not None else 0


def _packed_reason(inputs: Mapping[str, Any]) -> str | None:
    """Why ``inputs`` looks packed / padding-free (no per-example axis), or ``None``."""
    keys = sorted(k for k in inputs if k.startswith("cu_seq") or k in ("seq_idx", "max_length_q", "max_length_k"))
    if keys:
        return f"it has the keys {keys}"
    pos = inputs.get("position_ids")
    one_row = torch.is_tensor(pos) and pos.ndim == 2 and pos.shape[0] == 1 and pos.shape[1] > 1
    if one_row and bool((pos[0, 1:] == 0).any()):
        return "its 'position_ids' restart at 0 inside a single row"
    return None


class DataDietMixin:
    """Put before a ``transformers.Trainer`` subclass to train through a :class:`StepEngine`.

    Keyword-only parameters (everything else goes to the Trainer):

    filters
        online filters, as for :class:`StepEngine`.
    task
        ``"classification"`` (per-example cross-entropy on ``labels``) or ``"causal_lm"``.
    id_column
        the batch column holding a stable integer id per example (required when there are filters).

    The engine is ``self.datadiet_engine``; its batch size is the Trainer's training batch size per
    forward (``args.train_batch_size``: ``per_device_train_batch_size`` times the GPUs of a
    ``DataParallel`` run, i.e. the size of the incoming batches), its pad token the processing
    class's. It runs without autocast: the Trainer sets up mixed precision itself.
    """

    #: the engine's loss is a per-batch mean: the Trainer divides it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        *args: Any,
        filters: Sequence[OnlineFilter] = (),
        task: Task = "classification",
        id_column: str = ID_KEY,
        **kwargs: Any,
    ) -> None:
        # Set before the Trainer's __init__, which may already look at the signature columns.
        self.datadiet_id_column = str(id_column)
        self._dd_pending_step = False  # a backward happened since the last optimizer step
        self._dd_predicting = False
        self._dd_loss_sum: torch.Tensor | None = None
        self._dd_loss_batches = 0
        super().__init__(*args, **kwargs)
        self._dd_check_args()
        # Never pass num_items_in_batch to the model: the engine computes its own per-batch mean.
        self.model_accepts_loss_kwargs = False
        self.datadiet_engine = StepEngine(
            task=task,
            batch_size=self.args.train_batch_size,
            filters=filters,
            pad_token_id=_pad_token_id(getattr(self, "processing_class", None)),
            autocast_dtype=None,
        )
        self.add_callback(DataDietCallback(self))

    def _dd_check_args(self) -> None:
        args = self.args
        if args.world_size > 1:
            raise DataDietError(
                f"DataDietMixin runs in one process only, but this run has {args.world_size} processes: "
                "ranks would disagree on which steps have a backward. Launch a single process "
                "(one GPU, or several through DataParallel)."
            )
        if args.fp16:
            raise DataDietError(
                "DataDietMixin does not support fp16=True: its gradient scaler fails on steps where every "
                "example was skipped (no gradients). Use bf16=True, or full precision."
            )
        if args.auto_find_batch_size:
            raise DataDietError(
                "DataDietMixin needs a fixed batch size; set auto_find_batch_size=False and choose "
                "per_device_train_batch_size yourself."
            )
        if getattr(self, "label_smoother", None) is not None or getattr(self, "compute_loss_func", None) is not None:
            raise DataDietError(
                "DataDietMixin computes the per-example training loss itself, so label_smoothing_factor and "
                "compute_loss_func would be ignored; set label_smoothing_factor=0 and drop compute_loss_func."
            )

    # ------------------------------------------------------------------ columns
    def _set_signature_columns_if_needed(self) -> None:
        """The Trainer's model-signature columns, plus the id column and ``labels``.

        Both ``_remove_unused_columns`` (``datasets.Dataset``) and ``RemoveColumnsCollator`` (other
        datasets) keep only these columns, so without this the stable ids would be removed.
        """
        super()._set_signature_columns_if_needed()
        for col in (self.datadiet_id_column, "labels"):
            if col not in self._signature_columns:
                self._signature_columns.append(col)

    def _dd_strip_ids(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        drop = {self.datadiet_id_column, ID_KEY}
        return {k: v for k, v in inputs.items() if k not in drop}

    def _dd_check_batch(self, inputs: Any) -> dict[str, Any]:
        """Validate an incoming training batch; return it with the ids under the engine's key."""
        if not isinstance(inputs, Mapping) or "input_ids" not in inputs:
            raise DataDietError(
                "DataDietMixin needs dict batches with an 'input_ids' tensor (one row per example); "
                f"got {type(inputs).__name__}{' without input_ids' if isinstance(inputs, Mapping) else ''}."
            )
        why = _packed_reason(inputs)
        if why is not None:
            raise DataDietError(
                f"this training batch is packed / padding-free ({why}): several examples share one row, so "
                "datadiet cannot skip or re-batch single examples. Use a padding collator (e.g. "
                "transformers.DataCollatorWithPadding or datadiet.data.Collator) and turn packing off "
                "(TRL: SFTConfig(packing=False, padding_free=False))."
            )
        n = int(inputs["input_ids"].shape[0])
        if n > self.datadiet_engine.batch_size:
            raise DataDietError(
                f"the incoming batch has {n} examples but the engine's batch size is "
                f"{self.datadiet_engine.batch_size}; do not change the batch size after building the trainer."
            )
        col = self.datadiet_id_column
        batch = dict(inputs)
        ids = batch.pop(col, None)
        if ids is None:
            if self.datadiet_engine.filters:
                raise DataDietError(
                    f"the training batch has no {col!r} column, so the filters cannot track examples. Either the "
                    f"dataset has no such column, or it was removed on the way: by the Trainer's "
                    f"remove_unused_columns (DataDietMixin keeps {col!r}, unless a subclass overrides "
                    "_set_signature_columns_if_needed without calling super()), or by a data collator that passes "
                    f"only known keys. Add a stable integer id per example (e.g. "
                    f"dataset.add_column({col!r}, list(range(len(dataset))))), make the collator pass it through "
                    "(datadiet.data.Collator and DataCollatorWithPadding do), or name your id column with id_column=."
                )
            return batch
        ids = torch.as_tensor(ids)
        if ids.ndim != 1 or int(ids.shape[0]) != n or ids.is_floating_point():
            raise DataDietError(
                f"the {col!r} column must hold one integer id per example: got shape {tuple(ids.shape)} and dtype "
                f"{ids.dtype} for a batch of {n}. Use a padding collator that keeps one row per example."
            )
        batch[ID_KEY] = ids
        return batch

    # ------------------------------------------------------------------ training
    def _dd_last_step(self) -> bool:
        """Whether this micro-batch ends the Trainer's last optimizer step of the run."""
        max_steps = int(getattr(self.state, "max_steps", 0) or 0)
        return bool(self.accelerator.sync_gradients) and max_steps > 0 and self.state.global_step + 1 >= max_steps

    def training_step(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        """Submit the incoming batch to the engine; train on the batch it has ready, if any.

        Overrides ``Trainer.training_step``. With no ready batch it returns a detached zero loss on
        ``args.device`` and does not backpropagate. ``num_items_in_batch`` is ignored (see the module
        docstring on loss normalisation). At the run's last step the engine's buffer is flushed.
        """
        engine = self.datadiet_engine
        batch = self._prepare_inputs(self._dd_check_batch(inputs))
        model.train()  # scoring forwards run in training mode, as in the plain loop
        ready = engine.submit(model, batch)
        if self._dd_last_step():
            ready = ready + engine.flush()
        if len(ready) > 2:  # pragma: no cover - an incoming batch <= B and a buffer < B give at most 2
            raise RuntimeError(f"engine returned {len(ready)} training batches for one incoming batch")
        if len(ready) == 2:
            self._dd_extra_step(model, ready[0])
            ready = ready[1:]
        if not ready:
            return torch.zeros((), device=self.args.device)
        self._dd_pending_step = True
        return super().training_step(model, ready[0], num_items_in_batch=None)

    def _dd_extra_step(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
        """One optimizer step of its own, for the full batch that precedes the final flush.

        Uses the Trainer's ``training_step`` (forward, backward), ``_clip_grad_norm`` and
        optimizer; the LR scheduler is not stepped (it follows incoming batches).
        """
        super().training_step(model, batch, num_items_in_batch=None)
        if self.args.max_grad_norm is not None and self.args.max_grad_norm > 0:
            clip = getattr(self, "_clip_grad_norm", None)
            if clip is not None:
                clip(model)
            else:  # older transformers
                self.accelerator.clip_grad_norm_(model.parameters(), self.args.max_grad_norm)
        self.optimizer.step()
        if not self.accelerator.optimizer_step_was_skipped:
            self.datadiet_engine.note_optimizer_step()
        model.zero_grad()

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """The engine's weighted mean training loss; the Trainer's own loss in evaluation.

        Overrides ``Trainer.compute_loss``. In training (``model.training`` and not inside
        ``prediction_step``) the loss comes from :meth:`StepEngine.training_loss`, which drops the id
        column from the model inputs and ignores ``num_items_in_batch``; with ``return_outputs`` the
        outputs are ``{"loss", "per_example_loss"}`` (the engine keeps no logits).
        """
        if self._dd_predicting or not model.training:
            return super().compute_loss(
                model, self._dd_strip_ids(inputs), return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
            )
        batch = dict(inputs)
        if self.datadiet_id_column in batch and self.datadiet_id_column != ID_KEY:
            batch[ID_KEY] = batch.pop(self.datadiet_id_column)
        loss, losses = self.datadiet_engine.training_loss(model, batch)
        det = loss.detach().float()
        self._dd_loss_sum = det if self._dd_loss_sum is None else self._dd_loss_sum + det
        self._dd_loss_batches += 1
        if return_outputs:
            return loss, {"loss": loss, "per_example_loss": losses}
        return loss

    def prediction_step(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """The Trainer's ``prediction_step`` on the inputs without the id column."""
        self._dd_predicting = True
        try:
            inputs = self._dd_strip_ids(inputs)
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        finally:
            self._dd_predicting = False

    # ------------------------------------------------------------------ reporting
    def datadiet_logs(self) -> dict[str, float]:
        """The engine's counts as ``datadiet/...`` log entries (and the mean training-batch loss)."""
        c = self.datadiet_engine.counts
        out: dict[str, float] = {
            "datadiet/examples_seen": c.examples_seen,
            "datadiet/examples_forwarded": c.examples_forwarded,
            "datadiet/examples_backpropagated": c.examples_backpropagated,
            "datadiet/optimizer_steps": c.optimizer_steps,
        }
        for reason, n in sorted(self.datadiet_engine.skipped().items()):
            out[f"datadiet/skipped/{reason}"] = n
        if self._dd_loss_batches:
            # The Trainer's "loss" averages over its steps, counting steps with no training batch as 0;
            # this is the mean loss of the batches actually trained on since the last log.
            out["datadiet/train_batch_loss"] = float(self._dd_loss_sum) / self._dd_loss_batches
            self._dd_loss_sum, self._dd_loss_batches = None, 0
        return out

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Overrides ``Trainer.log`` to add :meth:`datadiet_logs` while training.

        Done here rather than in a callback's ``on_log`` so the counts reach ``state.log_history``
        and every reporting integration (those run before user callbacks).
        """
        if getattr(self, "is_in_train", False) and hasattr(self, "datadiet_engine"):
            logs.update(self.datadiet_logs())
        super().log(logs, *args, **kwargs)


def _drop_leftover(engine: StepEngine) -> int:
    """Drop the engine's buffered kept examples, counting them as skipped (``buffer_leftover``)."""
    return engine.drop_buffer(LEFTOVER_REASON)


class DataDietCallback(TrainerCallback):
    """Observes the Trainer for :class:`DataDietMixin`; added by the mixin itself.

    ``on_epoch_begin`` starts the engine's epoch (filters' ``on_epoch_start``); ``on_optimizer_step``
    counts the optimizer steps that had a backward; ``on_epoch_end`` logs the epoch's counts and,
    when training stops, drops (and counts) kept examples still buffered.
    """

    def __init__(self, trainer: DataDietMixin) -> None:
        self.trainer = trainer
        self._epoch_start: dict[str, Any] = {}

    @property
    def engine(self) -> StepEngine:
        return self.trainer.datadiet_engine

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.engine.start_epoch(math.floor(state.epoch or 0))
        self._epoch_start = self.engine.counts.as_dict()

    def on_optimizer_step(self, args, state, control, **kwargs):
        t = self.trainer
        if t._dd_pending_step:
            t._dd_pending_step = False
            if not t.accelerator.optimizer_step_was_skipped:
                self.engine.note_optimizer_step()

    def on_epoch_end(self, args, state, control, **kwargs):
        c = self.engine.counts.as_dict()
        keys = ("examples_seen", "examples_forwarded", "examples_backpropagated", "optimizer_steps")
        delta = {k: c[k] - self._epoch_start.get(k, 0) for k in keys}
        log.info("epoch %d: %s; %d kept examples buffered", self.engine.epoch, delta, self.engine.buffered)
        if control.should_training_stop:
            self._drop(state)

    def on_train_end(self, args, state, control, **kwargs):
        self._drop(state)

    def _drop(self, state) -> None:
        n = _drop_leftover(self.engine)
        if n:
            log.warning(
                "training stopped at step %d with %d kept examples still buffered; they were not trained on "
                "(counted as skipped, reason %r)", state.global_step, n, LEFTOVER_REASON,
            )


class DataDietTrainer(DataDietMixin, Trainer):
    """``transformers.Trainer`` with :class:`DataDietMixin`: takes ``filters=``, ``task=``, ``id_column=``."""
