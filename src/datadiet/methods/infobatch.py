"""InfoBatch (Qin et al., ICLR 2024, "InfoBatch: Lossless Training Speed Up by Unbiased Dynamic Data Pruning").

Each example keeps a score: its most recent training loss (examples never trained on yet have no
score). At the start of every epoch the threshold is the mean of the stored scores. During the
epoch, an example whose score is below that mean is pruned at random with probability ``ratio``
(default 0.5, the paper's r); it costs nothing (no forward, no backward). Kept below-mean examples
get loss weight ``1 / (1 - ratio)`` so the expected gradient is unchanged. Pruning stops for the
final ``delta`` share of training (default 0.125, the paper's annealing), measured in examples of
the planned stream, so the last part of training sees the full data.

What it saves: forward + backward of the pruned examples. Extra cost: none (scores come from the
training forward). Because the first epoch has no scores, nothing is pruned in epoch 0: with few
epochs the saving is small, and we report it as measured.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.filter import BatchView, Decision
from ..core.method import FilterMethod
from ..core.params import Param, float_in, int_at_least, optional
from ..errors import DataDietError


def planned_stream(ctx) -> int:
    """The examples a run plans to see: ``max_steps x batch_size`` with a step budget, else epochs x examples."""
    if ctx.max_steps:
        return max(1, int(ctx.max_steps) * int(ctx.batch_size))
    return max(1, len(ctx.ids) * int(ctx.epochs))


class InfoBatch(FilterMethod):
    """Method and filter ``infobatch``: see the module docstring. Saves forward + backward of pruned examples."""

    name = "infobatch"
    mechanism = "skip_pre_forward"
    saves = "forward + backward of pruned below-mean-loss examples (none in epoch 0)"
    stage = "pre_forward"
    reason = "infobatch"

    ratio = Param(0.5, float_in(0.0, 1.0, max_open=True), "pruning probability of a below-mean example (paper r)")
    delta = Param(0.125, float_in(0.0, 1.0), "final share of the example stream trained in full (paper annealing)")
    planned_examples = Param(None, optional(int_at_least(1)),
                             "examples the run will see; None: filled from the run (epochs x examples)")

    def __post_init__(self) -> None:
        self.reseed()
        self.scores: dict[int, float] = {}
        self.threshold: float | None = None
        self._seen = 0
        self._pruned = 0
        self.thresholds: list[float | None] = []

    def bind(self, ctx) -> None:
        super().bind(ctx)
        if self.planned_examples is None:
            self.__dict__["planned_examples"] = planned_stream(ctx)

    @property
    def annealing(self) -> bool:
        if self.planned_examples is None:
            raise DataDietError("InfoBatch needs planned_examples (the examples the run will see, for its annealing "
                                "phase): give it, or train through DataDietMixin / datadiet.runner, which fill it in")
        return self._seen >= (1.0 - self.delta) * self.planned_examples

    def on_epoch_start(self, epoch: int) -> None:
        self.threshold = sum(self.scores.values()) / len(self.scores) if self.scores else None
        self.thresholds.append(self.threshold)

    def decide(self, batch: BatchView, losses: torch.Tensor | None) -> Decision:
        n = len(batch)
        u = torch.rand(n, generator=self._gen)
        keep = torch.ones(n, dtype=torch.bool)
        weight = torch.ones(n)
        if self.threshold is not None and not self.annealing:
            thr = self.threshold
            low = torch.tensor([self.scores.get(int(i), float("inf")) < thr for i in batch.ids.tolist()])
            keep = ~low | (u >= self.ratio)
            weight = torch.where(low & keep, torch.tensor(1.0 / (1.0 - self.ratio)), torch.tensor(1.0))
        self._seen += n
        self._pruned += int((~keep).sum())
        return Decision(keep=keep, weight=weight)

    def observe(self, batch: BatchView, losses: torch.Tensor, *, trained: bool) -> None:
        if trained:
            for i, l in zip(batch.ids.tolist(), losses.tolist()):
                self.scores[int(i)] = float(l)

    def telemetry(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "delta": self.delta, "thresholds": self.thresholds,
                "pruned": self._pruned, "seen": self._seen}

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self._gen.get_state().clone(), "scores": dict(self.scores), "threshold": self.threshold,
                "seen": self._seen, "pruned": self._pruned, "thresholds": list(self.thresholds)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._gen.set_state(state["rng"])
        self.scores = {int(k): float(v) for k, v in state["scores"].items()}
        self.threshold = state["threshold"]
        self._seen, self._pruned = int(state["seen"]), int(state["pruned"])
        self.thresholds = list(state["thresholds"])
