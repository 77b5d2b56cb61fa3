"""Multistage data filtering: the loss-threshold filter, the meta predictor, the composed method.

Planted truth throughout: the loss filter skips the examples the model already fits; the meta
predictor learns from tokens alone which examples are easy; a keep-everything threshold equals
``full`` exactly; the warm-up costs no extra forward; state round-trips.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from datadiet.data.collate import Collator, TokenizedSplit
from datadiet.data.types import TextSplit
from datadiet.core.engine import StepEngine
from datadiet.errors import ConfigError, DataDietError
from datadiet.loop import fit, make_optimizer
from datadiet.core.method import PlanContext
from datadiet.models.tiny import tiny_model
from datadiet.core.filter import BatchView, Decision, OnlineFilter
from datadiet.methods.multistage.loss_threshold import LossThreshold, LossThresholdMethod
from datadiet.methods.multistage.meta_predictor import (
    MEMORY_EDGES,
    BernoulliNaiveBayes,
    MetaPredictor,
    OnlineLogistic,
    feature_presence,
    memory_bucket,
    token_presence,
)
from datadiet.methods.multistage.method import MultistageMethod, infer_vocab_size
from datadiet.methods.registry import build_method

from conftest import make_tiny_bert, resume_vs_uninterrupted


# ---------------------------------------------------------------------- helpers
class ForwardCounter:
    """Counts the examples a model is forwarded on, with and without grad (a forward pre-hook)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.grad = 0
        self.nograd = 0
        model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        n = int(kwargs["input_ids"].shape[0])
        if torch.is_grad_enabled():
            self.grad += n
        else:
            self.nograd += n


class PlantedLossModel(torch.nn.Module):
    """A fake classifier whose per-example cross-entropy is planted from the tokens.

    Every label is 0 and the logits are ``[0, z]`` with ``z = log(exp(l) - 1)``, so the
    cross-entropy is exactly ``l``: ``easy_loss`` when the example contains ``easy_token``,
    ``hard_loss`` otherwise, plus a small deterministic spread. A dummy parameter gives the
    training loss a gradient path.
    """

    def __init__(self, easy_token: int, easy_loss: float = 0.1, hard_loss: float = 1.0) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.easy_token, self.easy_loss, self.hard_loss = easy_token, easy_loss, hard_loss

    def forward(self, input_ids, attention_mask=None, **_):
        easy = (input_ids == self.easy_token).any(dim=1)
        spread = (input_ids.sum(dim=1) % 7).to(torch.float32) / 70.0  # in [0, 0.086]
        loss = torch.where(easy, torch.tensor(self.easy_loss), torch.tensor(self.hard_loss)) + spread
        z = torch.log(torch.expm1(loss))
        logits = torch.stack([torch.zeros_like(z), z], dim=1) + 0.0 * self.w
        return logits


EASY, HARD = 5, 6  # keyword token ids


def planted_token_batches(n_batches: int, bs: int = 16, *, vocab: int = 60, easy_rate: float = 0.5, seed: int = 0):
    """Batches of token ids: a keyword (EASY or HARD) plus random filler tokens, with padding."""
    g = torch.Generator().manual_seed(seed)
    next_id = 0
    for _ in range(n_batches):
        length = 12
        ids = torch.randint(10, vocab, (bs, length), generator=g)
        easy = torch.rand(bs, generator=g) < easy_rate
        pos = torch.randint(0, 6, (bs,), generator=g)
        ids[torch.arange(bs), pos] = torch.where(easy, torch.tensor(EASY), torch.tensor(HARD))
        lengths = torch.randint(7, length + 1, (bs,), generator=g)
        am = (torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)).long()
        ids = ids.masked_fill(am == 0, 0)
        batch = {"input_ids": ids, "attention_mask": am, "labels": torch.zeros(bs, dtype=torch.long),
                 "example_id": torch.arange(next_id, next_id + bs)}
        next_id += bs
        yield batch, easy


def text_split(texts, labels, start=0):
    return TextSplit(ids=np.arange(start, start + len(texts)), texts=list(texts), labels=np.asarray(labels))


def flipped_keyword_data(n: int, *, hard_frac: float = 0.25, seed: int = 0):
    """'good ...' -> 1, 'bad ...' -> 0, except a random ``hard_frac`` whose label is flipped (hard)."""
    rng = np.random.default_rng(seed)
    words = ["the", "movie", "plot", "actor", "scene", "film", "story", "music", "cast", "ending"]
    texts, labels, hard = [], [], []
    for i in range(n):
        lab = i % 2
        h = bool(rng.random() < hard_frac)
        texts.append(("good " if lab else "bad ") + " ".join(rng.choice(words, size=rng.integers(0, 3))))
        labels.append(1 - lab if h else lab)
        hard.append(h)
    return texts, np.asarray(labels, dtype=np.int64), np.asarray(hard)


