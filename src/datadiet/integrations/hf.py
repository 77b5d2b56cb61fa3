"""The Hugging Face ``Trainer`` front end.

``DataDietMixin`` goes *before* any ``transformers.Trainer`` subclass (TRL's ``SFTTrainer`` too)::

    class DietTrainer(DataDietMixin, Trainer): ...
    trainer = DietTrainer(model=model, args=args, train_dataset=ds, method="multistage")
    trainer = DietTrainer(model=model, args=args, train_dataset=ds, method="data_diet", method_params={"keep": 0.5})
    trainer = DietTrainer(model=model, args=args, train_dataset=ds, filters=[RandomSkip(rate=0.5)])

Every registered method works here (``datadiet methods``). The method plans from a
:class:`~datadiet.core.method.PlanContext` built from the Trainer's own ``args``, model, training
dataset, data collator and processing class (:meth:`DataDietMixin.datadiet_plan_context`), at
the start of ``train()``: online methods become the engine's filters; prune methods
(``random_subset``, ``data_diet``, ``ingenious``) select before training (their scoring runs or
embeddings go through the same engine and are timed and logged as ``datadiet/selection_s``) and
the Trainer then trains on the selected rows only, so its LR schedule is sized once, from the
subset; re-selection methods re-draw during training as filters.

The Trainer keeps everything it owns (data loading, optimizer, LR schedule, clipping, mixed
precision, logging, checkpoints, evaluation). The mixin overrides only the seams where the
:class:`~datadiet.core.engine.StepEngine` plugs in, and delegates to the Trainer at each:

``get_batch_samples``
    the Trainer fetches the incoming batches of one optimizer step (its gradient accumulation
    window) here; the mixin submits each to the engine, which applies the filters and re-batches
    the kept examples into full training batches, and hands the Trainer as many micro-steps as it
    fetched, each holding 0, 1 (or, at the run's final flush, 2) ready training batches.
``training_step``
    runs the Trainer's own ``training_step`` (forward, loss, backward) on each ready batch of the
    micro-step; a micro-step with none returns a zero loss and runs no backward, so when a whole
    window had nothing to train on every gradient stays ``None`` and the Trainer's
    ``optimizer.step()`` leaves the parameters (and AdamW's moments and step counts) untouched.
``compute_loss``
    delegates to the Trainer's (or TRL's) ``compute_loss`` for the model's outputs, so their
    metrics (TRL's ``entropy``, ``mean_token_accuracy``, ``num_tokens``) are kept, and returns the
    engine's loss computed from those outputs (see *Loss normalisation*).
``_set_signature_columns_if_needed`` and the data collator
    the stable id column is kept through ``remove_unused_columns`` and through any collator
    (TRL's drops unknown keys): the mixin wraps ``data_collator`` so the ids ride beside it.
``log`` and ``train``
    the engine's counts go into every training log (``datadiet/...`` keys); ``loss`` and
    ``train_loss`` are the real mean training loss of the optimizer steps that trained (the
    Trainer's own would count steps without a backward as 0), and ``grad_norm`` is not logged for
    a logging interval whose last step had no backward.

Gradient accumulation, defined: one optimizer step averages over the kept examples of its
accumulation window (for a causal LM with token weighting: over their kept tokens). The window's
ready training batches are summed as ``sum_i(w_i * l_i) / D_window`` with ``D_window`` the units of
all of them; with nothing skipped this is exactly the Trainer's own ``num_items_in_batch``
normalisation. Decisions for a window are taken when it is fetched, before any of its backward
passes (the parameters do not change inside a window, so the losses are the same).

Loss normalisation: classification: the mean cross-entropy over the kept examples of the window.
Causal LM: ``loss_weighting="token"`` (the default here: the mean over kept tokens, the Trainer's
own weighting) or ``"sequence"`` (every kept sequence counts equally, by its mean token loss).
Completion-only / assistant-only masks (``labels`` of -100) are respected: only counted tokens
enter an example's loss, and what the filters see.

Epoch boundaries: kept examples left over at an epoch's end (fewer than a batch) lead the next
epoch's first training batch; at the run's last optimizer step the buffer is flushed into that
step. If training stops early, the leftover is counted as skipped (``buffer_leftover``).

Checkpoints: every Trainer checkpoint gets ``datadiet_state.pt`` (engine counts, filters' state
and RNGs, buffer, current subset, the loss log); ``train(resume_from_checkpoint=...)`` restores
it, so a resumed run continues exactly as an uninterrupted one would (tested). The file is
loaded with ``torch.load(weights_only=True)``: it cannot run code.

Several processes (``torchrun`` / ``accelerate launch``, the Trainer's own DDP): the engine decides
on every rank's batches together (see :mod:`datadiet.core.distributed` and
:meth:`StepEngine._submit_ranks`), so every rank steps and backpropagates alike; a window's ready
batches sit on its last micro-steps (the Trainer all-reduces gradients on the last one); the
selection of a prune method is rank 0's; logged losses are averaged over ranks and the counts are
every rank's; each rank keeps its own ``datadiet_state[.rankN].pt``.

Not supported yet (each raises a :class:`~datadiet.errors.DataDietError` naming the fix): FSDP,
DeepSpeed, ``torch.nn.DataParallel`` (one process driving several GPUs), ``fp16`` (its gradient scaler fails on an optimizer step where every example was
skipped; use ``bf16``), ``auto_find_batch_size``, ``label_smoothing_factor`` and
``compute_loss_func`` (the engine computes the per-example training loss), packed /
padding-free batches (no per-example rows to skip).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..core import distributed
from ..core.engine import StepEngine
from ..core.filter import ID_KEY, NOT_MODEL_INPUTS
from ..errors import ConfigError, DataDietError, missing_extra
from ..core.method import PlanContext
from ..core.filter import OnlineFilter

try:
    from transformers import Trainer, TrainerCallback
    from transformers.trainer_utils import TrainOutput, get_last_checkpoint
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise missing_extra("transformers", "hf") from e

log = logging.getLogger(__name__)

#: skip reason of the kept examples still buffered when training stops early.
LEFTOVER_REASON = "buffer_leftover"
#: the file in every Trainer checkpoint folder that holds datadiet's state.
STATE_FILE = "datadiet_state.pt"


def state_file(rank: int) -> str:
    """The name of a rank's datadiet state in a checkpoint folder (rank 0: ``STATE_FILE``)."""
    return STATE_FILE if rank == 0 else f"datadiet_state.rank{rank}.pt"
