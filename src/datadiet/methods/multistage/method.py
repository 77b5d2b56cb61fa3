"""Multistage data filtering (Ouyang et al., IJCAI 2023, arXiv 2207.14386): the composed method.

Two filters run in one pass over the data stream (see ``docs/methods/multistage.md``):

* :class:`~datadiet.methods.multistage.loss_threshold.LossThreshold` (post-forward). Stage 0: warm-up on the
  first ``warmup_fraction`` of the first epoch, trained normally, losses taken from the training
  forward (no extra forward); tau = mean of the last ``window`` losses, frozen at the end of the
  warm-up. Stages 1-2: examples with loss below tau are not backpropagated.
* :class:`~datadiet.methods.multistage.meta_predictor.MetaPredictor` (pre-forward). A Bernoulli naive Bayes on
  token presence learns ``[loss > tau]`` online; once its held-out false-skip rate is low enough
  (the guard's confidence bound; optionally also its log-loss), stage 2 starts: examples it
  predicts unimportant are skipped before any model compute, except a random ``explore_fraction``
  (and more while the guard throttles; none while the guard has paused stage 2).

What it saves: stage 1, the backward of examples below tau; stage 2, also the forward (and the
backward) of examples the predictor skips. Extra cost: the no-grad scoring forward of every example
that reaches the loss filter after the warm-up (per example ``1 + 3k`` units against 3, so the loss
filter alone pays off below a keep rate k ~ 2/3; in stage 2 only predicted-important and explored
examples pay it), and the predictor's own compute (timed; small).
"""

from __future__ import annotations

from typing import Any

from ..._validate import check_int
from ...errors import ConfigError
from ...core.method import Method
from ...core.params import Param, as_given, boolean, float_in, int_at_least, one_of, optional
from .loss_threshold import TAU_MODES, LossThreshold, LossThresholdMethod, num_classes_of
from .meta_predictor import FEATURE_SPACES, PREDICTORS, MetaPredictor

_LOSS_THRESHOLD_PARAMS = ("warmup_fraction", "window", "tau_mode", "tau", "chance_guard")
_META_PARAMS = ("switch_window", "meta_loss_threshold", "meta_min_accuracy", "meta_skill_threshold",
                "decision_threshold", "explore_fraction", "guard", "guard_target", "guard_confidence", "guard_window",
                "predictor", "alpha", "feature_space", "lr", "ngrams", "loss_memory", "label_tokens",
                "length_feature", "fit_during_warmup")


def infer_vocab_size(model: Any, tokenizer: Any = None) -> int | None:
    """The token-id space of ``model`` (a datadiet ``LoadedModel`` or a HF model) and ``tokenizer``, or None."""
    sizes = []
    for obj in (model, getattr(model, "model", None)):
        if obj is None:
            continue
        cfg = getattr(obj, "config", None)
        v = getattr(cfg, "vocab_size", None)
        if isinstance(v, int) and v > 0:
            sizes.append(v)
        emb = getattr(obj, "get_input_embeddings", None)
        if callable(emb):
            try:
                sizes.append(int(emb().num_embeddings))
            except Exception:  # noqa: BLE001 - a model without a plain embedding table
                pass
    for tok in (getattr(model, "tokenizer", None), getattr(tokenizer, "tokenizer", tokenizer)):
        if tok is not None:
            try:
                sizes.append(len(tok))
            except TypeError:
                pass
    return max(sizes) if sizes else None