def assert_same_params(a, b):
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n


# ---------------------------------------------------------------------- the engine extension
class Waiver(OnlineFilter):
    """Post filter that never needs the scoring forward; records what it is shown."""

    stage = "post_forward"
    reason = "waiver"

    def __init__(self):
        self.decided = 0
        self.observed = {True: 0, False: 0}

    def needs_scoring_forward(self):
        return False

    def decide(self, batch, losses):
        self.decided += 1
        return Decision(keep=torch.zeros(len(batch), dtype=torch.bool))

    def observe(self, batch, losses, *, trained):
        self.observed[trained] += len(batch)


class PreRecorder(OnlineFilter):
    stage = "pre_forward"
    reason = "pre_recorder"

    def __init__(self):
        self.observed = {True: 0, False: 0}

    def decide(self, batch, losses):
        return Decision(keep=torch.ones(len(batch), dtype=torch.bool))

    def observe(self, batch, losses, *, trained):
        self.observed[trained] += len(batch)


def test_waived_scoring_forward_keeps_everything_and_runs_no_forward(tiny_cls):
    model, _, ds, collator = tiny_cls
    w, pre = Waiver(), PreRecorder()
    counter = ForwardCounter(model)
    engine = StepEngine(task="classification", batch_size=8, filters=[pre, w])
    fit(model, ds, engine=engine, collator=collator, epochs=1, lr=1e-3)
    assert w.decided == 0 and counter.nograd == 0 and engine.counts.examples_forwarded_nograd == 0
    assert engine.counts.examples_backpropagated == counter.grad == len(ds)
    assert w.observed == {True: len(ds), False: 0}
    # With a post filter that does score, pre filters are shown the scoring losses too.
    model2, pre2 = make_tiny_bert(), PreRecorder()
    engine2 = StepEngine(task="classification", batch_size=8, filters=[pre2, LossThreshold(tau=0.0)])
    fit(model2, ds, engine=engine2, collator=collator, epochs=1, lr=1e-3)
    assert pre2.observed == {True: len(ds), False: len(ds)}


def test_warmup_costs_no_extra_forward(tiny_cls):
    model, _, ds, collator = tiny_cls  # 64 examples, batches of 8
    counter = ForwardCounter(model)
    lt = LossThreshold(warmup_examples=20, window=16)  # warm-up rounds up to 3 whole batches (24)
    engine = StepEngine(task="classification", batch_size=8, filters=[lt])
    opt = make_optimizer(model, lr=1e-3)
    for b, start in enumerate(range(0, len(ds), 8)):
        engine.step(model, opt, collator([ds[i] for i in range(start, start + 8)]))
        if b < 3:  # during the warm-up: one grad forward of the batch, nothing else
            assert counter.nograd == 0 and engine.counts.examples_forwarded == counter.grad == 8 * (b + 1)
            assert lt.in_warmup == (b < 2)
    engine.end_epoch(model, opt)
    assert lt.warmup_end == {"examples": 24, "training_batches": 3, "extended_by": 0}
    assert engine.counts.examples_forwarded_nograd == counter.nograd == len(ds) - 24
    assert engine.counts.examples_forwarded_grad == counter.grad
    assert engine.counts.examples_backpropagated + engine.skipped().get("loss_threshold", 0) == len(ds)


# ---------------------------------------------------------------------- loss threshold
def view(ids, input_ids=None):
    ids = torch.as_tensor(ids)
    if input_ids is None:
        input_ids = torch.zeros(len(ids), 4, dtype=torch.long)
    return BatchView(ids=ids, input_ids=input_ids, attention_mask=None, labels=None)


