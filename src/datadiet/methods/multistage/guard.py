"""The guard on stage 2's forward skips: skip only while the measured false-skip rate is low.

A *false skip* is a skipped example that was in fact important (its loss would have been above
tau, so the loss filter would have trained on it). The guard estimates the false-skip rate from
**held-out evidence**: examples the predictor called unimportant (``P(important | x) <
decision_threshold``, predicted *before* it was fitted on them) whose loss was measured anyway:

* before the switch (stages 0-1) every example is measured, so every predicted-unimportant one is
  evidence;
* in stage 2 only the predicted-unimportant examples let through are measured: the random
  ``explore_fraction``, plus those the guard lets through when it throttles. Both are drawn by a
  uniform draw independent of the example, so they are an unbiased sample of what is skipped.

The last ``window`` such labels give ``k`` important out of ``n``; the guard's statistic is the
exact one-sided upper confidence bound on the false-skip rate (Clopper-Pearson,
:func:`~datadiet.functional.bounds.binomial_upper_bound`), not the point estimate ``k / n``.

The bound must stay under the **limit** ``min(target, kept_lower)``:

* ``target`` (default 0.1): at most one skipped example in ten may be important;
* ``kept_lower``: the lower confidence bound of the important rate among the examples the
  predictor keeps (last ``window`` predicted-important labels). Random skipping at any budget skips
  important examples at the overall important rate, which lies between the false-skip rate and the
  kept examples' rate; so "false-skip rate < kept rate" is exactly "fewer important examples lost
  than random skipping of the same number" (never worse than random at its budget).

What it does with the verdict (``skip_rate`` ``s``: the share of the predicted-unimportant,
non-explored examples that are skipped; a predicted-unimportant example is skipped with
probability ``(1 - explore_fraction) * s``):

* the switch into stage 2 needs a full window whose bound is under the limit (see the meta
  predictor's switch rule); stage 2 starts with ``s = 1``;
* in stage 2, every ``window // 8`` fresh labels (a *check*), a bound over the limit halves ``s``
  (below :data:`MIN_SKIP_RATE` it drops to 0: stage 2 paused, i.e. stage 1 only), a bound under it
  doubles ``s`` (from 0 back to :data:`MIN_SKIP_RATE`) up to 1. A lower ``s`` lets more
  predicted-unimportant examples through, so evidence arrives faster exactly when it is doubtful;
  at ``s = 0`` every example is measured, as in stage 1, and stage 2 resumes when the predictor
  recovers. A predictor that cannot beat random therefore ends with ``s = 0``
  (``stage2_disabled_by_guard`` in the telemetry).

This module is the state (thin class); the math is pure functions.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import torch

from ..._validate import check_float, check_int
from ...functional.bounds import binomial_lower_bound, binomial_upper_bound
from .loss_threshold import Downsampled

#: The smallest positive skip rate; halving below it pauses stage 2 (skip rate 0).
MIN_SKIP_RATE = 0.125

HISTORY_COLUMNS = ["examples_seen", "stage", "evidence", "false_skip_estimate", "false_skip_bound", "limit",
                   "effective_skip_rate"]


def guard_limit(target: float, kept_lower: float) -> float:
    """Pure: the largest false-skip bound tolerated: the target, and never above the kept examples' rate."""
    return min(float(target), float(kept_lower))


def next_skip_rate(rate: float, passes: bool, *, min_rate: float = MIN_SKIP_RATE) -> float:
    """Pure: the skip rate after one check: halve on failure (0 below ``min_rate``), double on success (max 1)."""
    if passes:
        return 1.0 if rate >= 0.5 else max(min_rate, 2.0 * rate)
    half = rate / 2.0
    return half if half >= min_rate else 0.0


