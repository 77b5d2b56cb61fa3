"""What a method is: parameters in, a training plan out.

A method turns its (keyword-only, validated) parameters and a :class:`PlanContext` into a
:class:`Plan`: an optional offline :class:`~datadiet.core.selection.Selection` (prune before training)
and a list of online filters (skip during training). The step engine executes the plan; the
method never touches the training loop. Each method class states which mechanism it uses and
what a dropped example saves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from ..errors import DataDietError
from .filter import OnlineFilter, make_generator
from .params import Configurable, Param, int_at_least, optional
from .selection import Selection


@dataclass
class PlanContext:
    """Everything a method may use to plan, built by each front end from its own settings.

    The plain loop / runner builds it from a ``RunConfig`` (:func:`datadiet.runner.plan_context`),
    the Trainer mixin from the Trainer's own ``args``, model, dataset and processing class
    (:meth:`datadiet.integrations.hf.DataDietMixin.datadiet_plan_context`). No method reads a
    front end's configuration or imports the runner: what it needs is here.

    ``ids`` / ``labels``: the training examples' stable ids (and class ids), in dataset order.
    ``model``: the ``torch.nn.Module`` being trained (on its device). ``train_dataset`` /
    ``collator``: the training examples as a map-style dataset of feature dicts and the function
    that pads a list of them into a batch with an ``example_id`` column. ``texts``: the raw texts in
    ``ids`` order where the front end has them (sentence encoders read them). ``build_model(seed)``
    returns a fresh copy of the model as it was before training (scoring runs train those).
    The training settings (``batch_size`` .. ``bf16``) are the run's, for methods that train or
    score with the model before the run (their cost is timed as selection). ``ranks``: the process
    group (:class:`datadiet.core.distributed.Ranks`) when the run has several processes, else
    ``None``; a plan runs on every rank, shards its per-example work with it and must give every
    rank the same result. ``out_dir``: where a
    method may leave files (e.g. data_diet's ``scores.json``); ``None`` writes nothing.
    """

    ids: np.ndarray
    labels: np.ndarray | None
    seed: int
    task: str
    batch_size: int
    epochs: int
    max_steps: int | None = None
    model: Any = None
    tokenizer: Any = None
    pad_token_id: int = 0
    model_name: str | None = None
    max_length: int = 128
    train_dataset: Any = None
    collator: Any = None
    texts: Any = None
    build_model: Callable[[int], Any] | None = None
    lr: float = 1e-4
    weight_decay: float = 0.0
    warmup: float = 0.0
    schedule: str = "linear"
    schedule_by: str = "examples"
    max_grad_norm: float = 1.0
    fused_adamw: bool = True
    bf16: bool = False
    eval_batch_size: int = 64
    out_dir: Any = None
    ranks: Any = None

    @property
    def autocast_dtype(self):
        import torch

        return torch.bfloat16 if self.bf16 else None

    @property
    def num_classes(self) -> int | None:
        """K of a classification context (from its labels), else ``None``."""
        if self.task != "classification" or self.labels is None or len(self.labels) == 0:
            return None
        return int(np.max(self.labels)) + 1

    def example_texts(self) -> list[str]:
        """The raw texts in ``ids`` order: ``texts`` (a list, or a function returning one), or, for causal-LM
        contexts, each training context decoded with ``tokenizer``."""
        texts = self.texts() if callable(self.texts) else self.texts
        if texts is None and self.task == "causal_lm" and self.tokenizer is not None and self.train_dataset is not None:
            texts = [self.tokenizer.decode(self.train_dataset[i]["input_ids"]) for i in range(len(self.train_dataset))]
        if texts is None:
            raise DataDietError("this method reads the raw training texts, and the planning context has none; give the "
                                "dataset a 'text' column (Trainer) or plan through datadiet.runner.run; or, for "
                                "ingenious, use embedding=model")
        if len(texts) != len(self.ids):
            raise DataDietError(f"the planning context has {len(texts)} texts for {len(self.ids)} training examples")
        return list(texts)

    def need(self, method: str, *fields: str) -> None:
        """Raise a clear error if any of ``fields`` is missing (a front end that did not provide them)."""
        missing = [f for f in fields if getattr(self, f) is None]
        if missing:
            raise DataDietError(
                f"{method} plans with the {', '.join(missing)} of the run, and this planning context has none; "
                "plan through a front end that provides them (datadiet.runner.run, datadiet.loop with "
                "datadiet.runner.plan_context, or DataDietMixin(method=...)), or fill them in the PlanContext")


@dataclass
class Plan:
    selection: Selection | None = None
    filters: list[OnlineFilter] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


class Method(Configurable):
    """Base class: parameters declared once as :class:`~datadiet.core.params.Param` fields (keyword-only,
    validated at construction, recorded by ``params()``), and ``plan(ctx) -> Plan``.

    ``mechanism``: ``none`` | ``prune`` | ``skip_pre_forward`` | ``skip_post_forward`` |
    ``skip_pre_and_post_forward`` (a pre-forward and a post-forward filter together)."""

    name: ClassVar[str] = "method"
    mechanism: ClassVar[str] = "none"
    saves: ClassVar[str] = "nothing"

    def plan(self, ctx: PlanContext) -> Plan:  # pragma: no cover - abstract
        raise NotImplementedError


class FilterMethod(Method, OnlineFilter):
    """A method that is one online filter: the class is both, its parameters declared once.

    ``plan(ctx)`` returns a fresh copy of the filter, bound to the run (``seed=None`` becomes the run's
    training seed); used by hand in a front end, :meth:`bind` does the same. Subclasses build their
    state (generators, counters) in ``__post_init__`` and call :meth:`reseed` when the seed changes.
    """

    seed = Param(None, optional(int_at_least(0)), "RNG seed; None: the run's training seed")

    def plan(self, ctx: PlanContext) -> Plan:
        f = type(self)(**self.params())
        f.bind(ctx)
        return Plan(filters=[f])

    def bind(self, ctx: Any) -> None:
        if self.seed is None:
            self.__dict__["seed"] = int(ctx.seed)
            self.reseed()

    @property
    def run_seed(self) -> int:
        """The seed the generator uses now (0 until a run binds ``seed=None``)."""
        return 0 if self.seed is None else int(self.seed)

    def reseed(self) -> None:
        """Rebuild the filter's generator from :attr:`run_seed` (default: ``self._gen``)."""
        self._gen = make_generator(self.run_seed)


class Full(Method):
    """Ordinary fine-tuning on all data: the same code path with selection off."""

    name = "full"
    mechanism = "none"
    saves = "nothing (the reference every method is compared with)"

    def plan(self, ctx: PlanContext) -> Plan:
        return Plan()