def test_loss_threshold_warmup_tau_and_modes_on_planted_losses():
    lt = LossThreshold(warmup_examples=8, window=6)
    assert lt.in_warmup and not lt.needs_scoring_forward() and lt.current_tau() is None
    lt.observe(view(range(4)), torch.tensor([1.0, 2.0, 3.0, 4.0]), trained=False)  # ignored in warm-up
    assert lt.current_tau() is None
    lt.observe(view(range(4)), torch.tensor([1.0, 2.0, 3.0, 4.0]), trained=True)
    assert lt.current_tau() == pytest.approx(2.5) and lt.in_warmup
    lt.observe(view(range(4, 8)), torch.tensor([5.0, 6.0, 7.0, 8.0]), trained=True)
    assert lt.tau == pytest.approx(np.mean([3, 4, 5, 6, 7, 8]))  # last `window` = 6 losses
    assert lt.needs_scoring_forward()
    d = lt.decide(view(range(4)), torch.tensor([5.4, 5.5, 9.0, float("nan")]))
    assert d.keep[:3].tolist() == [False, True, True]  # skip l < tau (5.5 is kept)
    lt.observe(view(range(3)), torch.tensor([0.0, 0.0, 0.0]), trained=False)
    assert lt.tau == pytest.approx(5.5), "frozen tau does not move"
    assert lt.skipped == 1 and lt.telemetry()["keep_rate_after_warmup"] == pytest.approx(2 / 3)

    mv = LossThreshold(warmup_examples=2, window=2, tau_mode="moving")
    mv.observe(view([0, 1]), torch.tensor([1.0, 3.0]), trained=True)
    assert mv.tau == 2.0
    mv.observe(view([2, 3]), torch.tensor([5.0, 7.0]), trained=False)
    assert mv.tau == 6.0 and mv.telemetry()["tau_trace"][-1] == [0, 6.0]

    fixed = LossThreshold(tau=0.3)
    assert fixed.warmed_up and fixed.needs_scoring_forward()
    assert fixed.decide(view([0, 1]), torch.tensor([0.29, 0.3])).keep.tolist() == [False, True]


def test_chance_guard_extends_the_warmup_until_the_model_beats_chance():
    """A model still at chance when the planned warm-up ends must not freeze tau above ln K."""
    batch = BatchView(ids=torch.arange(16), input_ids=torch.ones(16, 4, dtype=torch.long), attention_mask=None,
                      labels=torch.zeros(16, dtype=torch.long))
    stuck = torch.full((16,), 0.75, dtype=torch.float64)  # above ln 2: no better than a coin
    learnt = torch.full((16,), 0.40, dtype=torch.float64)
    guarded = LossThreshold(warmup_examples=32, window=32, chance_loss=math.log(2))
    plain = LossThreshold(warmup_examples=32, window=32)
    for lt in (guarded, plain):
        for _ in range(3):
            lt.observe(batch, stuck, trained=True)
    assert plain.warmed_up and plain.tau == pytest.approx(0.75), "unguarded: tau frozen above chance"
    assert not plain.decide(batch, torch.full((16,), 0.7, dtype=torch.float64)).keep.any(), "it would skip all"
    assert guarded.in_warmup and not guarded.needs_scoring_forward()
    guarded.observe(batch, learnt, trained=True)  # running mean (0.75 + 0.40) / 2 = 0.575 < ln 2
    assert guarded.warmed_up and guarded.tau == pytest.approx(0.575)
    assert guarded.warmup_end == {"examples": 64, "training_batches": 4, "extended_by": 32}
    # The method reads K from the labels; causal LM (no labels) has no guard.
    ctx = PlanContext(ids=np.arange(100), labels=np.arange(100) % 16, seed=0, task="classification",
                      batch_size=8, epochs=1)
    (lt,) = build_method("loss_threshold").plan(ctx).filters
    assert lt.chance_loss == pytest.approx(math.log(16))
    (lt,) = build_method("loss_threshold", {"chance_guard": False}).plan(ctx).filters
    assert lt.chance_loss is None
    ctx.labels, ctx.task = None, "causal_lm"
    assert build_method("loss_threshold").plan(ctx).filters[0].chance_loss is None


def test_loss_threshold_skips_the_easy_examples_planted_truth():
    """Flipped-label examples stay hard for a model that learned the keyword rule; the rest are easy."""
    texts, labels, hard = flipped_keyword_data(192, hard_frac=0.25, seed=0)
    model, tok = tiny_model("tiny-bert", num_labels=2, seed=0)
    ds = TokenizedSplit(text_split(texts, labels), tok, max_length=32)
    collator = Collator(pad_token_id=tok.pad_token_id)
    # Fine-tuning starts from a model that already fits the keyword rule (as a pretrained model would).
    fit(model, ds, engine=StepEngine(task="classification", batch_size=8), collator=collator, epochs=3, lr=1e-3,
        schedule="constant", seed=0)

    decisions = []

    class Recording(LossThreshold):
        def decide(self, batch, losses):
            d = super().decide(batch, losses)
            if not self.in_warmup:
                decisions.append((batch.ids.clone(), d.keep.clone()))
            return d

    lt = LossThresholdMethod(warmup_fraction=0.1).build_filter(len(ds))
    lt.__class__ = Recording
    engine = StepEngine(task="classification", batch_size=8, filters=[lt])
    fit(model, ds, engine=engine, collator=collator, epochs=2, lr=3e-4, seed=1)
    ids = torch.cat([d[0] for d in decisions]).numpy()
    keep = torch.cat([d[1] for d in decisions]).numpy()
    skipped_hard = hard[ids[~keep]]
    assert len(skipped_hard) > 0.5 * (~hard[ids]).sum(), "most easy examples are skipped"
    assert (~skipped_hard).mean() >= 0.9, "the skipped examples are the easy ones"
    assert keep[hard[ids]].mean() >= 0.9, "the hard (flipped) examples are backpropagated"
    assert engine.skipped()["loss_threshold"] == int((~keep).sum())
    tel = lt.telemetry()
    assert tel["warmup_end"]["examples"] == 24 and tel["tau"] > 0


