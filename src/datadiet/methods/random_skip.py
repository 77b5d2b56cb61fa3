"""Random skip: drop each incoming example with probability ``rate``, before the forward.

Saves forward + backward of every skipped example; costs nothing. It is the control every online
method is compared with at the same realised skip rate ("beats random at the same budget").
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.filter import BatchView, Decision
from ..core.method import FilterMethod
from ..core.params import Param, float_in


class RandomSkip(FilterMethod):
    """Method and filter ``random_skip``: skip each incoming example with probability ``rate`` before the forward.

    Mechanism: skip before forward. Saves forward + backward of every skipped example; no extra
    cost. Default rate 0.5; in a benchmark suite ``rate: match:<method>`` uses another method's
    realised skip rate (resolved by the harness).
    """

    name = "random_skip"
    mechanism = "skip_pre_forward"
    saves = "forward + backward of every skipped example"
    stage = "pre_forward"
    reason = "random_skip"

    rate = Param(0.5, float_in(0.0, 1.0, max_open=True), "probability of skipping an incoming example")

    def __post_init__(self) -> None:
        self.reseed()

    def decide(self, batch: BatchView, losses: torch.Tensor | None) -> Decision:
        u = torch.rand(len(batch), generator=self._gen)
        return Decision(keep=u >= self.rate)

    def telemetry(self) -> dict[str, Any]:
        return {"rate": self.rate}

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self._gen.get_state().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._gen.set_state(state["rng"])
