"""The meta predictor: stage 2 of multistage data filtering (Ouyang et al., IJCAI 2023).

An online Bernoulli naive Bayes classifier learns, from the raw tokens of an example alone, whether
the model will find it *important*: ``y = [loss > tau]``, with ``tau`` taken from the
:class:`~datadiet.online.loss_threshold.LossThreshold` it is paired with. The label is importance,
not the task's class, so any number of task classes works.

Features: token *presence* (a bag of words over the tokenizer's ids; padding excluded through the
attention mask). The model is two count vectors of vocabulary size (one per importance class) and
two class counts, never a dense [examples x vocabulary] matrix. With Laplace smoothing ``alpha``
(default 1.0)::

    p(v | c)   = (n_c[v] + alpha) / (N_c + 2 alpha)                  token v present, class c
    P(c)       = (N_c + alpha) / (N + 2 alpha)                       smoothed prior (ours)
    log P(c, x) = log P(c) + sum_v log(1 - p(v|c)) + sum_{v in x} [log p(v|c) - log(1 - p(v|c))]

The sums run over the feature space: by default the token ids seen in at least one fitted example
(``feature_space="seen"``, like a vectorizer fitted on the data; ``"vocabulary"`` uses every id).
The feature-wide sum is computed once per fit and the correction touches only the tokens present,
so a batch costs O(tokens + vocabulary), in float64.

Learning: every example that gets a loss is fitted once (``partial_fit`` per batch), on the first
loss the engine reports for it through ``observe``: the scoring forward's loss after the warm-up,
the training forward's loss during the warm-up (where there is no scoring forward). During the
warm-up tau is not frozen yet; the labels then use the paired filter's running tau (the mean of its
last ``window`` losses, the value tau will be frozen at); ``fit_during_warmup=False`` waits for the
frozen tau instead, as the paper's stage 1 does.

Switch to stage 2: on every batch the predictor's log-loss and accuracy are measured *before*
fitting on it (the reference measured after fitting, which is optimistic). Once the warm-up is over
and the mean log-loss of the last ``switch_window`` (16) batches is below ``meta_loss_threshold``
(and their mean accuracy at least ``meta_min_accuracy``), stage 2 starts, for good.

Stage 2: examples predicted unimportant (``P(important | x) < decision_threshold``) are skipped
before any model compute (saves forward + backward), except a random ``explore_fraction`` (0.05,
our addition) of them, let through so the predictor keeps seeing labels from the region it skips.
Its generator is its own and is saved in ``state_dict``. In stage 2 the predictor only gets labels
for the examples it lets through, so its measured log-loss and base rate are those of that
(biased) sample; the bias makes it predict "important" more often, i.e. skip less (conservative).

Cost: its own compute (timed in ``telemetry()["cost_s"]``): per batch a sort of the token ids and
a gather over them, plus an O(vocabulary) refresh after each fit; negligible next to a forward.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import torch

from .._validate import check_choice, check_float, check_int
from ..errors import ConfigError
from .base import BatchView, Decision, OnlineFilter, make_generator
from .loss_threshold import Downsampled, LossThreshold

_ABSENT = object()
_LOG_EPS = math.log(1e-15)  # log-loss clips probabilities at 1e-15 (as sklearn.metrics.log_loss did)


def token_presence(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pure: the (row, token id) pairs of the distinct tokens present in each row, padding excluded."""
    ids = input_ids.to(torch.long)
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, length], got shape {tuple(ids.shape)}")
    if attention_mask is not None:
        ids = ids.masked_fill(attention_mask.to(ids.device) == 0, -1)
    srt, _ = torch.sort(ids, dim=1)
    first = torch.ones_like(srt, dtype=torch.bool)
    first[:, 1:] = srt[:, 1:] != srt[:, :-1]
    valid = first & (srt >= 0)
    rows = torch.arange(srt.shape[0]).unsqueeze(1).expand_as(srt)[valid]
    return rows, srt[valid]


FEATURE_SPACES = ("seen", "vocabulary")