def test_tau_zero_reproduces_full_exactly(tiny_cls):
    _, _, ds, collator = tiny_cls

    def run(filters):
        model = make_tiny_bert()
        engine = StepEngine(task="classification", batch_size=8, filters=filters)
        res = fit(model, ds, engine=engine, collator=collator, epochs=2, lr=1e-3, seed=3)
        return model, engine, res

    ref, ref_engine, ref_res = run([])
    ctx = PlanContext(ids=np.asarray(ds.ids), labels=ds.labels, seed=0, task="classification", batch_size=8,
                      epochs=2)
    for method in (LossThresholdMethod(tau=0.0), MultistageMethod(tau=0.0, switch_window=2, meta_loss_threshold=10.0)):
        model, engine, res = run(method.plan(ctx).filters)
        assert res.losses == ref_res.losses
        assert_same_params(model, ref)
        c, rc = engine.counts, ref_engine.counts
        assert engine.skipped() == {}
        assert (c.examples_backpropagated, c.optimizer_steps) == (rc.examples_backpropagated, rc.optimizer_steps)
        assert c.examples_forwarded_nograd == c.examples_seen == 2 * len(ds)  # the scoring forwards still run


# ---------------------------------------------------------------------- naive Bayes
def test_token_presence_dedupes_and_drops_padding():
    ids = torch.tensor([[3, 1, 3, 0, 0], [2, 2, 2, 2, 4]])
    am = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]])
    rows, toks = token_presence(ids, am)
    assert sorted(zip(rows.tolist(), toks.tolist())) == [(0, 1), (0, 3), (1, 2)]


