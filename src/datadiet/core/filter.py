"""The online-filter protocol.

An online filter decides, per example, whether the step engine spends compute on it. It sits at
one of two fixed places:

``pre_forward``
    decides from the raw batch (token ids, labels, example ids) before any model compute; a
    skipped example costs nothing (saves forward + backward).
``post_forward``
    decides from the example's current loss, computed by a no-grad forward of the incoming batch;
    a skipped example still cost that forward (saves the backward only). The kept examples are
    forwarded again with grad when a full training batch is ready ("reforward"), so the cost per
    incoming example is about ``1 + 3 * keep_rate`` units against 3 for plain training.

A filter may also return per-example loss *weights* for the kept examples (InfoBatch rescales
kept low-loss examples). Filters own their random generators and expose ``state_dict`` /
``load_state_dict`` that include them, so a resumed run reproduces an uninterrupted one, and the
state is plain tensors and numbers, ready to be synchronised across ranks later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch

Stage = Literal["pre_forward", "post_forward"]

#: the batch column holding each example's stable integer id (the one spelling of it in the library).
ID_KEY = "example_id"
#: the batch column of per-example loss weights the engine adds when a filter sets weights.
WEIGHT_KEY = "_weight"
#: several processes: the column the engine adds to the share of a global training batch it hands one
#: rank, ``[loss denominator, rows of the global batch, 1 if this rank only participates]`` (float64).
STEP_KEY = "_global_step"
#: batch columns that are never model inputs (ids, weights, labels, causal-LM document ids).
NOT_MODEL_INPUTS = frozenset({ID_KEY, WEIGHT_KEY, STEP_KEY, "labels", "doc_id"})


@dataclass(frozen=True)
class BatchView:
    """What a filter may look at: stable example ids, token ids, attention mask, labels."""

    ids: torch.Tensor  # int64 [B], stable example ids
    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor | None
    labels: torch.Tensor | None  # [B] class ids, or None for causal LM

    def __len__(self) -> int:
        return int(self.ids.shape[0])


@dataclass(frozen=True)
class Decision:
    """A filter's verdict on a batch: ``keep`` bool [B]; optional ``weight`` float [B]."""

    keep: torch.Tensor
    weight: torch.Tensor | None = None


class OnlineFilter:
    """Base class. Subclasses set ``stage`` and ``reason`` and implement :meth:`decide`.

    ``decide`` gets the batch view and, for post-forward filters, the per-example losses of the
    no-grad forward (``None`` for pre-forward filters). ``observe`` is called with every loss the
    engine computes for examples this filter let through (scoring and training forwards), so
    filters can track loss statistics without extra compute.
    """

    stage: ClassVar[Stage] = "pre_forward"
    #: short reason recorded for every example this filter skips, e.g. ``"random_skip"``.
    reason: ClassVar[str] = "filter"

    def decide(self, batch: BatchView, losses: torch.Tensor | None) -> Decision:  # pragma: no cover
        raise NotImplementedError

    def needs_scoring_forward(self) -> bool:
        """Post-forward filters: whether the next incoming batch needs the no-grad scoring forward.

        Asked by the engine before it scores a batch; when every post-forward filter answers
        ``False`` the scoring forward is not run, every example of the batch is kept (``decide``
        is not called) and the filters see its losses only through ``observe(..., trained=True)``
        from the training forward. Default ``True``. Returning ``False`` suits a warm-up that
        trains on everything and only records losses (:class:`~datadiet.methods.multistage.loss_threshold.LossThreshold`).
        """
        return True

    def observe(self, batch: BatchView, losses: torch.Tensor, *, trained: bool) -> None:
        """Loss feedback for examples this filter kept (``trained``: from the grad forward)."""

    def on_epoch_start(self, epoch: int) -> None:
        """Called by the engine once when a new pass over the data begins."""

    def bind(self, ctx: Any) -> None:
        """Fill in, from a front end's planning context (:class:`datadiet.core.method.PlanContext`), the
        settings this filter was built without (e.g. InfoBatch's planned example stream). Called by
        :meth:`datadiet.core.engine.StepEngine.bind`; values given at construction are kept."""

    def telemetry(self) -> dict[str, Any]:
        """Numbers worth recording in the run record (thresholds, stage, rates)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def generator_state(gen: torch.Generator) -> torch.Tensor:
    return gen.get_state().clone()


def make_generator(seed: int) -> torch.Generator:
    gen = torch.Generator()
    gen.manual_seed(int(seed))
    return gen
