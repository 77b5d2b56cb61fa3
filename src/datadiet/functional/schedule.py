"""Learning-rate schedules as pure functions of training progress in [0, 1]."""

from __future__ import annotations

SCHEDULE_KINDS = ("linear", "constant")


def linear_warmup_decay(progress: float, *, warmup: float = 0.0, kind: str = "linear") -> float:
    """LR multiplier at ``progress`` (0 = start, 1 = end of the planned run).

    ``kind``: ``"linear"`` (warm up over the first ``warmup`` fraction, then decay linearly to 0 at
    progress 1) or ``"constant"`` (warm up, then 1).
    """
    progress = min(max(progress, 0.0), 1.0)
    if warmup > 0 and progress < warmup:
        return progress / warmup
    if kind == "constant":
        return 1.0
    if kind not in SCHEDULE_KINDS:
        raise ValueError(f"unknown schedule kind {kind!r}; use 'linear' or 'constant'")
    if warmup >= 1.0:
        return 1.0
    return max(0.0, (1.0 - progress) / (1.0 - warmup))