WEIGHTINGS = ("token", "sequence")


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


def _base_model(model: Any) -> Any:
    """The model under a PEFT wrapper (or the model itself)."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def infer_task(model: Any) -> str | None:
    """``"causal_lm"`` or ``"classification"`` from a (PEFT-wrapped) Hugging Face model's class, else ``None``."""
    base = _base_model(model)
    names = [type(base).__name__, *(getattr(getattr(base, "config", None), "architectures", None) or [])]
    try:
        from transformers.models.auto.modeling_auto import (
            MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES)
        causal = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
        classif = set(MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES.values())
    except ImportError:  # pragma: no cover - very old transformers
        causal, classif = set(), set()
    for n in names:
        if n in causal or n.endswith(("ForCausalLM", "LMHeadModel")):
            return "causal_lm"
        if n in classif or n.endswith("ForSequenceClassification"):
            return "classification"
    return None


class KeepIdsCollator:
    """Wraps a data collator so the stable id column survives it (many collators drop unknown keys).

    Takes the id out of every feature dict, calls the wrapped collator on the rest and puts the ids
    back as an int64 tensor.
    """

    def __init__(self, collator: Any, id_column: str) -> None:
        self.collator = collator
        self.id_column = id_column

    def __call__(self, features: list[Any]) -> Any:
        if not features or not isinstance(features[0], Mapping) or self.id_column not in features[0]:
            return self.collator(features)
        ids = [f[self.id_column] for f in features]
        rest = [{k: v for k, v in f.items() if k != self.id_column} for f in features]
        out = self.collator(rest)
        if isinstance(out, Mapping):
            out = dict(out)
            out[self.id_column] = torch.as_tensor(ids, dtype=torch.long)
        return out


class _MicroStep(dict):
    """One micro-step the mixin hands the Trainer: its ready training batches (``batches``) and the
    loss denominator of their accumulation window. As a dict it holds the trained tokens, flat, so
    the Trainer's FLOP and token counters count exactly the work that is done."""

    def __init__(self, batches: list[dict[str, torch.Tensor]], denominator: float) -> None:
        ids = [b["input_ids"].reshape(-1) for b in batches]
        masks = [b["attention_mask"].reshape(-1) for b in batches if "attention_mask" in b]
        super().__init__(input_ids=torch.cat(ids) if ids else torch.zeros(0, dtype=torch.long))
        if masks and len(masks) == len(batches):
            self["attention_mask"] = torch.cat(masks)
        self.batches = batches
        self.denominator = denominator