class MultistageMethod(Method):
    """Method ``multistage``: loss threshold (stages 0-1) + meta predictor (stage 2).

    Keyword-only parameters, defaults and their sources:

    ``warmup_fraction=0.1``
        paper: warm-up on the first 10% of the first epoch's examples.
    ``window=128``
        paper: tau is the mean of the last 128 losses (16 batches of 8).
    ``tau_mode="frozen"``
        paper (tau fixed at the end of the warm-up); ``"moving"`` is our option.
    ``tau=None``
        ours: a number fixes tau and skips the warm-up (``tau=0`` keeps everything: equals ``full``).
    ``chance_guard=True``
        ours: for K classes the warm-up lasts until the running tau is below ln K (see
        :class:`~datadiet.methods.multistage.loss_threshold.LossThreshold`); without it a seed whose model was
        still at chance after the planned warm-up froze tau above chance and never learned.
    ``switch_window=16``
        ours: the switch conditions must hold over the last 16 fitted batches (the guard's on each
        of them; the optional log-loss rules on their mean).
    ``guard=True``
        ours (issue 19): every forward skip is guarded. The predictor's held-out false-skip rate
        (the share of predicted-unimportant examples whose loss was above tau, predicted before
        fitting) is bounded from above (one-sided Clopper-Pearson at ``guard_confidence``) over the
        last ``guard_window`` labels; stage 2 starts only when that bound has been under
        ``min(guard_target, lower bound of the kept examples' important rate)`` for
        ``switch_window`` consecutive batches, and in stage 2 the skip rate halves whenever the
        bound (from the examples let through) goes over it, down to 0 (stage 1 only), and comes
        back when it recovers. See :mod:`~datadiet.methods.multistage.guard`. ``False``: the
        unguarded stage 2 (then give a log-loss rule, e.g. ``meta_loss_threshold=0.5``).
    ``guard_target=0.1``
        ours: at most one skipped example in ten may have been important (by the upper bound).
    ``guard_confidence=0.95``
        ours: one-sided confidence of the guard's bounds.
    ``guard_window=256``
        ours: held-out labels per window (predicted-unimportant, and predicted-important); the
        skip rate is re-judged every ``guard_window // 8`` fresh predicted-unimportant labels.
    ``meta_loss_threshold=None``
        ours, off by default since the guard (it was 0.5): also require the mean log-loss (before
        fitting) over the window below this. 0.5 nats is well below ln 2 = 0.693, the log-loss of
        a coin flip; the reference used a fixed log-loss threshold measured after fitting.
    ``meta_min_accuracy=0.0``
        ours: an optional condition on the predictor's mean accuracy (off by default).
    ``meta_skill_threshold=None``
        ours, off by default: also require the base-rate predictor's mean log-loss minus ours to be
        at least this many nats. All given conditions must hold.
    ``decision_threshold=0.5``
        paper: skip when the predictor says "unimportant" (P(important) < 0.5).
    ``explore_fraction=0.05``
        ours: share of predicted-unimportant examples let through in stage 2 (the guard's evidence).
    ``alpha=1.0``
        Laplace smoothing, as the reference's (scikit-learn's default for BernoulliNB).
    ``feature_space="seen"``
        ours: the predictor's features are the token ids seen in its fitted examples (as a
        vectorizer fitted on the data would give); ``"vocabulary"``: every id of the tokenizer.
    ``label_tokens=False``
        ours: add hashed (class label, token) presence features; the label is known before the
        forward, so "this word in a negative example" costs no model compute. Classification only.
    ``length_feature=False``
        ours: add one feature per example, the bucket of its length in non-padding tokens.
    ``fit_during_warmup=True``
        ours: the predictor also learns during the warm-up, labelling with the running tau.
    ``vocab_size=None``
        the tokenizer's size, read from the model at plan time (grows with the ids seen if unknown).
    ``seed=None``
        the run seed (the exploration generator's).

    LR schedule (decided explicitly): the loop's default ``schedule_by="examples"``: the LR follows
    the share of the incoming example stream consumed, whatever is skipped, so every method reaches
    the end of its schedule exactly when the data stream ends (the paper's reference updated one
    example at a time in stage 2 and drove its linear schedule to zero early).
    """

    name = "multistage"
    mechanism = "skip_pre_and_post_forward"
    saves = ("backward of examples with loss below tau (stage 1) and forward + backward of examples the meta "
             "predictor skips (stage 2); costs a no-grad forward of each example that reaches the loss filter "
             "after the warm-up")

    # stages 0-1: exactly the ``loss_threshold`` method's parameters (validated and built through it)
    warmup_fraction = Param(0.1, float_in(0.0, 1.0), "paper: warm-up on the first 10% of the first epoch's examples")
    window = Param(128, int_at_least(1), "paper: tau is the mean of the last 128 losses (16 batches of 8)")
    tau_mode = Param("frozen", one_of(*TAU_MODES), "paper: tau fixed at the end of the warm-up; 'moving' is our option")
    tau = Param(None, as_given(optional(float_in(0.0))),
                "ours: a number fixes tau and skips the warm-up (tau=0 keeps everything: equals full)")
    chance_guard = Param(True, boolean, "ours: for K classes the warm-up lasts until the running tau is below ln K")
    # stage 2: the MetaPredictor's parameters, passed to it as they are
    switch_window = Param(16, int_at_least(1), "the switch conditions must hold over the last 16 fitted batches "
                          "(guard: on each of them; log-loss rules: on their mean) (ours)")
    meta_loss_threshold = Param(None, optional(float_in(0.0, min_open=True)),
                                "ours, None (off): also require the predictor's mean log-loss (before fitting) below "
                                "this (0.5 was the default before the guard)")
    meta_min_accuracy = Param(0.0, float_in(0.0, 1.0), "ours: an optional second condition on the predictor's mean "
                              "accuracy (off by default)")
    meta_skill_threshold = Param(None, optional(float_in(0.0)), "ours, None (off): switch on the base-rate "
                                 "predictor's log-loss minus ours being at least this")
    decision_threshold = Param(0.5, float_in(0.0, 1.0, min_open=True, max_open=True),
                               "paper: skip when the predictor says P(important) < this")
    explore_fraction = Param(0.05, float_in(0.0, 1.0), "ours: share of predicted-unimportant examples let through "
                             "in stage 2 (the guard's evidence)")
    guard = Param(True, boolean, "ours: skip before the forward only while the false-skip rate's upper bound is "
                  "under min(guard_target, the kept examples' important rate); false: the unguarded stage 2")
    guard_target = Param(0.1, float_in(0.0, 1.0, min_open=True), "ours: the largest tolerated share of skipped "
                         "examples that were important (loss > tau), judged by its upper confidence bound")
    guard_confidence = Param(0.95, float_in(0.0, 1.0, min_open=True, max_open=True), "ours: confidence of the "
                             "guard's one-sided Clopper-Pearson bounds")
    guard_window = Param(256, int_at_least(1), "ours: the guard judges the last 256 held-out labels of predicted-"
                         "unimportant examples (and of predicted-important ones)")
    predictor = Param("naive_bayes", one_of(*PREDICTORS), "'naive_bayes' (the paper's Bernoulli naive Bayes) or "
                      "'logistic' (ours, better calibrated)")
    alpha = Param(1.0, float_in(0.0, min_open=True), "Laplace smoothing, as the reference's (scikit-learn's "
                  "default for BernoulliNB)")
    feature_space = Param("seen", one_of(*FEATURE_SPACES), "ours: 'seen' (token ids seen in fitted examples) or "
                          "'vocabulary' (every id of the tokenizer)")
    lr = Param(0.1, float_in(0.0, min_open=True), "AdaGrad step of the logistic predictor")
    ngrams = Param(1, int_at_least(1, 2), "2 adds hashed bigrams of consecutive tokens")
    loss_memory = Param(False, boolean, "ours: one feature per example, the bucket of its last observed loss "
                        "relative to tau")
    label_tokens = Param(False, boolean, "ours: add hashed (class label, token) presence features (the label is "
                         "known before the forward); classification only")
    length_feature = Param(False, boolean, "ours: add one feature per example, the bucket of its length in tokens "
                           "(edges 4, 8, ..., 512)")
    fit_during_warmup = Param(True, boolean, "ours: the predictor also learns during the warm-up, labelling with "
                              "the running tau")
    vocab_size = Param(None, optional(int_at_least(1)), "the tokenizer's size; None: read from the model at plan time")
    seed = Param(None, optional(int_at_least(0)), "the exploration generator's seed; None: the run seed")

    def __post_init__(self) -> None:
        # Stages 0-1 are exactly the ``loss_threshold`` method: validate and build through it.
        self._loss_threshold = LossThresholdMethod(**{k: self.__dict__[k] for k in _LOSS_THRESHOLD_PARAMS})
        # Stage 2's parameters go to the MetaPredictor as they are; a probe validates them now and
        # gives back their resolved values.
        meta = {k: self.__dict__[k] for k in _META_PARAMS}
        probe = MetaPredictor(threshold=LossThreshold(warmup_examples=1), vocab_size=self.vocab_size or 8, seed=0,
                              **meta)
        self._meta_params = {k: getattr(probe, k) for k in meta}
        for k, v in {**self._loss_threshold.params(), **self._meta_params}.items():
            self.__dict__[k] = v  # the resolved values, readable as attributes and recorded by params()

    def _meta(self, lt: LossThreshold, *, vocab_size: int | None, seed: int) -> MetaPredictor:
        return MetaPredictor(threshold=lt, vocab_size=vocab_size, seed=seed, **self._meta_params)

    def build_filters(self, *, n_first_epoch: int, seed: int, vocab_size: int | None = None,
                      num_classes: int | None = None) -> list:
        """``[MetaPredictor, LossThreshold]`` for a first epoch of ``n_first_epoch`` examples.

        The predictor comes first: it decides before the forward, and it sees each batch's losses
        before the loss filter updates its running tau (during the warm-up).
        """
        lt = self._loss_threshold.build_filter(check_int("n_first_epoch", n_first_epoch, min=1),
                                               num_classes=num_classes)
        vocab = self.vocab_size if self.vocab_size is not None else vocab_size
        return [self._meta(lt, vocab_size=vocab, seed=seed), lt]

    def plan(self, ctx):
        from ...core.method import Plan

        if len(ctx.ids) == 0:
            raise ConfigError("multistage needs a non-empty training set")
        if self.label_tokens and ctx.task != "classification":
            raise ConfigError(f"label_tokens needs a classification task (its features pair each token with the "
                              f"example's class); this run's task is {ctx.task!r}. Set label_tokens=false")
        vocab = self.vocab_size if self.vocab_size is not None else infer_vocab_size(ctx.model, ctx.tokenizer)
        filters = self.build_filters(n_first_epoch=len(ctx.ids), seed=ctx.seed if self.seed is None else self.seed,
                                     vocab_size=vocab, num_classes=num_classes_of(ctx))
        return Plan(filters=filters, info={"warmup_examples": filters[1].warmup_examples,
                                           "chance_loss": filters[1].chance_loss, "vocab_size": vocab})