class SkipGuard:
    """The guard's state: two windows of held-out labels, the skip rate, counters and a history.

    Keyword-only parameters: ``target`` (largest tolerated false-skip rate, in (0, 1]),
    ``confidence`` (of the one-sided bounds, in (0, 1)), ``window`` (labels kept per window, >= 1),
    ``explore_fraction`` (the paired predictor's, for reporting the effective skip rate),
    ``max_history`` (rows kept in the history; halved in resolution beyond).
    """

    def __init__(self, *, target: float = 0.1, confidence: float = 0.95, window: int = 256,
                 explore_fraction: float = 0.05, max_history: int = 512) -> None:
        self.target = check_float("guard_target", target, min=0.0, max=1.0, min_open=True)
        self.confidence = check_float("guard_confidence", confidence, min=0.0, max=1.0, min_open=True,
                                      max_open=True)
        self.window = check_int("guard_window", window, min=1)
        self.explore_fraction = check_float("explore_fraction", explore_fraction, min=0.0, max=1.0)
        self.check_every = max(1, self.window // 8)
        self._skipped: deque[int] = deque(maxlen=self.window)  # labels of predicted-unimportant examples
        self._kept: deque[int] = deque(maxlen=self.window)  # labels of predicted-important examples
        self.skip_rate = 1.0
        self.active = False  # True once stage 2 started
        self._fresh = 0  # predicted-unimportant labels since the last check
        self.history = Downsampled(max_history)
        self._c = {"checks": 0, "lowered": 0, "raised": 0, "paused": 0, "resumed": 0}

    # ------------------------------------------------------------------ evidence
    def record(self, predicted_unimportant: torch.Tensor, important: torch.Tensor) -> None:
        """Add held-out labels (``important``: loss > tau) of examples predicted (un)important."""
        pu = predicted_unimportant.to(torch.bool)
        y = important.to(torch.bool)
        self._skipped.extend(int(v) for v in y[pu].tolist())
        self._kept.extend(int(v) for v in y[~pu].tolist())
        self._fresh += int(pu.sum())

    def evidence(self) -> dict[str, Any]:
        """The current estimate, its bound, the limit and whether the window passes."""
        n, k = len(self._skipped), sum(self._skipped)
        kn, kk = len(self._kept), sum(self._kept)
        bound = binomial_upper_bound(k, n, confidence=self.confidence)
        kept_lower = binomial_lower_bound(kk, kn, confidence=self.confidence)
        limit = guard_limit(self.target, kept_lower)
        return {"evidence": n, "false_skips": k, "false_skip_estimate": k / n if n else None,
                "false_skip_bound": bound, "kept_evidence": kn, "kept_important_rate": kk / kn if kn else None,
                "kept_important_lower": kept_lower, "limit": limit,
                "passes": n >= self.window and bound <= limit}

    def passes(self) -> bool:
        return bool(self.evidence()["passes"])

    @property
    def effective_skip_rate(self) -> float:
        """The probability that a predicted-unimportant example is skipped (0 before stage 2)."""
        return (1.0 - self.explore_fraction) * self.skip_rate if self.active else 0.0

    # ------------------------------------------------------------------ decisions
    def start(self, examples_seen: int) -> None:
        """Stage 2 starts: skip fully if the evidence passes, else wait for it (paused)."""
        self.active = True
        self.skip_rate = 1.0 if self.passes() else 0.0
        self._fresh = 0
        self._log(examples_seen, self.evidence())

    def check(self, examples_seen: int) -> None:
        """After new labels: every ``check_every`` fresh ones, log the evidence and (stage 2) adjust the rate."""
        if self._fresh < self.check_every:
            return
        self._fresh = 0
        ev = self.evidence()
        if self.active:
            old = self.skip_rate
            self.skip_rate = next_skip_rate(old, bool(ev["passes"]))
            c = self._c
            c["checks"] += 1
            c["lowered"] += self.skip_rate < old
            c["raised"] += self.skip_rate > old
            c["paused"] += self.skip_rate == 0.0 < old
            c["resumed"] += old == 0.0 < self.skip_rate
        self._log(examples_seen, ev)

    def _log(self, examples_seen: int, ev: dict[str, Any]) -> None:
        self.history.append((examples_seen, 2 if self.active else 1, ev["evidence"], ev["false_skip_estimate"],
                             ev["false_skip_bound"], ev["limit"], self.effective_skip_rate))

    def state(self, *, warmed_up: bool) -> str:
        """``collecting`` / ``blocking`` / ``ready`` before stage 2; ``skipping`` / ``throttled`` / ``paused`` in it."""
        if self.active:
            return "skipping" if self.skip_rate == 1.0 else "paused" if self.skip_rate == 0.0 else "throttled"
        ev = self.evidence()
        if ev["evidence"] < self.window or not warmed_up:
            return "collecting"
        return "ready" if ev["passes"] else "blocking"

    # ------------------------------------------------------------------ records
    def telemetry(self, *, warmed_up: bool) -> dict[str, Any]:
        state = self.state(warmed_up=warmed_up)
        return {"state": state, "stage2_disabled_by_guard": state in ("blocking", "paused"),
                "target": self.target, "confidence": self.confidence, "window": self.window,
                "skip_rate": self.skip_rate if self.active else 0.0, "effective_skip_rate": self.effective_skip_rate,
                **{k: v for k, v in self.evidence().items()}, **self._c,
                "history": {"columns": list(HISTORY_COLUMNS), "every_nth_check": self.history.stride,
                            "rows": [list(p) for p in self.history.points]}}

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": torch.tensor(list(self._skipped), dtype=torch.uint8),
                "kept": torch.tensor(list(self._kept), dtype=torch.uint8),
                "skip_rate": self.skip_rate, "active": self.active, "fresh": self._fresh,
                "history": self.history.state_dict(), "counts": dict(self._c)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._skipped = deque((int(v) for v in state["skipped"].tolist()), maxlen=self.window)
        self._kept = deque((int(v) for v in state["kept"].tolist()), maxlen=self.window)
        self.skip_rate, self.active = float(state["skip_rate"]), bool(state["active"])
        self._fresh = int(state["fresh"])
        self.history.load_state_dict(state["history"])
        self._c = {k: int(v) for k, v in state["counts"].items()}