class BernoulliNaiveBayes:
    """Binary Bernoulli naive Bayes over token presence, fitted online; float64 throughout.

    ``feature_space``: which token ids are features. ``"seen"`` (default): the ids that occurred in
    at least one fitted example, as with a bag-of-words vectorizer fitted on the data (a token
    never seen carries no information, but with a 30k vocabulary its Laplace-smoothed absence
    terms would add ~V * alpha * (1/N_0 - 1/N_1) nats of pure bias towards the larger class while
    N << V). ``"vocabulary"``: every id below ``vocab_size`` (the textbook model over the whole
    vocabulary). ``vocab_size=None`` grows the count vectors to the largest id seen.
    """

    def __init__(self, *, vocab_size: int | None = None, alpha: float = 1.0, feature_space: str = "seen") -> None:
        self.alpha = check_float("alpha", alpha, min=0.0, min_open=True)
        self.feature_space = check_choice("feature_space", feature_space, FEATURE_SPACES)
        self.fixed_vocab = vocab_size is not None
        v = 0 if vocab_size is None else check_int("vocab_size", vocab_size, min=1)
        self.feature_count = torch.zeros(2, v, dtype=torch.float64)  # n_c[v]
        self.class_count = torch.zeros(2, dtype=torch.float64)  # N_c
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def vocab_size(self) -> int:
        return int(self.feature_count.shape[1])

    @property
    def n_fitted(self) -> int:
        return int(self.class_count.sum())

    def _check_tokens(self, toks: torch.Tensor) -> None:
        if toks.numel() == 0:
            return
        top = int(toks.max())
        if top >= self.vocab_size:
            if self.fixed_vocab:
                raise ValueError(f"token id {top} is outside the meta predictor's vocabulary of {self.vocab_size}; "
                                 "give the tokenizer's full size as vocab_size")
            grow = torch.zeros(2, top + 1 - self.vocab_size, dtype=torch.float64)
            self.feature_count = torch.cat([self.feature_count, grow], dim=1)
            self._cache = None

    def _tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``base[c] = log P(c) + sum_v log(1 - p(v|c))`` and ``delta[c, v] = log p - log(1 - p)``."""
        if self._cache is None:
            a = self.alpha
            denom = (self.class_count + 2 * a).unsqueeze(1)
            log_p = torch.log(self.feature_count + a) - torch.log(denom)
            log_q = torch.log(denom - self.feature_count - a) - torch.log(denom)  # log(1 - p)
            prior = torch.log(self.class_count + a) - math.log(float(self.class_count.sum()) + 2 * a)
            if self.feature_space == "seen":
                is_feature = (self.feature_count.sum(dim=0) > 0).to(torch.float64)
                log_q, log_p = log_q * is_feature, log_p * is_feature
            self._cache = (prior + log_q.sum(dim=1), log_p - log_q)
        return self._cache

    def joint_log_likelihood(self, rows: torch.Tensor, toks: torch.Tensor, n: int) -> torch.Tensor:
        """``log P(c, x)`` for ``n`` examples given as presence pairs: [n, 2]."""
        self._check_tokens(toks)
        base, delta = self._tables()
        jll = base.unsqueeze(0).repeat(n, 1)
        if toks.numel():
            jll.index_add_(0, rows, delta[:, toks].T)
        return jll

    def predict_log_proba(self, rows: torch.Tensor, toks: torch.Tensor, n: int) -> torch.Tensor:
        """``log P(c | x)``: [n, 2] (column 1: important)."""
        jll = self.joint_log_likelihood(rows, toks, n)
        return jll - torch.logsumexp(jll, dim=1, keepdim=True)

    def partial_fit(self, rows: torch.Tensor, toks: torch.Tensor, y: torch.Tensor) -> None:
        """Add ``len(y)`` examples with labels ``y`` (0/1) to the counts."""
        self._check_tokens(toks)
        y = y.to(torch.long)
        self.class_count += torch.bincount(y, minlength=2).to(torch.float64)
        if toks.numel():
            self.feature_count.index_put_((y[rows], toks), torch.ones(toks.shape[0], dtype=torch.float64),
                                          accumulate=True)
        self._cache = None

    def state_dict(self) -> dict[str, Any]:
        return {"feature_count": self.feature_count.clone(), "class_count": self.class_count.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.feature_count = state["feature_count"].clone().to(torch.float64)
        self.class_count = state["class_count"].clone().to(torch.float64)
        self._cache = None


class MetaPredictor(OnlineFilter):
    """Pre-forward filter: in stage 2, skip examples a naive Bayes predicts unimportant.

    Keyword-only parameters:

    threshold
        the paired :class:`LossThreshold` (its tau labels the examples; its warm-up gates the
        switch), or a callable returning the current tau (``None`` while unknown).
    vocab_size
        the tokenizer's vocabulary size (``None``: grow with the ids seen).
    alpha
        Laplace smoothing (1.0).
    feature_space
        ``"seen"`` (token ids seen in fitted examples) or ``"vocabulary"`` (all ids); see
        :class:`BernoulliNaiveBayes`.
    switch_window, meta_loss_threshold, meta_min_accuracy
        switch when the mean log-loss over the last ``switch_window`` batches is below
        ``meta_loss_threshold`` and their mean accuracy at least ``meta_min_accuracy``.
    decision_threshold
        skip when ``P(important | x) <`` this (0.5).
    explore_fraction
        share of predicted-unimportant examples let through anyway (0.05).
    fit_during_warmup
        learn during the warm-up with the running tau (True) or wait for the frozen tau (False).
    max_pending, max_history
        bounds on the ids waiting for a loss and on the per-batch history kept for telemetry.
    seed
        seed of the exploration generator.
    """

    stage = "pre_forward"
    reason = "meta_predictor"

    def __init__(
        self,
        *,
        threshold: LossThreshold | Callable[[], float | None],
        vocab_size: int | None = None,
        alpha: float = 1.0,
        feature_space: str = "seen",
        switch_window: int = 16,
        meta_loss_threshold: float = 0.5,
        meta_min_accuracy: float = 0.0,
        decision_threshold: float = 0.5,
        explore_fraction: float = 0.05,
        fit_during_warmup: bool = True,
        max_pending: int = 1 << 16,
        max_history: int = 512,
        seed: int = 0,
    ) -> None:
        if not (isinstance(threshold, LossThreshold) or callable(threshold)):
            raise ConfigError("threshold must be the paired LossThreshold filter or a callable returning tau; "
                              f"got {type(threshold).__name__}")
        self.threshold = threshold
        self.nb = BernoulliNaiveBayes(vocab_size=vocab_size, alpha=alpha, feature_space=feature_space)
        self.alpha, self.feature_space = self.nb.alpha, self.nb.feature_space
        self.switch_window = check_int("switch_window", switch_window, min=1)
        self.meta_loss_threshold = check_float("meta_loss_threshold", meta_loss_threshold, min=0.0, min_open=True)
        self.meta_min_accuracy = check_float("meta_min_accuracy", meta_min_accuracy, min=0.0, max=1.0)
        self.decision_threshold = check_float("decision_threshold", decision_threshold, min=0.0, max=1.0,
                                              min_open=True, max_open=True)
        self.explore_fraction = check_float("explore_fraction", explore_fraction, min=0.0, max=1.0)
        if not isinstance(fit_during_warmup, bool):
            raise ConfigError(f"fit_during_warmup must be true or false, got {fit_during_warmup!r}")
        self.fit_during_warmup = fit_during_warmup
        self.max_pending = check_int("max_pending", max_pending, min=1)
        self.seed = check_int("seed", seed, min=0)
        self._gen = make_generator(self.seed)
        self._pending: dict[int, None] = {}  # ids let through, waiting for their first loss
        self._recent: deque[tuple[float, float]] = deque(maxlen=self.switch_window)  # (log-loss, accuracy)
        self.history = Downsampled(max_history)  # (examples seen, log-loss, accuracy, stage) per fitted batch
        self.switch: dict[str, Any] | None = None
        self._c: dict[str, int] = {
            "seen": 0, "batches": 0, "training_batches": 0, "seen_stage0": 0, "seen_stage1": 0, "seen_stage2": 0,
            "fitted": 0, "fitted_important": 0, "predicted_unimportant": 0, "explored": 0, "skipped": 0,
        }
        self._cost_s = 0.0

    # ------------------------------------------------------------------ stages
    def _warmed_up(self) -> bool:
        return self.threshold.warmed_up if isinstance(self.threshold, LossThreshold) else True

    def _tau(self) -> float | None:
        if isinstance(self.threshold, LossThreshold):
            if self.threshold.warmed_up:
                return self.threshold.tau
            return self.threshold.current_tau() if self.fit_during_warmup else None
        return self.threshold()

    @property
    def current_stage(self) -> int:
        """0: warm-up, 1: learning (the loss filter skips backwards), 2: skipping forwards too."""
        if self.switch is not None:
            return 2
        return 1 if self._warmed_up() else 0

    # ------------------------------------------------------------------ filter protocol
    def decide(self, batch: BatchView, losses: torch.Tensor | None) -> Decision:
        t0 = time.perf_counter()
        n = len(batch)
        u = torch.rand(n, generator=self._gen)  # drawn on every batch: the stream stays aligned
        stage = self.current_stage
        self._c["seen"] += n
        self._c["batches"] += 1
        self._c[f"seen_stage{stage}"] += n
        keep = torch.ones(n, dtype=torch.bool)
        if stage == 2:
            rows, toks = token_presence(batch.input_ids, batch.attention_mask)
            p_important = self.nb.predict_log_proba(rows, toks, n)[:, 1].exp()
            unimportant = p_important < self.decision_threshold
            explore = unimportant & (u < self.explore_fraction)
            keep = ~unimportant | explore
            self._c["predicted_unimportant"] += int(unimportant.sum())
            self._c["explored"] += int(explore.sum())
            self._c["skipped"] += int((~keep).sum())
        for i in batch.ids[keep].tolist():
            self._pending.pop(int(i), None)
            self._pending[int(i)] = None
        while len(self._pending) > self.max_pending:
            self._pending.pop(next(iter(self._pending)))
        self._cost_s += time.perf_counter() - t0
        return Decision(keep=keep)

    def observe(self, batch: BatchView, losses: torch.Tensor, *, trained: bool) -> None:
        t0 = time.perf_counter()
        try:
            self._observe(batch, losses, trained)
        finally:
            self._cost_s += time.perf_counter() - t0

    def _observe(self, batch: BatchView, losses: torch.Tensor, trained: bool) -> None:
        if trained:
            self._c["training_batches"] += 1
        # Each example is fitted once, on the first loss reported for it (pending since decide).
        first = [j for j, i in enumerate(batch.ids.tolist()) if self._pending.pop(int(i), _ABSENT) is not _ABSENT]
        if not first:
            return
        tau = self._tau()
        if tau is None:
            return  # no label possible yet (warm-up with fit_during_warmup=False)
        sel = torch.tensor(first, dtype=torch.long)
        y = (losses[sel].to(torch.float64) > tau).to(torch.long)
        am = None if batch.attention_mask is None else batch.attention_mask[sel]
        rows, toks = token_presence(batch.input_ids[sel], am)
        m = len(first)
        logp = self.nb.predict_log_proba(rows, toks, m)  # measured before fitting on this batch
        ll = float(-logp.gather(1, y.unsqueeze(1)).clamp(min=_LOG_EPS).mean())
        acc = float((logp.argmax(dim=1) == y).to(torch.float64).mean())
        self._recent.append((ll, acc))
        self.history.append((self._c["seen"], ll, acc, self.current_stage))
        self.nb.partial_fit(rows, toks, y)
        self._c["fitted"] += m
        self._c["fitted_important"] += int(y.sum())
        self._maybe_switch()

    def _maybe_switch(self) -> None:
        if self.switch is not None or not self._warmed_up() or len(self._recent) < self.switch_window:
            return
        mean_ll = sum(r[0] for r in self._recent) / len(self._recent)
        mean_acc = sum(r[1] for r in self._recent) / len(self._recent)
        if mean_ll < self.meta_loss_threshold and mean_acc >= self.meta_min_accuracy:
            lt = self.threshold if isinstance(self.threshold, LossThreshold) else None
            self.switch = {
                "examples_seen": self._c["seen"], "incoming_batches": self._c["batches"],
                "optimizer_steps": self._c["training_batches"],  # training batches observed so far
                "mean_log_loss": mean_ll, "mean_accuracy": mean_acc,
                "loss_threshold_skipped": None if lt is None else lt.skipped,
            }

    def telemetry(self) -> dict[str, Any]:
        c = self._c
        lt = self.threshold if isinstance(self.threshold, LossThreshold) else None
        lt_skips = None
        if lt is not None:
            at = self.switch["loss_threshold_skipped"] if self.switch is not None else None
            lt_skips = {"stage1": lt.skipped if at is None else at, "stage2": 0 if at is None else lt.skipped - at}
        base = c["fitted_important"] / c["fitted"] if c["fitted"] else None
        return {
            "stage": self.current_stage, "switch": self.switch,
            "switch_rule": {"switch_window": self.switch_window, "meta_loss_threshold": self.meta_loss_threshold,
                            "meta_min_accuracy": self.meta_min_accuracy},
            "decision_threshold": self.decision_threshold, "explore_fraction": self.explore_fraction,
            "vocab_size": self.nb.vocab_size, "examples_seen": c["seen"],
            "seen_per_stage": [c["seen_stage0"], c["seen_stage1"], c["seen_stage2"]],
            "fitted": c["fitted"], "important_rate": base,
            # log-loss of always predicting the observed base rate: what the predictor must beat
            "base_rate_log_loss": None if base in (None, 0.0, 1.0) else
            -(base * math.log(base) + (1 - base) * math.log(1 - base)),
            "skipped": {"meta_predictor_stage2": c["skipped"], "loss_threshold": lt_skips},
            "predicted_unimportant": c["predicted_unimportant"], "explored": c["explored"],
            "cost_s": self._cost_s,
            "history": {"columns": ["examples_seen", "log_loss", "accuracy", "stage"],
                        "every_nth_batch": self.history.stride, "rows": [list(p) for p in self.history.points]},
        }

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self._gen.get_state().clone(), "nb": self.nb.state_dict(),
                "pending": torch.tensor(list(self._pending), dtype=torch.long),
                "recent": [list(r) for r in self._recent], "history": self.history.state_dict(),
                "switch": None if self.switch is None else dict(self.switch), "counts": dict(self._c),
                "cost_s": self._cost_s}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._gen.set_state(state["rng"])
        self.nb.load_state_dict(state["nb"])
        self._pending = {int(i): None for i in state["pending"].tolist()}
        self._recent = deque((tuple(r) for r in state["recent"]), maxlen=self.switch_window)
        self.history.load_state_dict(state["history"])
        self.switch = None if state["switch"] is None else dict(state["switch"])
        self._c = {k: int(v) for k, v in state["counts"].items()}
        self._cost_s = float(state["cost_s"])