@pytest.mark.parametrize("feature_space", ["seen", "vocabulary"])
def test_naive_bayes_log_probabilities_equal_a_hand_computation(feature_space):
    V = 6  # ids 4 and 5 never occur in training: features only with feature_space="vocabulary"
    nb = BernoulliNaiveBayes(vocab_size=V, alpha=1.0, feature_space=feature_space)
    train = [({0, 1}, 1), ({1}, 1), ({1, 2}, 0), ({3}, 1), ({0, 2, 3}, 0)]  # present tokens, label
    features = range(4) if feature_space == "seen" else range(V)

    def pairs(sets):
        rows = torch.tensor([r for r, s in enumerate(sets) for _ in s], dtype=torch.long)
        toks = torch.tensor([t for s in sets for t in sorted(s)], dtype=torch.long)
        return rows, toks

    rows, toks = pairs([s for s, _ in train[:2]])
    nb.partial_fit(rows, toks, torch.tensor([1, 1]))
    rows, toks = pairs([s for s, _ in train[2:]])
    nb.partial_fit(rows, toks, torch.tensor([0, 1, 0]))  # online: two batches

    def hand(x):
        out = []
        for c in (0, 1):
            members = [s for s, y in train if y == c]
            n_c, n = len(members), len(train)
            lp = math.log((n_c + 1) / (n + 2))
            for v in features:
                p = (sum(v in s for s in members) + 1) / (n_c + 2)
                lp += math.log(p) if v in x else math.log(1 - p)
            out.append(lp)
        z = math.log(math.exp(out[0]) + math.exp(out[1]))
        return [o - z for o in out]

    tests = [{0}, {1, 2}, set(), {0, 1, 2, 3}, {4}, {2, 5}]
    rows, toks = pairs(tests)
    got = nb.predict_log_proba(rows, toks, len(tests))
    want = torch.tensor([hand(x) for x in tests], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    if feature_space == "seen":
        torch.testing.assert_close(got[4], got[2])  # an unseen token carries nothing
    # The same model as scikit-learn's BernoulliNB over the feature columns, with our smoothed prior.
    sk = pytest.importorskip("sklearn.naive_bayes")
    cols = list(features)
    X = np.array([[float(v in s) for v in cols] for s, _ in train])
    ref = sk.BernoulliNB(alpha=1.0, class_prior=[(2 + 1) / 7, (3 + 1) / 7]).fit(X, [y for _, y in train])
    Xt = np.array([[float(v in s) for v in cols] for s in tests])
    np.testing.assert_allclose(got.numpy(), ref.predict_log_proba(Xt), rtol=1e-10)


# ---------------------------------------------------------------------- meta predictor
def run_planted_engine(filters, n_batches, *, bs=16, seed=0, easy_rate=0.5):
    model = PlantedLossModel(EASY)
    counter = ForwardCounter(model)
    engine = StepEngine(task="classification", batch_size=bs, filters=filters)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    easy_by_id = {}
    for batch, easy in planted_token_batches(n_batches, bs, seed=seed, easy_rate=easy_rate):
        easy_by_id.update(zip(batch["example_id"].tolist(), easy.tolist()))
        engine.step(model, opt, batch)
    engine.end_epoch(model, opt)
    return engine, counter, easy_by_id


def test_meta_predictor_learns_from_text_alone_and_skips_before_the_forward():
    method = MultistageMethod(warmup_fraction=0.05, window=64, switch_window=8, meta_loss_threshold=0.3,
                              explore_fraction=0.2, vocab_size=60, seed=0)
    skipped_ids = []

    class Recording(MetaPredictor):
        def decide(self, batch, losses):
            d = super().decide(batch, losses)
            skipped_ids.extend(batch.ids[~d.keep].tolist())
            return d

    meta, lt = method.build_filters(n_first_epoch=200 * 16, seed=0)
    meta.__class__ = Recording
    engine, counter, easy = run_planted_engine([meta, lt], 200)
    tel = meta.telemetry()
    # Warm-up (10 batches) trains on everything with no scoring forward; tau sits between 0.1 and 1.0.
    assert lt.warmup_end == {"examples": 160, "training_batches": 10, "extended_by": 0}
    assert 0.2 < lt.tau < 0.9
    sw = tel["switch"]
    assert sw is not None and tel["stage"] == 2, "the predictor learned the keyword and switched"
    assert 160 < sw["examples_seen"] < 1600 and sw["mean_log_loss"] < 0.3
    # Stage 2: the pre-forward skips are easy examples, and they cost no forward at all.
    assert len(skipped_ids) > 0.3 * 200 * 16
    assert np.mean([easy[i] for i in skipped_ids]) > 0.98
    assert engine.skipped()["meta_predictor"] == len(skipped_ids) == tel["skipped"]["meta_predictor_stage2"]
    assert engine.counts.examples_seen == 200 * 16
    assert counter.nograd == 200 * 16 - 160 - len(skipped_ids)
    # Exploration lets through about explore_fraction of the predicted-unimportant examples.
    rate = tel["explored"] / tel["predicted_unimportant"]
    n = tel["predicted_unimportant"]
    assert abs(rate - 0.2) < 4 * math.sqrt(0.2 * 0.8 / n)
    # The explored (easy, low-loss) examples then lose their backward to the loss filter.
    assert tel["skipped"]["loss_threshold"]["stage2"] >= tel["explored"] * 0.9
    assert tel["cost_s"] > 0 and tel["history"]["rows"] and tel["seen_per_stage"][0] == 160
    assert sum(tel["seen_per_stage"]) == 200 * 16


def test_meta_predictor_does_not_switch_when_tokens_carry_no_signal():
    """Easy/hard decided by the keyword, but the keyword never reaches the predictor: no switch."""
    method = MultistageMethod(warmup_fraction=0.05, window=64, switch_window=8, meta_loss_threshold=0.3,
                              vocab_size=60, seed=0)
    meta, lt = method.build_filters(n_first_epoch=60 * 16, seed=0)

    class Blind(MetaPredictor):
        def _observe(self, batch, losses, trained):
            ids = batch.input_ids.masked_fill((batch.input_ids == EASY) | (batch.input_ids == HARD), 7)
            super()._observe(BatchView(ids=batch.ids, input_ids=ids, attention_mask=batch.attention_mask,
                                       labels=batch.labels), losses, trained)

    meta.__class__ = Blind
    engine, _, _ = run_planted_engine([meta, lt], 60)
    assert meta.telemetry()["switch"] is None and "meta_predictor" not in engine.skipped()
    assert meta.telemetry()["stage"] == 1


def test_hashed_bigrams_are_distinct_per_row_and_skip_padding():
    ids = torch.tensor([[3, 4, 3, 4, 0], [4, 3, 9, 0, 0]])
    am = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    rows, feats = feature_presence(ids, am, vocab_size=10, bigram_buckets=1000)
    got = {(int(r), int(f)) for r, f in zip(rows, feats)}
    assert len(got) == len(rows), "presence: each feature once per row"
    uni = {(r, f) for r, f in got if f < 10}
    assert uni == {(0, 3), (0, 4), (1, 3), (1, 4), (1, 9)}
    bi = sorted(f for r, f in got if f >= 10)
    assert all(10 <= f < 1010 for f in bi)
    assert len([1 for r, f in got if r == 0 and f >= 10]) == 2  # (3,4) and (4,3); (4, pad) dropped
    assert len([1 for r, f in got if r == 1 and f >= 10]) == 2  # (4,3) and (3,9)


def test_memory_buckets_follow_the_edges_relative_to_tau():
    tau = 0.8
    losses = torch.tensor([math.nan, 0.0, 0.05, 0.1, 0.4, 0.79, 0.8, 1.7, 3.3, 10.0], dtype=torch.float64)
    got = memory_bucket(losses, tau).tolist()
    assert got == [len(MEMORY_EDGES) + 1, 0, 0, 1, 3, 3, 4, 5, 6, 6]


def test_online_logistic_first_step_and_planted_learning():
    lr = 0.3
    m = OnlineLogistic(n_features=4, lr=lr)
    rows, feats = torch.tensor([0, 0, 1]), torch.tensor([1, 2, 2])
    m.partial_fit(rows, feats, torch.tensor([1, 0]))
    # At w = 0 every p is 1/2; AdaGrad's first step moves each touched weight by lr against its
    # gradient's sign. d/dw1 = (1/2 - 1)/2 * 2**-0.5 < 0; d/dw2 = that + (1/2)/2 * 1 > 0; bias: 0.
    torch.testing.assert_close(m.w, torch.tensor([0.0, lr, -lr, 0.0, 0.0], dtype=torch.float64))
    # Planted: feature 0 -> important with probability 0.9, feature 1 -> 0.1; it learns calibrated odds.
    g = torch.Generator().manual_seed(0)
    m = OnlineLogistic(n_features=2, lr=0.1)
    for _ in range(400):
        f = torch.randint(0, 2, (32,), generator=g)
        y = (torch.rand(32, generator=g) < torch.where(f == 0, 0.9, 0.1)).long()
        m.partial_fit(torch.arange(32), f, y)
    p = m.predict_log_proba(torch.arange(2), torch.tensor([0, 1]), 2)[:, 1].exp()
    assert abs(float(p[0]) - 0.9) < 0.05 and abs(float(p[1]) - 0.1) < 0.05


class TextBlind(MetaPredictor):
    """A predictor that cannot see the keyword: its text features carry no signal."""

    def _features(self, ids, input_ids, attention_mask, **kw):
        masked = input_ids.masked_fill((input_ids == EASY) | (input_ids == HARD), 7)
        return super()._features(ids, masked, attention_mask, **kw)


@pytest.mark.parametrize("memory", [False, True])
def test_loss_memory_lets_the_predictor_skip_from_the_second_epoch(memory):
    """Text says nothing; an example's epoch-1 loss says everything: only memory switches, in epoch 2."""
    batches = list(planted_token_batches(60, 16, seed=3))
    n = 60 * 16
    method = MultistageMethod(warmup_fraction=0.1, window=64, switch_window=8, predictor="logistic", lr=0.3,
                              loss_memory=memory, meta_skill_threshold=0.2, guard_window=64, vocab_size=60, seed=0)
    meta, lt = method.build_filters(n_first_epoch=n, seed=0)
    meta.__class__ = TextBlind
    model = PlantedLossModel(EASY)
    engine = StepEngine(task="classification", batch_size=16, filters=[meta, lt])
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    easy_by_id = {}
    for _epoch in range(2):
        for batch, easy in batches:
            easy_by_id.update(zip(batch["example_id"].tolist(), easy.tolist()))
            engine.step(model, opt, batch)
        engine.end_epoch(model, opt)
    tel = meta.telemetry()
    if not memory:
        assert tel["switch"] is None and "meta_predictor" not in engine.skipped()
        return
    assert tel["switch"] is not None and n < tel["switch"]["examples_seen"] < 1.5 * n
    assert tel["switch"]["skill"] >= 0.2
    skipped = engine.skipped()["meta_predictor"]
    assert skipped > 0.3 * n
    assert tel["loss_memory"] is True and tel["predictor"] == "logistic"


# ---------------------------------------------------------------------- state, methods, Trainer
def test_state_round_trip_resumes_identically(tiny_cls):
    _, _, ds, collator = tiny_cls
    # a tiny guard window and a loose target: the guard switches, throttles, pauses and resumes in 192 examples
    method = MultistageMethod(warmup_fraction=0.25, window=16, switch_window=2, meta_loss_threshold=5.0,
                              explore_fraction=0.3, guard_window=8, guard_target=0.5)
    ctx = PlanContext(ids=np.asarray(ds.ids), labels=ds.labels, seed=4, task="classification", batch_size=8,
                      epochs=3, model=make_tiny_bert())

    def build():
        m = make_tiny_bert()
        e = StepEngine(task="classification", batch_size=8, filters=method.plan(ctx).filters)
        return m, e, make_optimizer(m, lr=1e-3)

    (m1, e1), (m3, e3) = resume_vs_uninterrupted(build, ds, collator, epochs=3, stop_after=1)
    tel = e1.filters[0].telemetry()
    assert tel["switch"] is not None and tel["skipped"]["meta_predictor_stage2"] > 0
    assert tel["switch"]["examples_seen"] < len(ds), "stage 2 (and the guard) were active when the run stopped"
    g = tel["guard"]
    assert g["lowered"] > 0 and g["raised"] > 0 and g["paused"] > 0 and tel["guard_let_through"] > 0
    assert e3.counts.as_dict() == e1.counts.as_dict()
    assert e3.skipped() == e1.skipped()
    assert_same_params(m1, m3)
    t1, t3 = e1.filters[0].telemetry(), e3.filters[0].telemetry()
    for k in ("switch", "skipped", "explored", "history", "seen_per_stage", "guard", "guard_let_through",
              "seen_stage2_paused", "switch_rule"):
        assert t1[k] == t3[k], k
    assert e1.filters[1].telemetry() == e3.filters[1].telemetry()


def test_methods_plan_from_the_context():
    ctx = PlanContext(ids=np.arange(1000), labels=None, seed=7, task="classification", batch_size=8, epochs=2,
                      model=make_tiny_bert())
    plan = build_method("multistage").plan(ctx)
    meta, lt = plan.filters
    assert isinstance(meta, MetaPredictor) and isinstance(lt, LossThreshold)
    assert meta.stage == "pre_forward" and lt.stage == "post_forward" and meta.threshold is lt
    assert lt.warmup_examples == 100 and lt.window == 128 and lt.tau_mode == "frozen"
    assert plan.info == {"warmup_examples": 100, "chance_loss": None, "vocab_size": infer_vocab_size(ctx.model)}
    assert meta.vocab == ctx.model.config.vocab_size and meta.seed == 7
    (only,) = build_method("loss_threshold", {"warmup_fraction": 0.25}).plan(ctx).filters
    assert only.warmup_examples == 250
    assert build_method("loss_threshold", {"tau": 0.5}).plan(ctx).filters[0].warmed_up


def test_multi_class_tasks_work(tmp_path):
    texts = [f"{w} film {i}" for i, w in enumerate(["red", "green", "blue"] * 20)]
    labels = [i % 3 for i in range(60)]
    model, tok = tiny_model("tiny-bert", num_labels=3, seed=0)
    ds = TokenizedSplit(text_split(texts, labels), tok, max_length=32)
    ctx = PlanContext(ids=np.asarray(ds.ids), labels=ds.labels, seed=0, task="classification", batch_size=8,
                      epochs=2, model=model)
    filters = MultistageMethod(warmup_fraction=0.2, window=16, switch_window=2, meta_loss_threshold=5.0).plan(ctx).filters
    engine = StepEngine(task="classification", batch_size=8, filters=filters)
    fit(model, ds, engine=engine, collator=Collator(pad_token_id=0), epochs=2, lr=1e-3)
    c = engine.counts
    assert c.examples_backpropagated + sum(engine.skipped().values()) == c.examples_seen == 120
    assert filters[0].telemetry()["fitted"] > 0


def test_trainer_mixin_runs_multistage_and_counts_add_up(tmp_path):
    pytest.importorskip("transformers")
    from transformers import TrainingArguments

    from datadiet.integrations.hf import DataDietTrainer

    texts, labels, _ = flipped_keyword_data(64, hard_frac=0.2, seed=1)
    model, tok = tiny_model("tiny-bert", num_labels=2, seed=0)
    ds = TokenizedSplit(text_split(texts, labels, start=100), tok, max_length=32)
    ctx = PlanContext(ids=np.asarray(ds.ids), labels=ds.labels, seed=0, task="classification", batch_size=8,
                      epochs=3, model=model)
    filters = MultistageMethod(warmup_fraction=0.25, window=16, switch_window=2, meta_loss_threshold=5.0,
                               explore_fraction=0.2, guard=False).plan(ctx).filters  # the unguarded stage 2
    args = TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, num_train_epochs=3, learning_rate=1e-3,
        lr_scheduler_type="constant", report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True,
        seed=0, dataloader_num_workers=0, disable_tqdm=True,
    )
    trainer = DataDietTrainer(model=model, args=args, train_dataset=ds, data_collator=Collator(pad_token_id=0),
                              processing_class=tok, filters=filters)
    counter = ForwardCounter(model)
    trainer.train()
    e = trainer.datadiet_engine
    c = e.counts
    assert c.examples_seen == 3 * 64
    assert c.examples_backpropagated + sum(e.skipped().values()) == c.examples_seen
    assert e.buffered == 0
    assert c.examples_forwarded == c.examples_forwarded_nograd + c.examples_forwarded_grad == counter.nograd + counter.grad
    meta, lt = filters
    assert lt.warmup_end["examples"] == 16  # two batches, no scoring forward
    assert c.examples_forwarded_nograd == c.examples_seen - 16 - e.skipped().get("meta_predictor", 0)
    assert meta.telemetry()["switch"] is not None and e.skipped().get("loss_threshold", 0) > 0
    assert 0 < c.optimizer_steps <= trainer.state.global_step + 1


