"""Loss-threshold filtering: stages 0 and 1 of multistage data filtering.

Ouyang et al., IJCAI 2023, "Multistage data filtering" (arXiv 2207.14386); the meta predictor that
adds stage 2 is :mod:`datadiet.methods.multistage.meta_predictor`, and the composed method is
:mod:`datadiet.methods.multistage.method`.

Stage 0, warm-up: for the first ``warmup_examples`` trained examples (the method plans
``warmup_fraction`` = 0.1 of the first epoch's examples, the paper's default) every example is
kept and trained on normally, and its per-example loss is taken from that same training forward:
:meth:`LossThreshold.needs_scoring_forward` returns ``False``, so the engine runs no extra no-grad
scoring forward during the warm-up (warm-up costs exactly what plain training costs). The warm-up
ends after the training batch that reaches ``warmup_examples``, so it is rounded up to whole
batches. The threshold tau is then the mean of the most recent ``window`` (128, the paper's
16 batches of 8) per-example losses.

Stage 1: every incoming example is forwarded once without grad (the engine's scoring forward, eval
mode by default) and examples with loss ``l < tau`` are not backpropagated; the kept ones are
re-batched to full size and forwarded again with grad (the "reforward" strategy).

``tau_mode="frozen"`` (default, the paper's): tau is fixed when the warm-up ends; as the model
improves, more losses fall below it, so the skip rate rises by itself. ``tau_mode="moving"``
(option): tau keeps following the mean of the last ``window`` losses of the scoring forward (the
examples that reached this filter: in stage 2 those are biased towards predicted-important ones).
An explicit ``tau`` (e.g. ``tau=0.0``) fixes the threshold and skips the warm-up; with ``tau=0``
no example is ever skipped (cross-entropy is never negative), so training equals ``full`` exactly
(parameters bit for bit), while the scoring forwards are still run and counted.

What it saves: the backward of every skipped example. Extra cost: one no-grad forward of every
incoming example after the warm-up; per example about ``1 + 3k`` units against 3 for plain
training (k = keep rate), so it pays off only below k ~ 2/3.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..._validate import check_choice, check_float, check_int
from ...errors import ConfigError, DataDietError
from ...core.filter import BatchView, Decision, OnlineFilter
from ...core.method import Method
from ...core.params import Param, as_given, boolean, float_in, int_at_least, one_of, optional

TAU_MODES = ("frozen", "moving")


class Downsampled:
    """An append-only list of points that keeps at most ``max_points`` by halving its resolution.

    Every ``stride``-th point offered is kept; when the list is full, every other kept point is
    dropped and the stride doubles. Deterministic, so it round-trips through ``state_dict``.
    """

    def __init__(self, max_points: int = 512) -> None:
        self.max_points = max(2, int(max_points))
        self.points: list[Any] = []
        self.stride = 1
        self.offered = 0

    def append(self, point: Any) -> None:
        if self.offered % self.stride == 0:
            self.points.append(point)
            if len(self.points) > self.max_points:
                self.points = self.points[::2]
                self.stride *= 2
        self.offered += 1

    def state_dict(self) -> dict[str, Any]:
        return {"points": [list(p) if isinstance(p, tuple) else p for p in self.points],
                "stride": self.stride, "offered": self.offered}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.points = [tuple(p) if isinstance(p, list) else p for p in state["points"]]
        self.stride, self.offered = int(state["stride"]), int(state["offered"])


class LossThreshold(OnlineFilter):
    """Post-forward filter: skip the backward of examples whose loss is below tau.

    Keyword-only parameters:

    warmup_examples
        number of trained examples in the warm-up (stage 0); ``>= 1`` unless ``tau`` is given.
    window
        tau is the mean of the most recent ``window`` per-example losses (paper: 128).
    tau_mode
        ``"frozen"`` (paper; tau fixed at the end of the warm-up) or ``"moving"``.
    tau
        an explicit threshold (``>= 0``): no warm-up, tau never changes (needs ``tau_mode="frozen"``).
    chance_loss
        ours: the loss of a uniform prediction (``ln K`` for K classes), or ``None`` (off). When
        given, the warm-up does not end while the running tau is at or above it: a model that has
        not beaten chance by the end of the planned warm-up would otherwise freeze a tau above the
        loss of its own near-uniform predictions, skip every example and never learn (measured on
        Rotten Tomatoes seed 2: tau 0.71 > ln 2, 95% skipped, accuracy 0.58). The warm-up goes on,
        training normally, until the running tau falls below ``chance_loss`` (or the run ends,
        which is then plain training). ``warmup_end`` records the extension.
    """

    stage = "post_forward"
    reason = "loss_threshold"

    def __init__(self, *, warmup_examples: int | None = None, window: int = 128, tau_mode: str = "frozen",
                 tau: float | None = None, chance_loss: float | None = None, max_trace: int = 512) -> None:
        # None: filled by bind() (10% of the first epoch, the paper's warm-up), or 0 with a fixed tau
        self.warmup_examples = None if warmup_examples is None else check_int("warmup_examples", warmup_examples, min=0)
        self.window = check_int("window", window, min=1)
        self.tau_mode = check_choice("tau_mode", tau_mode, TAU_MODES)
        self.fixed_tau = None if tau is None else check_float("tau", tau, min=0.0)
        if self.fixed_tau is not None and self.warmup_examples is None:
            self.warmup_examples = 0
        if self.fixed_tau is None and self.warmup_examples is not None and self.warmup_examples < 1:
            raise ConfigError(
                "warmup_examples must be >= 1 when tau is not given (tau is measured during the warm-up); "
                f"got {warmup_examples}. Give a warm-up, or a fixed threshold with tau="
            )
        if self.fixed_tau is not None and self.tau_mode == "moving":
            raise ConfigError("tau_mode='moving' needs tau=None (a given tau is fixed); got tau="
                              f"{tau} with tau_mode='moving'")
        self.chance_loss = None if chance_loss is None else check_float("chance_loss", chance_loss, min=0.0,
                                                                         min_open=True)
        self.tau: float | None = self.fixed_tau
        self._recent = torch.empty(0, dtype=torch.float64)
        self._warm_trained = 0  # examples trained on (and recorded) during the warm-up
        self._train_batches = 0  # training batches observed (= optimizer steps in the plain loop)
        self._scored = 0  # examples decided on after the warm-up
        self._skipped = 0
        self.warmup_end: dict[str, int] | None = None
        self._planned_reached: int | None = None  # examples trained when the planned warm-up was reached
        self.tau_trace = Downsampled(max_trace)  # (examples scored, tau) in moving mode

    def bind(self, ctx) -> None:
        if self.warmup_examples is None:
            self.warmup_examples = warmup_examples_for(0.1, max(1, len(ctx.ids)))

    # ------------------------------------------------------------------ state of the stages
    @property
    def in_warmup(self) -> bool:
        return self.tau is None

    @property
    def warmed_up(self) -> bool:
        return self.tau is not None

    @property
    def skipped(self) -> int:
        return self._skipped

    def current_tau(self) -> float | None:
        """tau once known; during the warm-up the running mean of the last ``window`` losses."""
        if self.tau is not None:
            return self.tau
        return float(self._recent.mean()) if self._recent.numel() else None

    def _push(self, losses: torch.Tensor) -> None:
        self._recent = torch.cat([self._recent, losses.detach().to(torch.float64).flatten()])[-self.window :]

    # ------------------------------------------------------------------ filter protocol
    def needs_scoring_forward(self) -> bool:
        return not self.in_warmup  # the warm-up takes its losses from the training forward

    def decide(self, batch: BatchView, losses: torch.Tensor | None) -> Decision:
        if losses is None:
            raise ValueError("loss_threshold is a post-forward filter: it needs the scoring forward's losses")
        valid = ~torch.isnan(losses)
        if self.in_warmup:  # only reached when another post filter asked for the scoring forward
            return Decision(keep=torch.ones(len(batch), dtype=torch.bool))
        keep = losses >= self.tau  # skip l < tau; NaN (skipped before the forward) compares False
        self._scored += int(valid.sum())
        self._skipped += int((valid & ~keep).sum())
        return Decision(keep=keep | ~valid)

    def observe(self, batch: BatchView, losses: torch.Tensor, *, trained: bool) -> None:
        if trained:
            self._train_batches += 1
        if self.in_warmup:
            if not trained:
                return  # warm-up losses come from the training forward, once per example
            if self.warmup_examples is None:
                raise DataDietError("LossThreshold needs warmup_examples (or a fixed tau=): give it, or train through "
                                    "DataDietMixin / datadiet.runner, which fill in 10% of the first epoch")
            self._push(losses)
            self._warm_trained += int(losses.numel())
            running = float(self._recent.mean())
            if self._warm_trained >= self.warmup_examples:
                if self._planned_reached is None:
                    self._planned_reached = self._warm_trained
                if self.chance_loss is None or running < self.chance_loss:
                    self.tau = running
                    self.warmup_end = {"examples": self._warm_trained, "training_batches": self._train_batches,
                                       "extended_by": self._warm_trained - self._planned_reached}
                self.tau_trace.append((0, self.tau))
        elif not trained and self.tau_mode == "moving":
            self._push(losses)
            self.tau = float(self._recent.mean())
            self.tau_trace.append((self._scored, self.tau))

    def telemetry(self) -> dict[str, Any]:
        return {
            "tau": self.tau, "tau_mode": self.tau_mode, "fixed_tau": self.fixed_tau, "window": self.window,
            "warmup_examples": self.warmup_examples, "chance_loss": self.chance_loss, "warmup_end": self.warmup_end,
            "in_warmup": self.in_warmup, "scored_after_warmup": self._scored, "skipped": self._skipped,
            "keep_rate_after_warmup": 1 - self._skipped / self._scored if self._scored else None,
            "training_batches_observed": self._train_batches,
            "tau_trace": [list(p) for p in self.tau_trace.points] if self.tau_mode == "moving" else None,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"tau": self.tau, "recent": self._recent.clone(), "warm_trained": self._warm_trained,
                "train_batches": self._train_batches, "scored": self._scored, "skipped": self._skipped,
                "warmup_end": None if self.warmup_end is None else dict(self.warmup_end),
                "planned_reached": self._planned_reached,
                "tau_trace": self.tau_trace.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tau = None if state["tau"] is None else float(state["tau"])
        self._recent = state["recent"].clone().to(torch.float64)
        self._warm_trained = int(state["warm_trained"])
        self._train_batches = int(state["train_batches"])
        self._scored, self._skipped = int(state["scored"]), int(state["skipped"])
        self.warmup_end = None if state["warmup_end"] is None else dict(state["warmup_end"])
        self._planned_reached = state.get("planned_reached")
        self.tau_trace.load_state_dict(state["tau_trace"])


def num_classes_of(ctx) -> int | None:
    """K of a classification plan context (from its labels), else None."""
    labels = getattr(ctx, "labels", None)
    if ctx.task != "classification" or labels is None or len(labels) == 0:
        return None
    return int(max(labels)) + 1


def warmup_examples_for(warmup_fraction: float, n_first_epoch: int) -> int:
    """Warm-up length in examples: ``ceil(warmup_fraction * n)``, at least 1."""
    return max(1, math.ceil(warmup_fraction * n_first_epoch))


def check_loss_threshold_params(*, warmup_fraction: Any, window: Any, tau_mode: Any, tau: Any) -> tuple:
    """Shared validation of the loss-threshold parameters of ``loss_threshold`` and ``multistage``."""
    wf = check_float("warmup_fraction", warmup_fraction, min=0.0, max=1.0)
    if tau is None and wf == 0.0:
        raise ConfigError("warmup_fraction must be > 0 when tau is not given (tau is measured during the "
                          "warm-up); got 0.0. Give a warm-up, or a fixed threshold with tau=")
    w = check_int("window", window, min=1)
    mode = check_choice("tau_mode", tau_mode, TAU_MODES)
    t = None if tau is None else check_float("tau", tau, min=0.0)
    if t is not None and mode == "moving":
        raise ConfigError(f"tau_mode='moving' needs tau=None (a given tau is fixed); got tau={tau}")
    return wf, w, mode, t


class LossThresholdMethod(Method):
    """Method ``loss_threshold``: stages 0-1 of multistage filtering (see :class:`LossThreshold`).

    Saves the backward of examples whose loss is below tau; costs one no-grad scoring forward per
    example after the warm-up (the warm-up itself costs nothing extra). Break-even keep rate ~2/3.

    Parameters (keyword-only) and sources: ``warmup_fraction=0.1`` (paper: warm-up on the first 10%
    of the first epoch), ``window=128`` (paper: 16 batches of 8), ``tau_mode="frozen"`` (paper;
    ``"moving"`` is our option), ``tau=None`` (ours: give a number to fix tau and skip the warm-up),
    ``chance_guard=True`` (ours: for a K-class task the warm-up lasts until the running tau is below
    ``ln K``, the loss of a uniform prediction; see :class:`LossThreshold` ``chance_loss``).

    LR schedule (decided explicitly): the loop's default ``schedule_by="examples"``: the LR follows
    the share of the incoming example stream consumed, so skipping examples neither stretches nor
    cuts the schedule (the paper's reference ran its linear schedule by updates and drove it to zero).
    """

    name = "loss_threshold"
    mechanism = "skip_post_forward"
    saves = "backward of examples with loss below tau (costs one no-grad forward per example after the warm-up)"

    warmup_fraction = Param(0.1, float_in(0.0, 1.0),
                            "share of the first epoch's examples in the warm-up (paper: 10%); > 0 unless tau is given")
    window = Param(128, int_at_least(1), "tau is the mean of the last window per-example losses (paper: 16 batches of 8)")
    tau_mode = Param("frozen", one_of(*TAU_MODES), "'frozen' (paper: tau fixed at the end of the warm-up) or 'moving' (ours)")
    tau = Param(None, as_given(optional(float_in(0.0))),
                "ours: a number (>= 0) fixes tau and skips the warm-up; None: measured during the warm-up")
    chance_guard = Param(True, boolean, "ours: for K classes the warm-up lasts until the running tau is below ln K")

    def __post_init__(self) -> None:
        resolved = check_loss_threshold_params(warmup_fraction=self.warmup_fraction, window=self.window,
                                               tau_mode=self.tau_mode, tau=self.tau)
        for k, v in zip(("warmup_fraction", "window", "tau_mode", "tau"), resolved):
            self.__dict__[k] = v

    def build_filter(self, n_first_epoch: int, *, num_classes: int | None = None) -> LossThreshold:
        """The filter for a first epoch of ``n_first_epoch`` examples (``num_classes``: K, for the guard)."""
        warm = 0 if self.tau is not None else warmup_examples_for(self.warmup_fraction, n_first_epoch)
        chance = math.log(num_classes) if self.chance_guard and num_classes and num_classes >= 2 else None
        return LossThreshold(warmup_examples=warm, window=self.window, tau_mode=self.tau_mode, tau=self.tau,
                             chance_loss=chance)

    def plan(self, ctx):
        from ...core.method import Plan

        lt = self.build_filter(len(ctx.ids), num_classes=num_classes_of(ctx))
        return Plan(filters=[lt], info={"warmup_examples": lt.warmup_examples, "chance_loss": lt.chance_loss})
