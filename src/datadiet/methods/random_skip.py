"""Random skip: drop each incoming example with probability ``rate``, before the forward.

Saves forward + backward of every skipped example; costs nothing. It is the control every online
method is compared with at the same realised skip rate ("beats random at the same budget").
"""

from __future__ import annotations

from typing import Any

import torch

from .._validate import check_float, check_int
from ..core.filter import BatchView, Decision, OnlineFilter, make_generator


class RandomSkip(OnlineFilter):
    stage = "pre_forward"
    reason = "random_skip"

    def __init__(self, *, rate: float = 0.5, seed: int = 0) -> None:
        self.rate = check_float("rate", rate, min=0.0, max=1.0, max_open=True)
        self.seed = check_int("seed", seed, min=0)
        self._gen = make_generator(self.seed)

    def decide(self, batch: BatchView, losses: torch.Tensor | None) -> Decision:
        u = torch.rand(len(batch), generator=self._gen)
        return Decision(keep=u >= self.rate)

    def telemetry(self) -> dict[str, Any]:
        return {"rate": self.rate}

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self._gen.get_state().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._gen.set_state(state["rng"])


class RandomSkipMethod:
    """Method ``random_skip``: skip each incoming example with probability ``rate`` before the forward.

    Mechanism: skip before forward. Saves forward + backward of every skipped example; no extra
    cost. Default rate 0.5; in a benchmark suite ``rate: match:<method>`` uses another method's
    realised skip rate (resolved by the harness).
    """

    name = "random_skip"
    mechanism = "skip_pre_forward"
    saves = "forward + backward of every skipped example"

    def __init__(self, *, rate: float = 0.5, seed: int | None = None) -> None:
        self.rate = check_float("rate", rate, min=0.0, max=1.0, max_open=True)
        self.seed = None if seed is None else check_int("seed", seed, min=0)

    def params(self) -> dict:
        return {"rate": self.rate, "seed": self.seed}

    def plan(self, ctx):
        from ..core.method import Plan

        return Plan(filters=[RandomSkip(rate=self.rate, seed=ctx.seed if self.seed is None else self.seed)])