@pytest.mark.parametrize(("name", "params", "match"), [
    ("loss_threshold", {"warmup_fraction": 1.5}, "warmup_fraction must be <= 1"),
    ("loss_threshold", {"warmup_fraction": 0.0}, "warmup_fraction must be > 0 when tau is not given"),
    ("loss_threshold", {"window": 0}, "window must be >= 1"),
    ("loss_threshold", {"tau_mode": "sliding"}, "tau_mode must be one of 'frozen', 'moving'"),
    ("loss_threshold", {"tau": -0.1}, "tau must be >= 0"),
    ("loss_threshold", {"tau": 0.2, "tau_mode": "moving"}, "tau_mode='moving' needs tau=None"),
    ("loss_threshold", {"chance_guard": 1}, "chance_guard must be true or false"),
    ("multistage", {"explore_fraction": 1.2}, "explore_fraction must be <= 1"),
    ("multistage", {"decision_threshold": 1.0}, "decision_threshold must be < 1"),
    ("multistage", {"meta_loss_threshold": 0}, "meta_loss_threshold must be > 0"),
    ("multistage", {"switch_window": 0}, "switch_window must be >= 1"),
    ("multistage", {"alpha": 0.0}, "alpha must be > 0"),
    ("multistage", {"feature_space": "all"}, "feature_space must be one of 'seen', 'vocabulary'"),
    ("multistage", {"meta_min_accuracy": 2}, "meta_min_accuracy must be <= 1"),
    ("multistage", {"fit_during_warmup": "yes"}, "fit_during_warmup must be true or false"),
    ("multistage", {"vocab_size": 0}, "vocab_size must be >= 1"),
    ("multistage", {"predictor": "svm"}, "predictor must be one of 'naive_bayes', 'logistic'"),
    ("multistage", {"ngrams": 3}, "ngrams must be <= 2"),
    ("multistage", {"loss_memory": "yes"}, "loss_memory must be true or false"),
    ("multistage", {"lr": 0}, "lr must be > 0"),
    ("multistage", {"meta_skill_threshold": -1}, "meta_skill_threshold must be >= 0"),
    ("multistage", {"swich_window": 4}, "Did you mean 'switch_window'"),
])
def test_bad_parameters_give_clear_messages(name, params, match):
    with pytest.raises(ConfigError, match=match):
        build_method(name, params)


