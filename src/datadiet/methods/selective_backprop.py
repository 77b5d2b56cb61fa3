"""Selective Backprop (Jiang et al., 2019, "Accelerating Deep Learning by Focusing on the Biggest Losers").

Every incoming example is forwarded (no grad). Example i is backpropagated with probability

    p_i = max(p_min, CDF(l_i) ** beta)

where CDF is the empirical distribution of the last ``history`` per-example losses (the losses
just observed are added to the history after deciding). Selected examples are accumulated into
full-sized batches and forwarded again with grad (the engine's re-forward), as in the paper.

What it saves: the backward pass of every unselected example. Extra cost: one no-grad forward of
every example, so the cost per example is about 1 + 3k units against 3 for plain training (k =
keep rate): it only pays off below k ~ 2/3. With ``beta = 1`` the expected keep rate is 1/2,
with 2 about 1/3, with 3 about 1/4 (E[U^beta] = 1/(beta+1) for a continuous CDF).

Defaults and sources: ``beta = 1`` and a loss history of 1024 examples follow the paper's
description; ``p_min = 0`` (no floor) is our choice: a floor can be set to keep every example
reachable. Until the history holds ``warmup`` losses, every example is kept (our choice, so the
CDF is never estimated from a handful of values).
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.filter import BatchView, Decision
from ..core.method import FilterMethod
from ..core.params import Param, float_in, int_at_least


def cdf_keep_probability(losses: torch.Tensor, history: torch.Tensor, *, beta: float, p_min: float) -> torch.Tensor:
    """Pure: ``max(p_min, F(l)^beta)`` with F the empirical CDF of ``history`` (share of values <= l)."""
    if history.numel() == 0:
        return torch.ones_like(losses)
    srt, _ = torch.sort(history.float())
    cdf = torch.searchsorted(srt, losses.float(), right=True).float() / srt.numel()
    return torch.clamp(cdf.pow(beta), min=p_min, max=1.0)


class SelectiveBackprop(FilterMethod):
    """Method and filter ``selective_backprop``. Saves backward passes only (see the module docstring)."""

    name = "selective_backprop"
    mechanism = "skip_post_forward"
    saves = "backward of every unselected example (costs one extra no-grad forward per example)"
    stage = "post_forward"
    reason = "selective_backprop"

    beta = Param(1.0, float_in(0.0, min_open=True), "selectivity: keep probability CDF(loss) ** beta (paper: 1)")
    history = Param(1024, int_at_least(1), "losses kept for the empirical CDF (paper: 1024)")
    p_min = Param(0.0, float_in(0.0, 1.0), "floor on the keep probability (ours: 0, no floor)")
    warmup = Param(128, int_at_least(0), "keep everything until the history holds this many losses (ours)")

    def __post_init__(self) -> None:
        self.reseed()
        self._hist = torch.empty(0)
        self._kept = 0
        self._seen = 0

    def decide(self, batch: BatchView, losses: torch.Tensor | None) -> Decision:
        assert losses is not None, "selective_backprop is a post-forward filter"
        valid = ~torch.isnan(losses)
        keep = torch.ones(len(batch), dtype=torch.bool)
        u = torch.rand(len(batch), generator=self._gen)  # drawn every time: the RNG stream stays aligned
        if self._hist.numel() >= max(1, min(self.warmup, self.history)):
            p = cdf_keep_probability(torch.nan_to_num(losses), self._hist, beta=self.beta, p_min=self.p_min)
            keep = u < p
        keep &= valid
        self._hist = torch.cat([self._hist, losses[valid].float()])[-self.history :]
        self._seen += int(valid.sum())
        self._kept += int(keep.sum())
        return Decision(keep=keep)

    def telemetry(self) -> dict[str, Any]:
        return {"beta": self.beta, "history": self.history, "p_min": self.p_min,
                "keep_rate": self._kept / self._seen if self._seen else None}

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self._gen.get_state().clone(), "hist": self._hist.clone(), "kept": self._kept, "seen": self._seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._gen.set_state(state["rng"])
        self._hist = state["hist"].clone()
        self._kept, self._seen = int(state["kept"]), int(state["seen"])