def _to_plain(obj: Any) -> Any:
    """State made loadable by ``torch.load(weights_only=True)``: numpy arrays and scalars to tensors / numbers."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Mapping):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_plain(v) for v in obj)
    return obj


class DataDietMixin:
    """Put before a ``transformers.Trainer`` subclass to train through a :class:`StepEngine`.

    Keyword-only parameters (everything else goes to the Trainer):

    method
        a registered method name (``datadiet methods``) or a method object (e.g.
        ``datadiet.build_method("data_diet", {"keep": 0.5})``); planned at the start of ``train()``.
    method_params
        the parameters of a named method (validated at construction, with the method's own errors).
    filters
        online filters, as for :class:`StepEngine` (instead of, or on top of, a method's).
    task
        ``"classification"`` or ``"causal_lm"``; by default inferred from the model's class (a
        ``...ForCausalLM`` is a causal LM, a ``...ForSequenceClassification`` a classifier).
    id_column
        the dataset column holding a stable integer id per example (required with a method or
        filters; checked at construction when the dataset has columns).
    loss_weighting
        causal LM only: ``"token"`` (default: the Trainer's own per-token mean) or ``"sequence"``.

    The engine is ``self.datadiet_engine``; its batch size is the Trainer's training batch size per
    forward (``args.train_batch_size``), its pad token the processing class's.
    """

    #: the engine normalises over the whole accumulation window itself (see the module docstring).
    loss_is_scaled_for_ga = True

    def __init__(
        self,
        *args: Any,
        method: Any = None,
        method_params: Mapping[str, Any] | None = None,
        filters: Sequence[OnlineFilter] = (),
        task: str | None = None,
        id_column: str = ID_KEY,
        loss_weighting: str = "token",
        **kwargs: Any,
    ) -> None:
        # Set before the Trainer's __init__, which may already look at the signature columns.
        self.datadiet_id_column = str(id_column)
        self._dd_predicting = False
        self._dd_pending_step = False  # this optimizer step had a backward
        self._dd_last_trained = True  # the last optimizer step had a backward
        self._dd_loss = {"sum": 0.0, "steps": 0, "run_sum": 0.0, "run_steps": 0}
        self._dd_selection_ids: np.ndarray | None = None
        self._dd_planned = False
        self.datadiet_plan_info: dict[str, Any] = {}
        self.datadiet_method = _build_method(method, method_params)
        for f in filters:
            if not isinstance(f, OnlineFilter):
                raise DataDietError(f"filters must be datadiet OnlineFilter objects, got {type(f).__name__}")
        if loss_weighting not in WEIGHTINGS:
            raise ConfigError(f"loss_weighting must be one of {WEIGHTINGS}, got {loss_weighting!r}")
        super().__init__(*args, **kwargs)
        self._dd_check_args()
        #: the process group when the Trainer runs on several processes (torchrun / accelerate launch)
        self.datadiet_ranks = distributed.current() if self.args.world_size > 1 else None
        self.datadiet_task = self._dd_task(task)
        self._dd_filters = list(filters)
        self._dd_weighting = "token" if (self.datadiet_task == "causal_lm" and loss_weighting == "token") else "example"
        self._dd_check_ids()
        if self.data_collator is not None and not isinstance(self.data_collator, KeepIdsCollator):
            self.data_collator = KeepIdsCollator(self.data_collator, self.datadiet_id_column)
        self.datadiet_engine = self._dd_engine(self._dd_filters)
        self.add_callback(DataDietCallback(self))

    # ------------------------------------------------------------------ construction-time checks
    def _dd_engine(self, filters: Sequence[OnlineFilter]) -> StepEngine:
        return StepEngine(task=self.datadiet_task, batch_size=self.args.train_batch_size, filters=filters,
                          pad_token_id=_pad_token_id(getattr(self, "processing_class", None)), autocast_dtype=None,
                          loss_weighting=self._dd_weighting, ranks=self.datadiet_ranks)

    def _dd_task(self, task: str | None) -> str:
        inferred = infer_task(self.model)
        if task is None:
            if inferred is None:
                raise DataDietError(
                    f"cannot tell the task of a {type(_base_model(self.model)).__name__}: pass task='causal_lm' or "
                    "task='classification' to the trainer")
            return inferred
        if task not in ("classification", "causal_lm"):
            raise ConfigError(f"task must be 'classification' or 'causal_lm', got {task!r}")
        if inferred is not None and inferred != task:
            raise DataDietError(f"task={task!r} but the model is a {type(_base_model(self.model)).__name__} "
                                f"({inferred}); pass task={inferred!r} or leave task out")
        return task

    def _dd_check_args(self) -> None:
        args = self.args
        if getattr(args, "n_gpu", 1) > 1:
            raise DataDietError(
                f"DataDietMixin needs one process per GPU, but this process drives {args.n_gpu} GPUs "
                "(torch.nn.DataParallel); launch with `torchrun --nproc-per-node N` or `accelerate launch`.")
        if args.world_size > 1 and (getattr(args, "fsdp", None) or getattr(self, "is_fsdp_enabled", False)):
            raise DataDietError(
                "DataDietMixin supports several processes with DDP only; FSDP is not tested with datadiet yet. "
                "Drop the fsdp settings (plain DDP: torchrun / accelerate launch without an FSDP config).")
        if args.world_size > 1 and (getattr(args, "deepspeed", None) or getattr(self, "is_deepspeed_enabled", False)):
            raise DataDietError(
                "DataDietMixin supports several processes with DDP only; DeepSpeed (ZeRO) is not tested with datadiet "
                "yet. Drop the deepspeed config (plain DDP: torchrun / accelerate launch without DeepSpeed).")
        if args.world_size > 1 and not distributed.is_initialized():
            raise DataDietError(
                f"this run has {args.world_size} processes but no torch.distributed process group; launch it with "
                "torchrun or accelerate launch.")
        if args.fp16:
            raise DataDietError(
                "DataDietMixin does not support fp16=True: its gradient scaler fails on an optimizer step where every "
                "example was skipped (no gradients). Use bf16=True, or full precision.")
        if args.auto_find_batch_size:
            raise DataDietError(
                "DataDietMixin needs a fixed batch size; set auto_find_batch_size=False and choose "
                "per_device_train_batch_size yourself.")
        if getattr(self, "label_smoother", None) is not None or getattr(self, "compute_loss_func", None) is not None:
            raise DataDietError(
                "DataDietMixin computes the per-example training loss itself, so label_smoothing_factor and "
                "compute_loss_func would be ignored; set label_smoothing_factor=0 and drop compute_loss_func.")
        if getattr(args, "padding_free", False) or getattr(args, "packing", False):
            raise DataDietError(
                "DataDietMixin needs one row per example, but this run packs several examples into a row "
                "(packing / padding_free); datadiet cannot skip or re-batch single examples. Set "
                "SFTConfig(packing=False, padding_free=False).")

    def _dd_needs_ids(self) -> bool:
        m = self.datadiet_method
        return bool(self._dd_filters) or (m is not None and getattr(m, "mechanism", "none") != "none")

    def _dd_check_ids(self) -> None:
        ds = self.train_dataset
        if ds is None or not self._dd_needs_ids():
            return
        col = self.datadiet_id_column
        names = getattr(ds, "column_names", None)
        if names is None:
            try:
                first = ds[0]
            except Exception:  # noqa: BLE001 - an iterable or odd dataset: checked per batch instead
                return
            names = list(first) if isinstance(first, Mapping) else None
        if names is not None and col not in names:
            raise DataDietError(
                f"the training dataset has no {col!r} column (its columns: {sorted(names)}), so datadiet cannot "
                f"track examples. Add a stable integer id per example, e.g. "
                f"dataset = dataset.add_column({col!r}, list(range(len(dataset)))), or name your id column with "
                "id_column=.")

    # ------------------------------------------------------------------ planning
    def datadiet_plan_context(self) -> PlanContext:
        """The planning context of this Trainer: its model, dataset, collator, processing class and ``args``."""
        args, ds = self.args, self.train_dataset
        ids, labels, texts = _dataset_columns(ds, self.datadiet_id_column, self.datadiet_task)
        if getattr(ds, "column_names", None) is not None and args.remove_unused_columns:
            # what the Trainer's dataloader would feed the collator: model inputs, labels and the id column
            self._set_signature_columns_if_needed()
            ds = ds.remove_columns([c for c in ds.column_names if c not in self._signature_columns])
        model = self.model

        def build_model(seed: int) -> torch.nn.Module:
            """A fresh copy of the model as it is before training: for the run's own seed exactly that; for
            another seed with its task head re-drawn from it (``model_init``'s model, seeded, when the Trainer
            has one)."""
            import copy

            if getattr(self, "model_init", None) is not None:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(seed)
                    fresh = self.call_model_init()
                return fresh.to(args.device)
            fresh = copy.deepcopy(model)
            return fresh if int(seed) == int(args.seed) else _reseed_head(fresh, seed)

        name = getattr(getattr(_base_model(model), "config", None), "_name_or_path", None) or None
        epochs = max(1, math.ceil(args.num_train_epochs))
        sched = {"linear": "linear", "constant": "constant", "constant_with_warmup": "constant"}.get(
            str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)), "linear")
        return PlanContext(
            ids=ids, labels=labels, seed=int(args.seed), task=self.datadiet_task,
            batch_size=int(args.train_batch_size) * max(1, int(args.world_size)), ranks=self.datadiet_ranks,
            epochs=epochs, max_steps=int(args.max_steps) if args.max_steps and args.max_steps > 0 else None,
            model=model, tokenizer=getattr(self, "processing_class", None),
            pad_token_id=_pad_token_id(getattr(self, "processing_class", None)), model_name=name,
            max_length=int(getattr(args, "max_length", None) or 512), train_dataset=ds, collator=self.data_collator,
            texts=texts, build_model=build_model, lr=float(args.learning_rate), weight_decay=float(args.weight_decay),
            warmup=_warmup_share(args), schedule=sched, schedule_by="steps",
            max_grad_norm=float(args.max_grad_norm or 0.0), fused_adamw="fused" in str(args.optim),
            bf16=bool(args.bf16), eval_batch_size=int(args.eval_batch_size), out_dir=args.output_dir)

    def _dd_plan(self) -> None:
        """Plan the method (once): filters into the engine, a selection into the training dataset."""
        if self._dd_planned:
            return
        self._dd_planned = True
        if self.datadiet_method is None:
            if self._dd_filters:
                self.datadiet_engine.bind(self.datadiet_plan_context())
            return
        ctx = self.datadiet_plan_context()
        t0 = time.perf_counter()
        plan = self.datadiet_method.plan(ctx)
        reused = float(plan.info.get("selection_reused_s", 0.0))
        self.datadiet_plan_info = {**plan.info, "selection_s": time.perf_counter() - t0 + reused}
        filters = list(plan.filters) + list(self._dd_filters)
        if plan.selection is not None:
            keep = plan.selection.ids
            if self.datadiet_ranks is not None:  # every rank trains on rank 0's subset
                keep = self.datadiet_ranks.broadcast_object([int(i) for i in keep])
            self._dd_select(keep, ids=ctx.ids)
        log.info("datadiet: planned %s in %.1f s (%d filters%s)", self.datadiet_method.name,
                 self.datadiet_plan_info["selection_s"], len(filters),
                 "" if plan.selection is None else f", {len(plan.selection)} of {plan.selection.n_total} examples")
        self.datadiet_engine = self._dd_engine(filters)
        if filters:  # they see the training set as it is now (the subset, after a selection)
            self.datadiet_engine.bind(ctx if plan.selection is None else self.datadiet_plan_context())

    def _dd_select(self, keep_ids: Sequence[int], *, ids: np.ndarray | None = None) -> None:
        """Train on the rows of the training dataset whose id is in ``keep_ids`` (in dataset order);
        ``ids``: the dataset's id column, when the caller has read it already."""
        ds = self.train_dataset
        if ids is None:
            ids = _dataset_columns(ds, self.datadiet_id_column, self.datadiet_task)[0]
        positions = np.flatnonzero(np.isin(ids, np.asarray(keep_ids, dtype=np.int64)))
        if len(positions) == 0:
            raise DataDietError("the method selected no training example; raise its kept fraction")
        select = getattr(ds, "select", None)
        self.train_dataset = select(positions.tolist()) if callable(select) else torch.utils.data.Subset(ds, positions.tolist())
        self._dd_selection_ids = ids[positions]
        log.info("datadiet: training on %d of %d examples", len(positions), len(ids))

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        """``Trainer.train``, with the method planned first and datadiet's state restored on resume."""
        ckpt = resume_from_checkpoint
        if ckpt is True:
            ckpt = get_last_checkpoint(self.args.output_dir)
        state = None
        if isinstance(ckpt, (str, os.PathLike)):
            path = os.path.join(ckpt, state_file(0 if self.datadiet_ranks is None else self.datadiet_ranks.rank))
            if os.path.exists(path):
                state = torch.load(path, map_location="cpu", weights_only=True)
            elif self._dd_needs_ids():
                raise DataDietError(f"checkpoint {str(ckpt)!r} has no {os.path.basename(path)}: it was not written by a "
                                    "DataDietMixin trainer, so its filters' state is lost; resume from a datadiet "
                                    "checkpoint, or start over")
        if state is not None and state.get("selection_ids") is not None and self.datadiet_method is not None:
            # a prune method chose its subset before the interruption: restore it instead of planning again
            self._dd_planned = True
            self.datadiet_plan_info = dict(state.get("plan_info") or {})
            self._dd_select(state["selection_ids"].tolist())
            self.datadiet_engine = self._dd_engine(self._dd_filters)
            if self._dd_filters:
                self.datadiet_engine.bind(self.datadiet_plan_context())
        else:
            self._dd_plan()
        if state is not None:
            self.datadiet_engine.load_state_dict(state["engine"])
            self._dd_loss = dict(state["loss"])
        out = super().train(resume_from_checkpoint, *args, **kwargs)
        loss = self.datadiet_train_loss()
        metrics = {**out.metrics, "train_loss": loss} if loss is not None else out.metrics
        return TrainOutput(out.global_step, loss if loss is not None else out.training_loss, metrics)

    def datadiet_state(self) -> dict[str, Any]:
        """What a checkpoint keeps of datadiet (see ``STATE_FILE``)."""
        ids = self._dd_selection_ids
        return _to_plain({"engine": self.datadiet_engine.state_dict(), "loss": {k: float(v) if k.endswith("sum") else int(v) for k, v in self._dd_loss.items()},
                          "selection_ids": None if ids is None else torch.as_tensor(ids, dtype=torch.long),
                          "plan_info": {k: v for k, v in self.datadiet_plan_info.items()
                                        if isinstance(v, (int, float, str, bool)) or v is None}})

    # ------------------------------------------------------------------ columns
    def _set_signature_columns_if_needed(self) -> None:
        """The Trainer's model-signature columns, plus the id column and ``labels``."""
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
                f"got {type(inputs).__name__}{' without input_ids' if isinstance(inputs, Mapping) else ''}.")
        why = _packed_reason(inputs)
        if why is not None:
            raise DataDietError(
                f"this training batch is packed / padding-free ({why}): several examples share one row, so "
                "datadiet cannot skip or re-batch single examples. Use a padding collator (e.g. "
                "transformers.DataCollatorWithPadding or datadiet.data.Collator) and turn packing off "
                "(TRL: SFTConfig(packing=False, padding_free=False)).")
        n = int(inputs["input_ids"].shape[0])
        if n > self.datadiet_engine.batch_size:
            raise DataDietError(
                f"the incoming batch has {n} examples but the engine's batch size is "
                f"{self.datadiet_engine.batch_size}; do not change the batch size after building the trainer.")
        col = self.datadiet_id_column
        batch = dict(inputs)
        ids = batch.pop(col, None)
        if ids is None:
            if self.datadiet_engine.filters:
                raise DataDietError(
                    f"the training batch has no {col!r} column, so the filters cannot track examples: a subclass "
                    "overrode _set_signature_columns_if_needed without calling super(), or replaced the data "
                    f"collator after the trainer was built. Keep {col!r} in the batches, or name your id column "
                    "with id_column=.")
            return batch
        ids = torch.as_tensor(ids)
        if ids.ndim != 1 or int(ids.shape[0]) != n or ids.is_floating_point():
            raise DataDietError(
                f"the {col!r} column must hold one integer id per example: got shape {tuple(ids.shape)} and dtype "
                f"{ids.dtype} for a batch of {n}. Use a padding collator that keeps one row per example.")
        batch[ID_KEY] = ids
        if self.datadiet_task == "causal_lm" and "labels" not in batch and "attention_mask" in batch:
            # the model needs labels to return a loss; the engine counts the same tokens
            batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        return batch

    # ------------------------------------------------------------------ training
    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: torch.device):
        """The Trainer's window of incoming batches, filtered: as many micro-steps as batches fetched."""
        incoming, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        if not incoming:
            return incoming, None
        return self._dd_window(incoming), None

    def _dd_window(self, incoming: list[Any]) -> list[_MicroStep]:
        """Submit one accumulation window's incoming batches to the engine; hand back one micro-step per
        incoming batch, the ready training batches spread over them, all normalised by the window's units."""
        engine = self.datadiet_engine
        model = self.model_wrapped if getattr(self, "model_wrapped", None) is not None else self.model
        was_training = model.training
        model.train()  # post-forward filters score in the engine's scoring mode and restore this
        ready: list[dict[str, torch.Tensor]] = []
        for b in incoming:
            ready.extend(engine.submit(model, self._prepare_inputs(self._dd_check_batch(b))))
        max_steps = int(getattr(self.state, "max_steps", 0) or 0)
        if max_steps > 0 and self.state.global_step + 1 >= max_steps:
            ready.extend(engine.flush())  # the run's last optimizer step trains what is left
        model.train(was_training)
        denominator = float(sum(engine.loss_units(r) for r in ready)) or 1.0
        per_step: list[list[dict[str, torch.Tensor]]] = [[] for _ in incoming]
        k = len(incoming)
        for i, r in enumerate(ready):
            # right-aligned: the window's last micro-step, the one the Trainer runs outside DDP's no_sync,
            # always has a backward when any micro-step has one, so the gradients are all-reduced
            per_step[min(i, k - 1) if len(ready) >= k else k - len(ready) + i].append(r)
        self._dd_pending_step = bool(ready)
        return [_MicroStep(rs, denominator) for rs in per_step]

    def training_step(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        """The Trainer's ``training_step`` on each ready training batch of this micro-step.

        Overrides ``Trainer.training_step``. A micro-step with no ready batch returns a zero loss on
        ``args.device`` and does not backpropagate. ``num_items_in_batch`` is replaced by the engine's
        window denominator.
        """
        if not isinstance(inputs, _MicroStep):  # called directly, not through get_batch_samples
            (inputs,) = self._dd_window([inputs])
        total = torch.zeros((), device=self.args.device)
        for batch in inputs.batches:
            total = total + super().training_step(model, batch, num_items_in_batch=inputs.denominator)
        return total

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """The engine's training loss from the Trainer's (or TRL's) own forward; the Trainer's loss in evaluation.

        Overrides ``Trainer.compute_loss``: the parent's ``compute_loss`` runs the model (and records its
        metrics; its outputs are taken with a forward hook), and the loss returned is :meth:`StepEngine.training_loss` on those outputs, normalised
        by ``num_items_in_batch`` (the engine's window denominator).
        """
        if self._dd_predicting or not model.training or ID_KEY not in inputs:
            return super().compute_loss(model, self._dd_strip_ids(inputs), return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        batch = dict(inputs)
        model_inputs = {k: v for k, v in batch.items() if k not in NOT_MODEL_INPUTS or k == "labels"}
        # The outputs of the parent's own grad forward, caught by a hook: asking the parent for them with
        # return_outputs=True would make TRL's SFTTrainer run a second, no-grad forward for full logits.
        captured: list[Any] = []

        def keep_outputs(module, args, kwargs, out):
            if not captured and torch.is_grad_enabled():
                captured.append(out)

        handle = model.register_forward_hook(keep_outputs, with_kwargs=True)
        try:
            super().compute_loss(model, model_inputs, return_outputs=False, num_items_in_batch=num_items_in_batch)
        finally:
            handle.remove()
        if not captured:
            raise DataDietError("the Trainer's compute_loss ran no grad forward of the model; DataDietMixin needs the "
                                "model's outputs to compute a loss per example")
        outputs = captured[0]
        denominator = None if num_items_in_batch is None else float(num_items_in_batch)
        loss, losses = self.datadiet_engine.training_loss(model, batch, outputs=outputs, denominator=denominator)
        d = self._dd_loss
        step_loss = loss.detach().float()  # summed on the device: read (synchronised) only when logged
        d["sum"] = d["sum"] + step_loss
        d["run_sum"] = d["run_sum"] + step_loss
        if return_outputs:
            return loss, outputs
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
    def datadiet_train_loss(self) -> float | None:
        """The mean training loss over the optimizer steps that trained, over the whole run."""
        d = self._dd_loss
        if not d["run_steps"]:
            return None
        if self.datadiet_ranks is not None:  # a collective: every rank calls it (the Trainer's end-of-train log does)
            return self.datadiet_ranks.sum([float(d["run_sum"])])[0] / self.datadiet_ranks.world_size / d["run_steps"]
        return float(d["run_sum"]) / d["run_steps"]

    def datadiet_logs(self) -> dict[str, float]:
        """The engine's counts as ``datadiet/...`` log entries."""
        c = self.datadiet_engine.global_counts  # every rank's work (one process: its own)
        out: dict[str, float] = {
            "datadiet/examples_seen": c.examples_seen,
            "datadiet/examples_forwarded": c.examples_forwarded,
            "datadiet/examples_backpropagated": c.examples_backpropagated,
            "datadiet/optimizer_steps": c.optimizer_steps,
        }
        for reason, n in sorted(self.datadiet_engine.global_skipped().items()):
            out[f"datadiet/skipped/{reason}"] = n
        if "selection_s" in self.datadiet_plan_info:
            out["datadiet/selection_s"] = round(float(self.datadiet_plan_info["selection_s"]), 3)
        return out

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Overrides ``Trainer.log``: adds :meth:`datadiet_logs` and makes ``loss`` / ``train_loss`` real.

        The Trainer's ``loss`` averages over its optimizer steps, counting a step with no backward as 0;
        here it is the mean loss of the steps that trained since the last log (left out when none did),
        and ``grad_norm`` is left out when the last step had no backward. Done here rather than in a
        callback's ``on_log`` so the values reach ``state.log_history`` and every reporting integration.
        """
        if hasattr(self, "datadiet_engine") and (getattr(self, "is_in_train", False) or "train_loss" in logs):
            d = self._dd_loss
            if "loss" in logs:
                if d["steps"] and self.datadiet_ranks is not None:
                    # each rank's loss is its share of the global batch's: their mean is the global loss (the
                    # Trainer's own logging gathers here too, on every rank)
                    logs["loss"] = self.datadiet_ranks.sum([float(d["sum"])])[0] / self.datadiet_ranks.world_size / d["steps"]
                elif d["steps"]:
                    logs["loss"] = float(d["sum"]) / d["steps"]
                else:
                    logs.pop("loss")
                d["sum"], d["steps"] = 0.0, 0
            if "grad_norm" in logs and not self._dd_last_trained:
                logs.pop("grad_norm")
            run_loss = self.datadiet_train_loss() if "train_loss" in logs else None
            if run_loss is not None:
                logs["train_loss"] = run_loss
            logs.update(self.datadiet_logs())
        super().log(logs, *args, **kwargs)


def _reseed_head(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Re-initialise a classifier's task head (``classifier`` / ``score``) from ``seed`` with the model's own
    ``_init_weights``, as loading a pretrained body with a fresh head would; other models are returned as they are."""
    base = _base_model(model)
    init = getattr(base, "_init_weights", None)
    heads = [getattr(base, n) for n in ("classifier", "score") if isinstance(getattr(base, n, None), torch.nn.Module)]
    if init is None or not heads:
        return model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        for head in heads:
            for m in head.modules():
                init(m)
    return model


def _warmup_share(args: Any) -> float:
    """The warm-up as a share of training (``warmup_ratio``, or a fractional ``warmup_steps`` in transformers 5)."""
    ratio = getattr(args, "warmup_ratio", None)
    if ratio:
        return float(ratio)
    steps = getattr(args, "warmup_steps", 0) or 0
    return float(steps) if isinstance(steps, float) and 0 < steps < 1 else 0.0


def _build_method(method: Any, params: Mapping[str, Any] | None):
    if method is None:
        if params:
            raise ConfigError("method_params were given without a method; pass method='<name>' too")
        return None
    if isinstance(method, str):
        from ..methods.registry import build_method

        return build_method(method, dict(params or {}))
    if params:
        raise ConfigError("method_params go with a method *name*; a method object already holds its parameters")
    if not callable(getattr(method, "plan", None)):
        raise DataDietError(f"method must be a registered name or a datadiet method object, got {type(method).__name__}")
    return method


def _dataset_columns(ds: Any, id_column: str, task: str):
    """``(ids, labels, texts)`` of a training dataset: a ``datasets.Dataset`` (by column), a datadiet
    tokenized split (its ``ids`` / ``labels``), or another map-style dataset of feature dicts (by row).
    ``labels`` for classification only; ``texts`` is a function returning the ``text`` column (read only if
    a method asks for the raw texts), or ``None`` when there is no such column."""
    if ds is None:
        raise DataDietError("DataDietMixin with a method needs a train_dataset")
    names = getattr(ds, "column_names", None)
    if names is not None:
        if id_column not in names:
            raise DataDietError(f"the training dataset has no {id_column!r} column (its columns: {sorted(names)})")
        ids = np.asarray(ds[id_column], dtype=np.int64)
        label_col = next((c for c in ("labels", "label") if c in names), None)
        labels = np.asarray(ds[label_col], dtype=np.int64) if task == "classification" and label_col else None
        texts = (lambda: list(ds["text"])) if "text" in names and isinstance(ds[0]["text"], str) else None
        return ids, labels, texts
    if id_column == ID_KEY and getattr(ds, "ids", None) is not None:  # a datadiet TokenizedSplit / LMContexts
        labels = getattr(ds, "labels", None)
        return (np.asarray(ds.ids, dtype=np.int64),
                None if task != "classification" or labels is None else np.asarray(labels, dtype=np.int64), None)
    rows = [ds[i] for i in range(len(ds))]
    if rows and id_column not in rows[0]:
        raise DataDietError(f"the training examples have no {id_column!r} key (keys: {sorted(rows[0])})")
    ids = np.asarray([int(r[id_column]) for r in rows], dtype=np.int64)
    labels = None
    if task == "classification" and rows and ("labels" in rows[0] or "label" in rows[0]):
        key = "labels" if "labels" in rows[0] else "label"
        labels = np.asarray([int(r[key]) for r in rows], dtype=np.int64)
    texts = (lambda: [r["text"] for r in rows]) if rows and isinstance(rows[0].get("text"), str) else None
    return ids, labels, texts


class DataDietCallback(TrainerCallback):
    """Observes the Trainer for :class:`DataDietMixin`; added by the mixin itself.

    ``on_epoch_begin`` starts the engine's epoch (filters' ``on_epoch_start``, once per epoch);
    ``on_optimizer_step`` counts the optimizer steps that had a backward; ``on_save`` writes
    datadiet's state into the checkpoint folder; at the end, kept examples still buffered are
    dropped and counted.
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
        t._dd_last_trained = t._dd_pending_step
        if t._dd_pending_step:
            t._dd_pending_step = False
            d = t._dd_loss
            d["steps"] += 1
            d["run_steps"] += 1
            if not t.accelerator.optimizer_step_was_skipped:
                self.engine.note_optimizer_step()

    def on_save(self, args, state, control, **kwargs):
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if os.path.isdir(folder):
            r = self.trainer.datadiet_ranks
            name = state_file(0 if r is None else r.rank)
            tmp = os.path.join(folder, name + ".tmp")
            torch.save(self.trainer.datadiet_state(), tmp)
            os.replace(tmp, os.path.join(folder, name))

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
        n = self.engine.drop_buffer(LEFTOVER_REASON)
        if n:
            log.warning(
                "training stopped at step %d with %d kept examples still buffered; they were not trained on "
                "(counted as skipped, reason %r)", state.global_step, n, LEFTOVER_REASON)


class DataDietTrainer(DataDietMixin, Trainer):
    """``transformers.Trainer`` with :class:`DataDietMixin`: takes ``method=``, ``method_params=``, ``filters=``,
    ``task=``, ``id_column=``, ``loss_weighting=``."""