def test_bad_filter_arguments_give_clear_messages():
    with pytest.raises(ConfigError, match="warmup_examples must be >= 1 when tau is not given"):
        LossThreshold(warmup_examples=0)
    # left out, it is filled in by a front end (bind); used without one, the first trained batch says so
    lt = LossThreshold()
    view = BatchView(ids=torch.tensor([1]), input_ids=torch.tensor([[1, 2]]), attention_mask=None, labels=None)
    with pytest.raises(DataDietError, match="LossThreshold needs warmup_examples.*DataDietMixin"):
        lt.observe(view, torch.tensor([0.5]), trained=True)
    lt.bind(PlanContext(ids=np.arange(50), labels=None, seed=0, task="classification", batch_size=8, epochs=1))
    assert lt.warmup_examples == 5  # 10% of the first epoch, the paper's warm-up
    with pytest.raises(ConfigError, match="threshold must be the paired LossThreshold"):
        MetaPredictor(threshold=0.5)
    nb = BernoulliNaiveBayes(vocab_size=4)
    with pytest.raises(ValueError, match="token id 9 is outside the meta predictor's vocabulary of 4"):
        nb.partial_fit(torch.tensor([0]), torch.tensor([9]), torch.tensor([1]))
    grow = BernoulliNaiveBayes()  # no vocabulary given: grows with the ids seen
    grow.partial_fit(torch.tensor([0]), torch.tensor([9]), torch.tensor([1]))
    assert grow.vocab_size == 10
