"""The meta predictor: stage 2 of multistage data filtering (Ouyang et al., IJCAI 2023).

An online Bernoulli naive Bayes classifier learns, from the raw tokens of an example alone, whether
the model will find it *important*: ``y = [loss > tau]``, with ``tau`` taken from the
:class:`~datadiet.methods.multistage.loss_threshold.LossThreshold` it is paired with. The label is importance,
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

Option ``predictor="logistic"`` (ours): an online logistic regression (:class:`OnlineLogistic`,
AdaGrad, one step per batch) over the same presence features, optionally with hashed bigrams
(``ngrams=2``). Naive Bayes multiplies the evidence of correlated tokens as if independent and is
over-confident, which is exactly what the log-loss switch rule punishes; the logistic model is not.

Option ``loss_memory=True`` (ours): one extra feature per example, the bucket of the loss it had the
last time it went through the model, relative to tau. It costs no model compute (the loss is
remembered, not recomputed) and carries what text alone cannot from the second epoch on: an
example far below tau in epoch 1 almost always stays below it. The memory is a per-id table (one
float per example seen), saved in ``state_dict``.

Learning: every example that gets a loss is fitted once (``partial_fit`` per batch), on the first
loss the engine reports for it through ``observe``: the scoring forward's loss after the warm-up,
the training forward's loss during the warm-up (where there is no scoring forward). During the
warm-up tau is not frozen yet; the labels then use the paired filter's running tau (the mean of its
last ``window`` losses, the value tau will be frozen at); ``fit_during_warmup=False`` waits for the
frozen tau instead, as the paper's stage 1 does.

Switch to stage 2: on every batch the predictor's log-loss and accuracy are measured *before*
fitting on it (the reference measured after fitting, which is optimistic). With the guard (default,
see below), stage 2 starts once the warm-up is over and the guard's held-out evidence has passed on
each of the last ``switch_window`` (16) fitted batches: a full window of ``guard_window`` (256)
labels of predicted-unimportant examples whose false-skip rate's upper confidence bound is under
the guard's limit. Optional further conditions, all of which must hold over the same batches:
``meta_loss_threshold`` (mean log-loss below it; off by default since the guard, it was 0.5),
``meta_skill_threshold`` (ours: the constant base-rate predictor's mean log-loss minus ours at
least that many nats), ``meta_min_accuracy`` (mean accuracy). The switch is for good; what the
guard does afterwards decides how much stage 2 skips.

Stage 2: examples predicted unimportant (``P(important | x) < decision_threshold``) are skipped
before any model compute, except a random ``explore_fraction`` (0.05, our addition) of them, let
through so the predictor keeps seeing labels from the region it skips. Its generator is its own and
is saved in ``state_dict``. In stage 2 the predictor only gets labels for the examples it lets
through, so its measured log-loss and base rate are those of that (biased) sample; the bias makes
it predict "important" more often, i.e. skip less (conservative).

The guard (``guard=True``, ours; :mod:`~datadiet.methods.multistage.guard`): the let-through
predicted-unimportant examples are an unbiased sample of what is skipped, so their labels estimate
the *false-skip rate* (the share of skipped examples that were important). The guard keeps the last
``guard_window`` of them (and of the predicted-important ones) and compares the exact one-sided
upper confidence bound of the false-skip rate (Clopper-Pearson at ``guard_confidence``) with
``min(guard_target, lower bound of the kept examples' important rate)``: the target (0.1), and
"better than random skipping at the same budget". In stage 2 the guard's ``skip_rate`` halves when
the bound is over that limit and doubles back when it is under it (re-judged every
``guard_window // 8`` fresh labels); a predicted-unimportant example is skipped with probability
``(1 - explore_fraction) * skip_rate``, so at skip rate 0 stage 2 is paused (stage 1 only) and
every example is labelled again, until the predictor recovers. ``guard=False``: the unguarded
stage 2 (skip rate 1 always).

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

from ..._validate import check_choice, check_float, check_int
from ...errors import ConfigError
from ...core.filter import BatchView, Decision, OnlineFilter, make_generator
from .guard import SkipGuard
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

    @staticmethod
    def _fold(rows: torch.Tensor, toks: torch.Tensor, extra: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """More present features per row (``extra[i]``: row i's, [n] or [n, m]), as presence pairs."""
        if extra is None:
            return rows, toks
        e = extra if extra.ndim == 2 else extra.unsqueeze(1)
        return torch.cat([rows, torch.arange(e.shape[0]).repeat_interleave(e.shape[1])]), torch.cat([toks, e.flatten()])

    def predict_log_proba(self, rows: torch.Tensor, toks: torch.Tensor, n: int,
                          extra: torch.Tensor | None = None) -> torch.Tensor:
        """``log P(c | x)``: [n, 2] (column 1: important); ``extra``: more feature ids per row ([n] or [n, m]), or None."""
        rows, toks = self._fold(rows, toks, extra)
        jll = self.joint_log_likelihood(rows, toks, n)
        return jll - torch.logsumexp(jll, dim=1, keepdim=True)

    def partial_fit(self, rows: torch.Tensor, toks: torch.Tensor, y: torch.Tensor,
                    extra: torch.Tensor | None = None) -> None:
        """Add ``len(y)`` examples with labels ``y`` (0/1) to the counts."""
        rows, toks = self._fold(rows, toks, extra)
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


def feature_presence(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, *, vocab_size: int,
                     bigram_buckets: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pure: (row, feature id) pairs of the distinct text features of each row.

    Features are the token ids (``< vocab_size``) and, with ``bigram_buckets > 0``, the hashed
    bigrams of consecutive non-padding tokens, at ids ``vocab_size + hash(a, b) % bigram_buckets``.
    """
    ids = input_ids.to(torch.long)
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, length], got shape {tuple(ids.shape)}")
    if attention_mask is not None:
        ids = ids.masked_fill(attention_mask.to(ids.device) == 0, -1)
    if bigram_buckets > 0 and ids.shape[1] > 1:
        a, b = ids[:, :-1], ids[:, 1:]
        h = (a * 1_000_003 + b * 8_191 + 17) % bigram_buckets + vocab_size
        ids = torch.cat([ids, h.masked_fill((a < 0) | (b < 0), -1)], dim=1)
    return token_presence(ids, None)


def label_token_presence(input_ids: torch.Tensor, attention_mask: torch.Tensor | None, labels: torch.Tensor, *,
                         base: int, buckets: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pure: (row, feature id) pairs of the distinct label-conditioned token features of each row.

    The class label is known before the forward, so "token v in an example of class c" is a cheap
    feature: the pair ``(c, v)`` hashed to ``base + hash(c, v) % buckets``. It lets a linear model
    learn what text alone cannot, e.g. "this word in a *negative* example is easy" (padding excluded).
    """
    ids = input_ids.to(torch.long)
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be [batch, length], got shape {tuple(ids.shape)}")
    lab = labels.to(torch.long).reshape(-1)
    if lab.shape[0] != ids.shape[0]:
        raise ValueError(f"labels must give one class per row: got {lab.shape[0]} labels for {ids.shape[0]} rows")
    h = (ids * 2_654_435_761 + (lab.unsqueeze(1) + 1) * 40_503 + 7) % buckets + base
    if attention_mask is not None:
        h = h.masked_fill(attention_mask.to(h.device) == 0, -1)
    return token_presence(h, None)


#: Edges of the length buckets, in non-padding tokens (our addition; see ``MetaPredictor``).
LENGTH_EDGES = (4, 8, 16, 32, 64, 128, 256, 512)
N_LENGTH_FEATURES = len(LENGTH_EDGES) + 1


def length_bucket(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Pure: the bucket of each row's length in non-padding tokens (bucket i: ``LENGTH_EDGES[i-1] <= len <
    LENGTH_EDGES[i]``; 0 below the first edge, ``len(LENGTH_EDGES)`` from the last on)."""
    if attention_mask is None:
        lengths = torch.full((input_ids.shape[0],), input_ids.shape[1], dtype=torch.long)
    else:
        lengths = attention_mask.to(torch.long).sum(dim=1)
    return torch.bucketize(lengths, torch.tensor(LENGTH_EDGES, dtype=torch.long), right=True)


#: Edges of the loss-memory buckets, as multiples of tau (our addition; see ``MetaPredictor``).
MEMORY_EDGES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0)
N_MEMORY_FEATURES = len(MEMORY_EDGES) + 2  # the buckets, plus one for "no loss seen yet"


def memory_bucket(last_loss: torch.Tensor, tau: float) -> torch.Tensor:
    """Pure: the bucket of each example's last observed loss relative to tau (NaN: never seen)."""
    edges = torch.tensor(MEMORY_EDGES, dtype=torch.float64) * float(tau)
    b = torch.bucketize(last_loss.to(torch.float64), edges, right=True)
    return torch.where(torch.isnan(last_loss), torch.full_like(b, len(MEMORY_EDGES) + 1), b)


class OnlineLogistic:
    """Binary logistic regression over sparse binary features, fitted online with AdaGrad.

    One AdaGrad step per batch on the batch's mean log-loss (plus ``l2`` on the touched weights).
    A row's text features are scaled by ``1/sqrt(count)`` so long and short texts give logits of
    the same scale. Unlike naive Bayes it does not assume the features independent, so its
    probabilities are far less over-confident on correlated tokens (what the switch rule reads).
    """

    def __init__(self, *, n_features: int, lr: float = 0.1, l2: float = 0.0) -> None:
        self.n_features = check_int("n_features", n_features, min=1)
        self.lr = check_float("lr", lr, min=0.0, min_open=True)
        self.l2 = check_float("l2", l2, min=0.0)
        self.w = torch.zeros(self.n_features + 1, dtype=torch.float64)  # last entry: bias
        self.g2 = torch.zeros(self.n_features + 1, dtype=torch.float64)
        self.n_fitted = 0

    def _check(self, feats: torch.Tensor) -> None:
        if feats.numel() and int(feats.max()) >= self.n_features:
            raise ValueError(f"feature id {int(feats.max())} is outside the meta predictor's "
                             f"{self.n_features} features; give the tokenizer's full size as vocab_size")

    @staticmethod
    def _values(rows: torch.Tensor, n: int) -> torch.Tensor:
        counts = torch.bincount(rows, minlength=n).to(torch.float64).clamp(min=1)
        return counts.rsqrt()[rows]

    def _logits(self, rows: torch.Tensor, feats: torch.Tensor, vals: torch.Tensor, n: int) -> torch.Tensor:
        z = torch.full((n,), float(self.w[-1]), dtype=torch.float64)
        if feats.numel():
            z.index_add_(0, rows, self.w[feats] * vals)
        return z

    def predict_log_proba(self, rows: torch.Tensor, feats: torch.Tensor, n: int,
                          extra: torch.Tensor | None = None) -> torch.Tensor:
        """``log P(c | x)``: [n, 2]; ``extra``: more feature ids per row ([n] or [n, m], value 1), or None."""
        self._check(feats)
        z = self._logits(rows, feats, self._values(rows, n), n)
        if extra is not None:
            e = extra if extra.ndim == 2 else extra.unsqueeze(1)
            self._check(e)
            z = z + self.w[e].sum(dim=1)
        return torch.stack([torch.nn.functional.logsigmoid(-z), torch.nn.functional.logsigmoid(z)], dim=1)

    def partial_fit(self, rows: torch.Tensor, feats: torch.Tensor, y: torch.Tensor,
                    extra: torch.Tensor | None = None) -> None:
        self._check(feats)
        n = int(y.numel())
        vals = self._values(rows, n)
        z = self._logits(rows, feats, vals, n)
        e = None if extra is None else extra if extra.ndim == 2 else extra.unsqueeze(1)
        if e is not None:
            self._check(e)
            z = z + self.w[e].sum(dim=1)
        err = (torch.sigmoid(z) - y.to(torch.float64)) / n  # d(mean log-loss)/dz
        idx = torch.cat([feats, torch.tensor([self.n_features])] + ([] if e is None else [e.flatten()]))
        contrib = torch.cat([err[rows] * vals, err.sum().reshape(1)]
                            + ([] if e is None else [err.repeat_interleave(e.shape[1])]))
        uniq, inv = torch.unique(idx, return_inverse=True)
        g = torch.zeros(uniq.shape[0], dtype=torch.float64).index_add_(0, inv, contrib)
        g = g + self.l2 * self.w[uniq]
        self.g2[uniq] += g * g
        self.w[uniq] -= self.lr * g / (self.g2[uniq].sqrt() + 1e-12)
        self.n_fitted += n

    def state_dict(self) -> dict[str, Any]:
        return {"w": self.w.clone(), "g2": self.g2.clone(), "n_fitted": self.n_fitted}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w, self.g2 = state["w"].clone(), state["g2"].clone()
        self.n_fitted = int(state["n_fitted"])


PREDICTORS = ("naive_bayes", "logistic")


class MetaPredictor(OnlineFilter):
    """Pre-forward filter: in stage 2, skip examples a naive Bayes predicts unimportant, under a guard.

    Keyword-only parameters:

    threshold
        the paired :class:`LossThreshold` (its tau labels the examples; its warm-up gates the
        switch), or a callable returning the current tau (``None`` while unknown).
    vocab_size
        the tokenizer's vocabulary size (``None``: grow with the ids seen; naive Bayes on unigrams
        without loss memory only).
    predictor
        ``"naive_bayes"`` (the paper's Bernoulli naive Bayes, default) or ``"logistic"`` (ours:
        :class:`OnlineLogistic`, better calibrated).
    alpha
        Laplace smoothing of naive Bayes (1.0).
    feature_space
        naive Bayes: ``"seen"`` (feature ids seen in fitted examples) or ``"vocabulary"`` (all
        ids); see :class:`BernoulliNaiveBayes`.
    lr
        AdaGrad step of the logistic predictor (0.1).
    ngrams, hash_buckets
        ``ngrams=2`` adds hashed bigrams of consecutive tokens (``hash_buckets`` = 2**18 slots).
    label_tokens
        ours: add the label-conditioned token features (:func:`label_token_presence`: the class
        label is known before the forward; ``hash_buckets`` slots). Classification only.
    length_feature
        ours: add one feature per example, the bucket of its length in non-padding tokens
        (:data:`LENGTH_EDGES`).
    loss_memory
        ours: add one feature per example, the bucket of its last observed loss relative to tau
        (:data:`MEMORY_EDGES`; "never seen" in the first epoch). Still no model compute: the loss
        was measured when the example last went through the model. Useful from the second epoch.
    switch_window
        the switch conditions must hold over the last ``switch_window`` (16) fitted batches: the
        guard's on each of them, the log-loss rules on their mean.
    meta_loss_threshold, meta_min_accuracy, meta_skill_threshold
        optional switch conditions (``None``, 0.0, ``None``: off): mean log-loss below
        ``meta_loss_threshold``, mean accuracy at least ``meta_min_accuracy``, the base-rate
        predictor's mean log-loss minus ours at least ``meta_skill_threshold`` (all measured before
        fitting). With ``guard=False`` at least one is needed.
    decision_threshold
        skip when ``P(important | x) <`` this (0.5).
    explore_fraction
        share of predicted-unimportant examples let through anyway (0.05): the guard's evidence.
    guard, guard_target, guard_confidence, guard_window
        ours: the guard on every forward skip (on; see the module docstring and
        :class:`~datadiet.methods.multistage.guard.SkipGuard`): the largest tolerated false-skip
        rate (0.1), the confidence of its bounds (0.95) and its window of labels (256).
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
        predictor: str = "naive_bayes",
        alpha: float = 1.0,
        feature_space: str = "seen",
        lr: float = 0.1,
        ngrams: int = 1,
        hash_buckets: int = 1 << 18,
        loss_memory: bool = False,
        label_tokens: bool = False,
        length_feature: bool = False,
        switch_window: int = 16,
        meta_loss_threshold: float | None = None,
        meta_min_accuracy: float = 0.0,
        meta_skill_threshold: float | None = None,
        decision_threshold: float = 0.5,
        explore_fraction: float = 0.05,
        guard: bool = True,
        guard_target: float = 0.1,
        guard_confidence: float = 0.95,
        guard_window: int = 256,
        fit_during_warmup: bool = True,
        max_pending: int = 1 << 16,
        max_history: int = 512,
        seed: int = 0,
    ) -> None:
        if not (isinstance(threshold, LossThreshold) or callable(threshold)):
            raise ConfigError("threshold must be the paired LossThreshold filter or a callable returning tau; "
                              f"got {type(threshold).__name__}")
        self.threshold = threshold
        self.predictor = check_choice("predictor", predictor, PREDICTORS)
        self.ngrams = check_int("ngrams", ngrams, min=1, max=2)
        self.hash_buckets = check_int("hash_buckets", hash_buckets, min=1)
        if not isinstance(loss_memory, bool):
            raise ConfigError(f"loss_memory must be true or false, got {loss_memory!r}")
        self.loss_memory = loss_memory
        for name, v in (("label_tokens", label_tokens), ("length_feature", length_feature)):
            if not isinstance(v, bool):
                raise ConfigError(f"{name} must be true or false, got {v!r}")
        self.label_tokens, self.length_feature = label_tokens, length_feature
        self.vocab = None if vocab_size is None else check_int("vocab_size", vocab_size, min=1)
        if self.vocab is None and (predictor == "logistic" or self.ngrams > 1 or loss_memory or label_tokens
                                   or length_feature):
            raise ConfigError("the meta predictor needs vocab_size (the tokenizer's size) for predictor='logistic', "
                              "ngrams=2, loss_memory, label_tokens or length_feature; give vocab_size, or a model the "
                              "method can read it from")
        # feature ids: [tokens | hashed bigrams | hashed (label, token) | loss memory | length]
        self._bigram_buckets = self.hash_buckets if self.ngrams > 1 else 0
        self._label_base = (self.vocab or 0) + self._bigram_buckets
        self._label_buckets = self.hash_buckets if label_tokens else 0
        self._memory_base = self._label_base + self._label_buckets
        self._length_base = self._memory_base + (N_MEMORY_FEATURES if loss_memory else 0)
        n_features = None if self.vocab is None else self._length_base + (N_LENGTH_FEATURES if length_feature else 0)
        self.alpha = check_float("alpha", alpha, min=0.0, min_open=True)
        self.feature_space = check_choice("feature_space", feature_space, FEATURE_SPACES)
        self.lr = check_float("lr", lr, min=0.0, min_open=True)
        self.model: BernoulliNaiveBayes | OnlineLogistic
        if self.predictor == "naive_bayes":
            self.model = BernoulliNaiveBayes(vocab_size=n_features, alpha=alpha, feature_space=feature_space)
        else:
            self.model = OnlineLogistic(n_features=n_features, lr=lr)
        self._last_loss: dict[int, float] = {}  # id -> last loss observed (loss_memory)
        self.switch_window = check_int("switch_window", switch_window, min=1)
        self.meta_loss_threshold = (None if meta_loss_threshold is None else
                                    check_float("meta_loss_threshold", meta_loss_threshold, min=0.0, min_open=True))
        self.meta_min_accuracy = check_float("meta_min_accuracy", meta_min_accuracy, min=0.0, max=1.0)
        self.meta_skill_threshold = (None if meta_skill_threshold is None else
                                     check_float("meta_skill_threshold", meta_skill_threshold, min=0.0))
        self.decision_threshold = check_float("decision_threshold", decision_threshold, min=0.0, max=1.0,
                                              min_open=True, max_open=True)
        self.explore_fraction = check_float("explore_fraction", explore_fraction, min=0.0, max=1.0)
        if not isinstance(guard, bool):
            raise ConfigError(f"guard must be true or false, got {guard!r}")
        self.guard = guard
        # validated (and kept) whether or not the guard is on, so a typo never waits for guard=true
        self.skip_guard = SkipGuard(target=guard_target, confidence=guard_confidence, window=guard_window,
                                    explore_fraction=self.explore_fraction, max_history=max_history)
        self.guard_target = self.skip_guard.target
        self.guard_confidence = self.skip_guard.confidence
        self.guard_window = self.skip_guard.window
        if not guard and self.meta_loss_threshold is None and self.meta_skill_threshold is None \
                and self.meta_min_accuracy == 0.0:
            raise ConfigError("with guard=false the switch to stage 2 needs a rule of its own: give meta_loss_threshold "
                              "(e.g. 0.5, the old default), meta_skill_threshold or meta_min_accuracy, or keep "
                              "guard=true")
        if not isinstance(fit_during_warmup, bool):
            raise ConfigError(f"fit_during_warmup must be true or false, got {fit_during_warmup!r}")
        self.fit_during_warmup = fit_during_warmup
        self.max_pending = check_int("max_pending", max_pending, min=1)
        self.seed = check_int("seed", seed, min=0)
        self._gen = make_generator(self.seed)
        self._pending: dict[int, None] = {}  # ids let through, waiting for their first loss
        self._recent: deque[tuple[float, float, float]] = deque(maxlen=self.switch_window)  # (log-loss, accuracy, base-rate log-loss)
        self._guard_streak = 0  # consecutive fitted batches (after the warm-up) whose guard evidence passed
        self.history = Downsampled(max_history)  # (examples seen, log-loss, accuracy, stage) per fitted batch
        self.switch: dict[str, Any] | None = None
        self._c: dict[str, int] = {
            "seen": 0, "batches": 0, "training_batches": 0, "seen_stage0": 0, "seen_stage1": 0, "seen_stage2": 0,
            "fitted": 0, "fitted_important": 0, "predicted_unimportant": 0, "explored": 0, "skipped": 0,
            "guard_let_through": 0, "seen_stage2_paused": 0,
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
            rows, feats, extra = self._features(batch.ids, batch.input_ids, batch.attention_mask, labels=batch.labels)
            p_important = self.model.predict_log_proba(rows, feats, n, extra)[:, 1].exp()
            unimportant = p_important < self.decision_threshold
            e = self.explore_fraction
            explore = unimportant & (u < e)
            # the guard lets through a further (1 - e)(1 - skip_rate) of them (none at skip_rate 1)
            s = self.skip_guard.skip_rate if self.guard else 1.0
            let_through = unimportant & (u >= e) & (u < e + (1.0 - e) * (1.0 - s))
            keep = ~unimportant | explore | let_through
            self._c["predicted_unimportant"] += int(unimportant.sum())
            self._c["explored"] += int(explore.sum())
            self._c["guard_let_through"] += int(let_through.sum())
            self._c["skipped"] += int((~keep).sum())
            if s == 0.0:
                self._c["seen_stage2_paused"] += n
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
        labels = None if batch.labels is None else batch.labels[sel]
        rows, feats, extra = self._features(batch.ids[sel], batch.input_ids[sel], am, labels=labels, tau=tau)
        m = len(first)
        logp = self.model.predict_log_proba(rows, feats, m, extra)  # measured before fitting on this batch
        ll = float(-logp.gather(1, y.unsqueeze(1)).clamp(min=_LOG_EPS).mean())
        acc = float((logp.argmax(dim=1) == y).to(torch.float64).mean())
        c = self._c
        b = (c["fitted_important"] + 0.5) / (c["fitted"] + 1.0)  # the base rate so far (smoothed)
        yf = y.to(torch.float64)
        base_ll = float(-(yf * math.log(b) + (1 - yf) * math.log(1 - b)).mean())
        self._recent.append((ll, acc, base_ll))
        self.history.append((self._c["seen"], ll, acc, self.current_stage))
        if self.guard:  # held-out evidence: predicted before fitting, labelled by the measured loss
            self.skip_guard.record(logp[:, 1].exp() < self.decision_threshold, y.to(torch.bool))
            self.skip_guard.check(self._c["seen"])
            if self.switch is None and self._warmed_up():
                self._guard_streak = self._guard_streak + 1 if self.skip_guard.passes() else 0
        self.model.partial_fit(rows, feats, y, extra)
        if self.loss_memory:  # updated after fitting: a label never sees its own loss as a feature
            for i, v in zip(batch.ids[sel].tolist(), losses[sel].tolist()):
                self._last_loss[int(i)] = float(v)
        self._c["fitted"] += m
        self._c["fitted_important"] += int(y.sum())
        self._maybe_switch()

    def _features(self, ids: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                  *, labels: torch.Tensor | None = None,
                  tau: float | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(rows, text feature ids, [n, m] per-row feature ids (loss memory, length) or None)."""
        if self._bigram_buckets:
            rows, feats = feature_presence(input_ids, attention_mask, vocab_size=self.vocab,
                                           bigram_buckets=self._bigram_buckets)
        else:
            rows, feats = token_presence(input_ids, attention_mask)
        if self.label_tokens:
            if labels is None or labels.ndim != 1:
                raise ConfigError("label_tokens needs one class label per example (a classification task); this "
                                  "batch has none. Set label_tokens=false")
            lr_, lf = label_token_presence(input_ids, attention_mask, labels, base=self._label_base,
                                           buckets=self._label_buckets)
            rows, feats = torch.cat([rows, lr_]), torch.cat([feats, lf])
        cols = []
        if self.loss_memory:
            tau = self._tau() if tau is None else tau
            last = torch.tensor([self._last_loss.get(int(i), math.nan) for i in ids.tolist()], dtype=torch.float64)
            cols.append(self._memory_base + memory_bucket(last, tau if tau is not None else math.inf))
        if self.length_feature:
            cols.append(self._length_base + length_bucket(input_ids, attention_mask))
        return rows, feats, (torch.stack(cols, dim=1) if cols else None)

    def _maybe_switch(self) -> None:
        if self.switch is not None or not self._warmed_up() or len(self._recent) < self.switch_window:
            return
        mean_ll = sum(r[0] for r in self._recent) / len(self._recent)
        mean_acc = sum(r[1] for r in self._recent) / len(self._recent)
        skill = sum(r[2] for r in self._recent) / len(self._recent) - mean_ll
        good = ((self.meta_loss_threshold is None or mean_ll < self.meta_loss_threshold)
                and (self.meta_skill_threshold is None or skill >= self.meta_skill_threshold)
                and mean_acc >= self.meta_min_accuracy
                and (not self.guard or self._guard_streak >= self.switch_window))
        if good:
            lt = self.threshold if isinstance(self.threshold, LossThreshold) else None
            self.switch = {
                "examples_seen": self._c["seen"], "incoming_batches": self._c["batches"],
                "optimizer_steps": self._c["training_batches"],  # training batches observed so far
                "mean_log_loss": mean_ll, "mean_accuracy": mean_acc, "skill": skill,
                "loss_threshold_skipped": None if lt is None else lt.skipped,
            }
            if self.guard:
                ev = self.skip_guard.evidence()
                self.switch["guard"] = {k: ev[k] for k in ("evidence", "false_skip_estimate", "false_skip_bound",
                                                           "kept_important_rate", "limit")}
                self.skip_guard.start(self._c["seen"])

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
                            "meta_min_accuracy": self.meta_min_accuracy,
                            "meta_skill_threshold": self.meta_skill_threshold, "guard": self.guard,
                            "guard_streak": self._guard_streak},
            "guard": self.skip_guard.telemetry(warmed_up=self._warmed_up()) if self.guard else None,
            "stage2_disabled_by_guard": self.guard and self.skip_guard.state(warmed_up=self._warmed_up())
            in ("blocking", "paused"),
            "decision_threshold": self.decision_threshold, "explore_fraction": self.explore_fraction,
            "predictor": self.predictor, "ngrams": self.ngrams, "loss_memory": self.loss_memory,
            "label_tokens": self.label_tokens, "length_feature": self.length_feature,
            "vocab_size": self.vocab, "examples_seen": c["seen"],
            "seen_per_stage": [c["seen_stage0"], c["seen_stage1"], c["seen_stage2"]],
            "fitted": c["fitted"], "important_rate": base,
            # log-loss of always predicting the observed base rate: what the predictor must beat
            "base_rate_log_loss": None if base in (None, 0.0, 1.0) else
            -(base * math.log(base) + (1 - base) * math.log(1 - base)),
            "skipped": {"meta_predictor_stage2": c["skipped"], "loss_threshold": lt_skips},
            "predicted_unimportant": c["predicted_unimportant"], "explored": c["explored"],
            "guard_let_through": c["guard_let_through"], "seen_stage2_paused": c["seen_stage2_paused"],
            "cost_s": self._cost_s,
            "history": {"columns": ["examples_seen", "log_loss", "accuracy", "stage"],
                        "every_nth_batch": self.history.stride, "rows": [list(p) for p in self.history.points]},
        }

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self._gen.get_state().clone(), "model": self.model.state_dict(),
                "last_loss": (torch.tensor(list(self._last_loss), dtype=torch.long),
                              torch.tensor(list(self._last_loss.values()), dtype=torch.float64)),
                "pending": torch.tensor(list(self._pending), dtype=torch.long),
                "recent": [list(r) for r in self._recent], "history": self.history.state_dict(),
                "switch": None if self.switch is None else dict(self.switch), "counts": dict(self._c),
                "cost_s": self._cost_s, "guard": self.skip_guard.state_dict(), "guard_streak": self._guard_streak}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._gen.set_state(state["rng"])
        self.model.load_state_dict(state["model"])
        ids, vals = state["last_loss"]
        self._last_loss = dict(zip(ids.tolist(), vals.tolist()))
        self._pending = {int(i): None for i in state["pending"].tolist()}
        self._recent = deque((tuple(r) for r in state["recent"]), maxlen=self.switch_window)
        self.history.load_state_dict(state["history"])
        self.switch = None if state["switch"] is None else dict(state["switch"])
        self._c = {**dict.fromkeys(self._c, 0), **{k: int(v) for k, v in state["counts"].items()}}
        self._cost_s = float(state["cost_s"])
        if "guard" in state:  # absent from a checkpoint written before the guard existed
            self.skip_guard.load_state_dict(state["guard"])
            self._guard_streak = int(state["guard_streak"])
