"""What a method is: parameters in, a training plan out.

A method turns its (keyword-only, validated) parameters and a :class:`PlanContext` into a
:class:`Plan`: an optional offline :class:`~datadiet.selection.Selection` (prune before training)
and a list of online filters (skip during training). The step engine executes the plan; the
method never touches the training loop. Each method class states which mechanism it uses and
what a dropped example saves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .online.base import OnlineFilter
from .selection.selection import Selection


@dataclass
class PlanContext:
    """What a method may use to plan: the training set's ids and labels, the seed, the task.

    ``model`` / ``train_dataset`` / ``collator`` / ``config`` / ``run_dir`` are there for methods
    that score examples with the model before training (their cost is timed as selection).
    """

    ids: np.ndarray
    labels: np.ndarray | None
    seed: int
    task: str
    batch_size: int
    epochs: int
    model: Any = None
    train_dataset: Any = None
    collator: Any = None
    config: Any = None
    run_dir: Any = None


@dataclass
class Plan:
    selection: Selection | None = None
    filters: list[OnlineFilter] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


class Method:
    """Base class. ``mechanism``: ``none`` | ``prune`` | ``skip_pre_forward`` | ``skip_post_forward`` |
    ``skip_pre_and_post_forward`` (a pre-forward and a post-forward filter together)."""

    name: ClassVar[str] = "method"
    mechanism: ClassVar[str] = "none"
    saves: ClassVar[str] = "nothing"

    def plan(self, ctx: PlanContext) -> Plan:  # pragma: no cover - abstract
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """The resolved parameters (recorded in the run record)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


class Full(Method):
    """Ordinary fine-tuning on all data: the same code path with selection off."""

    name = "full"
    mechanism = "none"
    saves = "nothing (the reference every method is compared with)"

    def __init__(self) -> None:
        pass

    def plan(self, ctx: PlanContext) -> Plan:
        return Plan()
