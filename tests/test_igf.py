"""IGF (information gain filtration): IG pairs, the secondary learner, the filter, caches, the CLI."""

from __future__ import annotations

import copy
import itertools
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datadiet.bench.stats import wilcoxon_signed_rank
from datadiet.data.collate import Collator, LMContexts
from datadiet.core.engine import ID_KEY, StepEngine
from datadiet.core.filter import BatchView
from datadiet.errors import ConfigError, DataDietError
from datadiet.methods.igf import pairs as P
from datadiet.methods.igf.learner import LearnerArch, SecondaryLearner, load_learner, save_learner, train_learner
from datadiet.methods.igf.method import IGF, IGFFilter
from datadiet.loop import fit
from datadiet.core.method import PlanContext
from datadiet.models.tiny import tiny_model
from datadiet.methods.registry import build_method


def _gpt(seed=0):
    model, _ = tiny_model("tiny-gpt2", seed=seed)
    return model


def _tokens(n, T, seed=0, lo=6, hi=50):
    return torch.randint(lo, hi, (n, T), generator=torch.Generator().manual_seed(seed))


def _hand_ppl(model, tokens):
    with torch.no_grad():
        lg = model(input_ids=tokens).logits
        ce = F.cross_entropy(lg[:, :-1].reshape(-1, lg.shape[-1]).float(), tokens[:, 1:].reshape(-1))
    return math.exp(float(ce))


# ----------------------------------------------------------------------------- IG, exact and first order
def test_adam_first_step_equals_torch_adamw():
    m1 = _gpt()
    m2 = copy.deepcopy(m1)
    x = _tokens(1, 16)
    for m in (m1, m2):
        lg = m(input_ids=x).logits
        F.cross_entropy(lg[0, :-1], x[0, 1:]).backward()
    torch.optim.AdamW(m2.parameters(), lr=1e-3, weight_decay=0.1).step()
    P.adam_first_step_(P.trainable(m1), lr=1e-3, weight_decay=0.1)
    for a, b in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


def test_exact_ig_equals_the_perplexity_difference_by_hand():
    model = _gpt()
    x, obj = _tokens(1, 16, seed=1), _tokens(5, 8, seed=2)
    ig = P.exact_ig(model, x[0], obj, lr=1e-3, clip=3.0)
    # by hand: a deep copy, a fresh torch AdamW, one clipped step, the objective perplexity before and after
    ref = copy.deepcopy(model)
    opt = torch.optim.AdamW(ref.parameters(), lr=1e-3, weight_decay=0.0)
    lg = ref(input_ids=x).logits
    F.cross_entropy(lg[0, :-1], x[0, 1:]).backward()
    torch.nn.utils.clip_grad_norm_(list(ref.parameters()), 3.0)
    before = _hand_ppl(model, obj)
    opt.step()
    hand = before - _hand_ppl(ref, obj)
    assert abs(hand) > 1e-3  # a real change, far above float32 noise
    assert ig == pytest.approx(hand, rel=2e-3)


def test_weights_mode_and_grads_are_restored_exactly_after_every_pair():
    model = _gpt()
    model.train(False)
    saved = [p.detach().clone() for p in model.parameters()]
    ig, info = P.collect_ig(model, _tokens(4, 12).numpy(), _tokens(3, 8, seed=5).numpy(), lr=1e-3)
    assert np.all(ig != 0) and info["n"] == 4
    assert all(torch.equal(a, b) for a, b in zip(saved, model.parameters()))
    assert all(p.grad is None for p in model.parameters())
    assert model.training is False
    # and a second pass gives the same values (nothing leaked from one pair into the next)
    ig2, _ = P.collect_ig(model, _tokens(4, 12).numpy(), _tokens(3, 8, seed=5).numpy(), lr=1e-3)
    np.testing.assert_allclose(ig, ig2, rtol=1e-6)


def test_first_order_estimate_tracks_exact_ig_for_small_steps():
    model = _gpt()
    ctx, obj = _tokens(12, 12, seed=3).numpy(), _tokens(4, 8, seed=4).numpy()
    exact, _ = P.collect_ig(model, ctx, obj, lr=1e-5)
    first, _ = P.collect_ig(model, ctx, obj, lr=1e-5, estimate="first_order")
    assert np.corrcoef(exact, first)[0, 1] > 0.99
    np.testing.assert_allclose(first, exact, rtol=0.1, atol=1e-4 * np.abs(exact).max())


def test_objective_and_pairs_are_disjoint_by_document():
    docs = np.repeat(np.arange(30), 4)
    obj = P.choose_objective(docs, n_docs=8, seed=0)
    tr, va = P.pair_positions(docs, obj, n_pairs=200, val_fraction=0.2, seed=0)
    assert len(tr) + len(va) == 88  # every context outside the 8 objective documents
    assert not set(docs[tr]) & set(obj) and not set(docs[va]) & set(obj)
    assert not set(docs[tr]) & set(docs[va]) and len(set(docs[va])) == round(0.2 * 22)
    w = P.objective_windows(np.arange(120 * 10).reshape(120, 10), docs, obj, length=4, seed=0)
    assert w.shape == (8, 4) and all(int(row[0]) // 10 // 4 == d for row, d in zip(w, obj))  # from its document
    with pytest.raises(ValueError, match="objective_docs=30 leaves no document"):
        P.choose_objective(docs, n_docs=30, seed=0)
    with pytest.raises(ValueError, match="objective_length=11 is longer"):
        P.objective_windows(np.zeros((120, 10), dtype=np.int64), docs, obj, length=11, seed=0)


def test_zscore():
    z, mean, std = P.zscore(np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(z, [-1.2247449, 0.0, 1.2247449], rtol=1e-6)
    assert (mean, std) == pytest.approx((2.0, math.sqrt(2 / 3)))
    assert np.all(P.zscore(np.ones(3))[0] == 0)


# ----------------------------------------------------------------------------- the secondary learner
def test_learner_copies_the_embeddings_and_never_touches_the_lm():
    model = _gpt()  # GPT-2 ties its input embeddings to the output layer
    emb = model.get_input_embeddings().weight
    before = emb.detach().clone()
    q = SecondaryLearner.from_lm(model)
    assert q.embed.weight.data_ptr() != emb.data_ptr()
    torch.testing.assert_close(q.embed.weight, before)
    x = _tokens(40, 10).numpy()
    train_learner(q, x[:32], np.random.default_rng(0).normal(size=32), x[:0], np.zeros(0), epochs=3, lr=1e-2)
    assert torch.equal(emb, before) and not torch.equal(q.embed.weight, before)


def test_learner_learns_a_planted_signal_and_keeps_the_best_validation_epoch():
    rng = np.random.default_rng(0)
    x = rng.integers(6, 16, size=(300, 12))
    marked = rng.random(300) < 0.3
    x[marked, rng.integers(0, 12, size=int(marked.sum()))] = 60  # token 60 means "informative"
    y = np.where(marked, 1.5, -0.6) + rng.normal(scale=0.1, size=300)
    q = SecondaryLearner(LearnerArch(vocab_size=75, dim=16, channels=32, hidden=16))
    fit = train_learner(q, x[:240], y[:240], x[240:], y[240:], epochs=30, lr=3e-3, batch_size=32, seed=0)
    pred = q.predict(torch.as_tensor(x[240:])).numpy()
    assert fit.best_val_mse < 0.3 * fit.val_mse_at_init and fit.val_pearson > 0.9
    assert fit.best_val_mse == pytest.approx(min(h["val_mse"] for h in fit.history))
    assert fit.best_val_mse == pytest.approx(float(((pred - y[240:]) ** 2).mean()), rel=1e-5)  # best weights loaded
    assert pred[marked[240:]].min() > pred[~marked[240:]].max()


def test_learner_file_round_trip_and_errors(tmp_path):
    q = SecondaryLearner(LearnerArch(vocab_size=75, dim=8, channels=16, hidden=8))
    path = save_learner(q, tmp_path / "q.pt", meta={"model": "tiny-gpt2", "cost_s": 1.5})
    q2, meta = load_learner(path)
    x = _tokens(5, 9)
    torch.testing.assert_close(q.predict(x), q2.predict(x))
    assert meta == {"model": "tiny-gpt2", "cost_s": 1.5}
    with pytest.raises(DataDietError, match="does not exist; train one with `datadiet igf"):
        load_learner(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_text("not a learner")
    with pytest.raises(DataDietError, match="is not a readable IGF learner file"):
        load_learner(tmp_path / "junk.pt")
    torch.save({"format": "something/else"}, tmp_path / "other.pt")
    with pytest.raises(DataDietError, match="is not an IGF learner file"):
        load_learner(tmp_path / "other.pt")


# ----------------------------------------------------------------------------- the filter
class _Planted(SecondaryLearner):
    """Predicts a planted value per context from its first token (no learning)."""

    def __init__(self, table: dict[int, float]) -> None:
        super().__init__(LearnerArch(vocab_size=75, dim=2, channels=2, hidden=2))
        self.table = table

    def predict(self, input_ids, *, batch_size=256):
        return torch.tensor([self.table[int(t)] for t in input_ids[:, 0]], dtype=torch.float32)


def _pool(first_tokens, T=8, seed=0):
    n = len(first_tokens)
    x = _tokens(n, T, seed=seed).numpy()
    x[:, 0] = first_tokens
    return LMContexts(x, np.arange(n) + 1000, np.arange(n) // 2)


def _forward_counter(model):
    seen = []

    def hook(_m, args, kwargs):
        seen.extend(kwargs.get("input_ids", args[0] if args else None)[:, 0].tolist())

    model.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


def test_filter_keeps_contexts_above_the_threshold_and_never_runs_the_lm_on_the_rest():
    table = {10: 2.0, 11: 0.5, 12: -0.5, 13: -2.0}
    firsts = np.array([10, 11, 12, 13] * 16)
    pool = _pool(firsts)
    model = _gpt()
    forwarded = _forward_counter(model)
    f = IGFFilter(_Planted(table), batch_size=4, schedule="constant", threshold=0.0)
    eng = StepEngine(task="causal_lm", batch_size=4, filters=[f])
    fit(model, pool, engine=eng, collator=Collator(pad_token_id=0), epochs=1, lr=1e-3, fused_adamw=False)
    assert set(forwarded) == {10, 11}  # the LM saw only contexts predicted >= 0
    assert len(forwarded) == 32 == eng.counts.examples_backpropagated
    assert eng.counts.examples_forwarded_nograd == 0
    assert eng.skipped() == {"igf": 32}
    assert f.telemetry()["keep_rate"] == 0.5


def test_shifting_threshold_switches_at_the_configured_step():
    table = {10: 2.0, 11: 0.0, 12: -2.0}  # 10 passes +1; 11 passes only -1; 12 never
    firsts = np.array([10, 11, 11, 12] * 40)
    pool = _pool(firsts)
    model = _gpt()
    batches = []
    f = IGFFilter(_Planted(table), batch_size=4, schedule="shifting", threshold=1.0, threshold_after=-1.0,
                  switch_step=3)
    eng = StepEngine(task="causal_lm", batch_size=4, filters=[f])
    orig = eng.training_loss

    def spy(m, batch):
        batches.append(batch["input_ids"][:, 0].tolist())
        return orig(m, batch)

    eng.training_loss = spy
    fit(model, pool, engine=eng, collator=Collator(pad_token_id=0), epochs=1, lr=1e-3, fused_adamw=False, max_steps=8)
    assert len(batches) == 8
    assert all(set(b) == {10} for b in batches[:3])  # steps 0-2: threshold +1.0
    assert all(11 in b for b in batches[3:]) and all(12 not in b for b in batches)  # from step 3: -1.0
    t = f.telemetry()
    from datadiet.loop import epoch_order

    order = epoch_order(np.arange(len(firsts)), seed=0, epoch=0)
    twelfth = np.flatnonzero(firsts[order] == 10)[11] + 1  # contexts seen when the 12th 10 was kept
    assert t["seen_at_switch"] == twelfth and t["keep_rate_before_switch"] == 12 / twelfth


def test_pool_units_threshold_on_the_learners_own_spread(tmp_path, monkeypatch):
    monkeypatch.setenv("DATADIET_CACHE", str(tmp_path))
    pool, model = _doc_pool(), _gpt()
    plan = IGF(**SMALL, threshold_units="pool").plan(_ctx(pool, model))
    f = plan.filters[0]
    pred = f.learner.predict(torch.as_tensor(pool.input_ids)).numpy()
    assert (f.center, f.scale) == pytest.approx((pred.mean(), pred.std()), rel=1e-5)
    from datadiet.core.filter import BatchView

    view = BatchView(ids=torch.as_tensor(pool.ids), input_ids=torch.as_tensor(pool.input_ids), attention_mask=None,
                     labels=None)
    keep = f.decide(view, None).keep.numpy()  # threshold +1 in pool units: above mean + 1 std
    np.testing.assert_array_equal(keep, (pred - pred.mean()) / pred.std() >= 1.0)
    assert 0 < keep.sum() < len(keep)
    assert plan.info["igf_threshold_units"]["units"] == "pool"


def test_filter_state_round_trips():
    f = IGFFilter(_Planted({10: 2.0, 11: -2.0}), batch_size=2, schedule="shifting", switch_step=1)
    from datadiet.core.filter import BatchView

    ids = torch.tensor([[10, 1], [11, 1], [10, 1], [10, 1]])
    view = BatchView(ids=torch.arange(4), input_ids=ids, attention_mask=None, labels=None)
    f.decide(view, None)
    g = IGFFilter(_Planted({10: 2.0, 11: -2.0}), batch_size=2, schedule="shifting", switch_step=1)
    g.load_state_dict(json.loads(json.dumps(f.state_dict())))
    drop = lambda t: {k: v for k, v in t.items() if k != "learner_s"}  # noqa: E731 - wall-clock differs
    assert drop(g.telemetry()) == drop(f.telemetry())
    assert g.decide(view, None).keep.tolist() == f.decide(view, None).keep.tolist()


# ----------------------------------------------------------------------------- max_steps (equal-step comparisons)
def test_max_steps_equals_epoch_training_when_the_counts_agree():
    pool = _pool(np.full(24, 10))
    a, b = _gpt(), _gpt()
    col = Collator(pad_token_id=0)
    fit(a, pool, engine=StepEngine(task="causal_lm", batch_size=4), collator=col, epochs=2, lr=1e-3,
        fused_adamw=False, schedule_by="steps")
    r = fit(b, pool, engine=StepEngine(task="causal_lm", batch_size=4), collator=col, epochs=1, lr=1e-3,
            fused_adamw=False, max_steps=12)
    assert sum(e["optimizer_steps"] for e in r.epochs) == 12 and len(r.epochs) == 2
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_max_steps_stops_exactly_and_refuses_a_filter_that_skips_everything():
    pool = _pool(np.array([10, 13] * 10))
    f = IGFFilter(_Planted({10: 2.0, 13: -2.0}), batch_size=4, schedule="constant", threshold=0.0)
    eng = StepEngine(task="causal_lm", batch_size=4, filters=[f])
    fit(_gpt(), pool, engine=eng, collator=Collator(pad_token_id=0), lr=1e-3, fused_adamw=False, max_steps=4)
    assert eng.counts.optimizer_steps == 4 and eng.counts.examples_backpropagated == 16  # 3rd pass, no short batch
    never = IGFFilter(_Planted({10: -2.0, 13: -2.0}), batch_size=4, schedule="constant", threshold=0.0)
    with pytest.raises(DataDietError, match="a whole pass over the 20 training examples gave no optimizer step"):
        fit(_gpt(), pool, engine=StepEngine(task="causal_lm", batch_size=4, filters=[never]),
            collator=Collator(pad_token_id=0), lr=1e-3, fused_adamw=False, max_steps=2)


# ----------------------------------------------------------------------------- the method: caches, errors
def _ctx(pool, model, *, task="causal_lm"):
    return PlanContext(ids=pool.ids, labels=None, seed=0, task=task, batch_size=4, epochs=1, model=model,
                       train_dataset=pool, collator=Collator(pad_token_id=0))


def _doc_pool(n_docs=12, per_doc=4, T=10):
    x = _tokens(n_docs * per_doc, T, seed=9).numpy()
    return LMContexts(x, np.arange(len(x)) + 7, np.repeat(np.arange(n_docs), per_doc))


SMALL = dict(objective_docs=3, objective_length=6, n_pairs=24, val_fraction=0.25, learner_epochs=2,
             learner_lr=1e-3, learner_batch_size=8, pair_lr=1e-3)


def test_plan_caches_pairs_and_learner_and_invalidates_on_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("DATADIET_CACHE", str(tmp_path))
    calls = []
    real = P.collect_ig

    def counting(*a, **k):
        calls.append(k.get("estimate"))
        return real(*a, **k)

    monkeypatch.setattr("datadiet.methods.igf.method.collect_ig", counting)
    pool, model = _doc_pool(), _gpt()
    saved = [p.detach().clone() for p in model.parameters()]
    plan = IGF(**SMALL).plan(_ctx(pool, model))
    assert calls == ["exact"] and plan.info["selection_reused_s"] == 0.0
    info = plan.info["igf"]
    assert info["n_train_pairs"] + info["n_val_pairs"] == 24 and info["ig_std"] > 0
    assert all(torch.equal(a, b) for a, b in zip(saved, model.parameters()))  # the LM is untouched
    # the same settings: learner from the cache, its cost still counted
    plan2 = IGF(**SMALL).plan(_ctx(pool, model))
    assert calls == ["exact"] and plan2.info["igf_cost_s"] > 0
    assert plan2.info["selection_reused_s"] == pytest.approx(plan2.info["igf_cost_s"])
    x = torch.as_tensor(pool.input_ids)
    torch.testing.assert_close(plan.filters[0].learner.predict(x), plan2.filters[0].learner.predict(x))
    # a learner setting: pairs reused, learner retrained
    IGF(**{**SMALL, "learner_lr": 5e-4}).plan(_ctx(pool, model))
    assert calls == ["exact"]
    # a pair setting: pairs measured again
    IGF(**{**SMALL, "n_pairs": 20}).plan(_ctx(pool, model))
    IGF(**{**SMALL, "ig_estimate": "first_order"}).plan(_ctx(pool, model))
    assert calls == ["exact", "exact", "first_order"]
    # cache off: always measured
    IGF(**SMALL, cache=False).plan(_ctx(pool, model))
    assert len(calls) == 4


def test_plan_with_a_learner_file(tmp_path, monkeypatch):
    monkeypatch.setenv("DATADIET_CACHE", str(tmp_path / "c"))
    pool, model = _doc_pool(), _gpt()
    q = SecondaryLearner.from_lm(model)
    path = save_learner(q, tmp_path / "q.pt", meta={"model": "tiny-gpt2", "cost_s": 12.0})
    monkeypatch.setattr("datadiet.methods.igf.method.collect_ig", lambda *a, **k: pytest.fail("no pairs with a learner file"))
    plan = IGF(learner=str(path)).plan(_ctx(pool, model))
    assert plan.info["selection_reused_s"] == 12.0
    small = save_learner(SecondaryLearner(LearnerArch(vocab_size=10, dim=4)), tmp_path / "s.pt", meta={"model": "x"})
    with pytest.raises(DataDietError, match="vocabulary of 10 tokens .* this model has 75"):
        IGF(learner=str(small)).plan(_ctx(pool, model))


@pytest.mark.parametrize("params, msg", [
    ({"threshold_schedule": "linear"}, "threshold_schedule"),
    ({"n_pairs": 2}, "n_pairs"),
    ({"ig_estimate": "second_order"}, "ig_estimate"),
    ({"val_fraction": 1.0}, "val_fraction"),
    ({"learner_lr": 0}, "learner_lr"),
    ({"learner": "/no/such/learner.pt"}, "learner file '/no/such/learner.pt' does not exist"),
    ({"thresold": 1.0}, "has no parameter 'thresold'"),
])
def test_bad_parameters_are_refused_with_a_message(params, msg):
    with pytest.raises(ConfigError, match=msg):
        build_method("igf", params)


def test_classification_is_refused():
    with pytest.raises(DataDietError, match="igf filters causal-LM fine-tuning"):
        IGF().plan(_ctx(_doc_pool(), _gpt(), task="classification"))


# ----------------------------------------------------------------------------- end to end: train and the CLI
def _lm_csv(tmp_path, n_docs=24):
    words = "the quick brown fox jumps over a lazy dog while it rains on my green hat".split()
    rows = [f'"{" ".join(words[i % 7:] + words[:i % 7])} {" ".join(words[: i % 5 + 3])} {i}",doc{i}'
            for i in range(n_docs)]
    p = tmp_path / "notes.csv"
    p.write_text("text,doc\n" + "\n".join(rows) + "\n")
    return p


def test_train_and_cli(tmp_path, monkeypatch, capsys):
    from datadiet.cli.main import main

    monkeypatch.setenv("DATADIET_CACHE", str(tmp_path / "cache"))
    csv = _lm_csv(tmp_path)
    base = ["--set", f"data.name={csv}", "model.name=tiny-gpt2", "data.context_length=12", "data.max_test=3",
            "train.threads=1", "train.batch_size=4", "train.max_steps=5", "train.lr=1e-3"]
    params = ["method.params.objective_docs=3", "method.params.objective_length=8", "method.params.n_pairs=20",
              "method.params.learner_epochs=2", "method.params.learner_batch_size=8",
              "method.params.threshold=-10", "method.params.threshold_after=-10"]
    code = main(["train", "-q", "--out", str(tmp_path / "runs"), *base, "method.name=igf", *params, "run_name=igf"])
    assert code == 0, capsys.readouterr().err
    rec = json.loads((tmp_path / "runs" / "igf" / "record.json").read_text())
    assert rec["status"] == "finished" and rec["counts"]["optimizer_steps"] == 5
    assert rec["plan_info"]["igf"]["n_train_pairs"] > 0 and rec["timings"]["selection_s"] > 0
    # the CLI writes a learner file, and a run can use it
    out = tmp_path / "q.pt"
    code = main(["igf", "-q", *base, "-p", "objective_docs=3", "objective_length=8", "n_pairs=20", "learner_epochs=2",
                 "learner_batch_size=8", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and out.exists() and "learner file:" in text and "IG pairs:" in text
    code = main(["train", "-q", "--out", str(tmp_path / "runs"), *base, "method.name=igf",
                 f"method.params.learner={out}", "method.params.threshold=-10", "method.params.threshold_after=-10",
                 "run_name=igf2"])
    assert code == 0
    # a classification dataset is refused with a message, not a traceback
    code = main(["igf", "-q", "--set", "data.name=rotten_tomatoes", "model.name=tiny-bert", "data.max_train=20"])
    err = capsys.readouterr().err
    assert code != 0 and "causal-LM" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- the paired test
def _brute_wilcoxon(d):
    d = np.asarray([x for x in d if x != 0], dtype=float)
    ranks = np.argsort(np.argsort(np.abs(d))) + 1.0
    for v in np.unique(np.abs(d)):  # average ranks over ties
        ranks[np.abs(d) == v] = ranks[np.abs(d) == v].mean()
    w = ranks[d > 0].sum()
    all_w = [sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product([0, 1], repeat=len(d))]
    return w, np.mean([x <= w + 1e-9 for x in all_w]), np.mean([x >= w - 1e-9 for x in all_w])


@pytest.mark.parametrize("d", [[1.2, -0.5, 3.1, 2.2, 0.7, -1.1, 2.5, 0.3, 1.9, 1.0],
                               [1, 1, -1, 2, 2, 3, -3, 0, 5, 1.0], [-1, -2, -3, -4]])
def test_wilcoxon_exact_matches_enumeration(d):
    r = wilcoxon_signed_rank(d, np.zeros(len(d)))
    w, pl, pg = _brute_wilcoxon(d)
    assert r.w_plus == w and r.p_less == pytest.approx(pl) and r.p_greater == pytest.approx(pg)
    assert r.p_two_sided == pytest.approx(min(1.0, 2 * min(pl, pg)))
    with pytest.raises(ValueError, match="paired"):
        wilcoxon_signed_rank([1, 2], [1])


# ----------------------------------------------------------------------------- oracle and random predictors (issue 17)
def test_oracle_scores_every_pool_context_with_its_measured_ig_and_excludes_the_objective_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("DATADIET_CACHE", str(tmp_path))
    pool, model = _doc_pool(), _gpt()
    m = IGF(**SMALL, predictor="oracle", ig_estimate="first_order")
    ids, z, info, cost, reused = m.pool_scores(model=model, dataset=pool, model_name="gpt", seed=0)
    tokens, _, docs = np.asarray(pool.input_ids), pool.ids, np.asarray(pool.doc_ids)
    obj_docs = P.choose_objective(docs, n_docs=3, seed=0)
    rows, _ = P.objective_picks(10, docs, obj_docs, length=6, seed=0)
    objective = P.objective_windows(tokens, docs, obj_docs, length=6, seed=0)
    ig, _ = P.collect_ig(model, tokens, objective, estimate="first_order", lr=1e-3, clip=3.0)
    keep = np.ones(len(ids), dtype=bool)
    keep[rows] = False
    np.testing.assert_array_equal(ids, pool.ids)
    assert np.isneginf(z[~keep]).all() and info["n_objective_sources_excluded"] == 3
    np.testing.assert_allclose(z[keep], (ig[keep] - ig[keep].mean()) / ig[keep].std(), rtol=1e-9, atol=1e-9)
    assert reused == 0.0 and cost > 0
    # the second time from the cache, its cost counted as reused
    _, z2, _, cost2, reused2 = m.pool_scores(model=model, dataset=pool, model_name="gpt", seed=5)
    np.testing.assert_array_equal(z, z2)
    assert reused2 == cost2 == pytest.approx(cost)


def test_the_learners_pairs_reuse_the_oracles_pool_ig(tmp_path, monkeypatch):
    monkeypatch.setenv("DATADIET_CACHE", str(tmp_path))
    pool, model = _doc_pool(), _gpt()
    IGF(**SMALL, predictor="oracle", ig_estimate="first_order").plan(_ctx(pool, model))
    calls = []
    monkeypatch.setattr("datadiet.methods.igf.method.collect_ig", lambda *a, **k: calls.append(1))
    plan = IGF(**SMALL, ig_estimate="first_order").plan(_ctx(pool, model))  # no new IG measured
    assert calls == [] and plan.info["igf"]["n_train_pairs"] > 0 and plan.info["selection_reused_s"] > 0


def test_oracle_filter_keeps_exactly_the_top_contexts_by_id():
    pool = _pool(np.arange(40) % 70 + 5)
    z = np.linspace(-2, 2, 40)
    f = IGFFilter(None, batch_size=4, schedule="constant", threshold=1.0, table=(pool.ids[::-1], z[::-1]))
    eng = StepEngine(task="causal_lm", batch_size=4, filters=[f])
    fit(_gpt(), pool, engine=eng, collator=Collator(pad_token_id=0), epochs=1, lr=1e-3, fused_adamw=False)
    assert eng.counts.examples_backpropagated == int((z >= 1.0).sum()) == 10
    with pytest.raises(ValueError, match="exactly one of a learner or a table"):
        IGFFilter(None, batch_size=4)
    other = IGFFilter(None, batch_size=4, table=(np.array([1, 2]), np.array([0.0, 1.0])))
    view = BatchView(ids=torch.tensor([1, 3]), input_ids=torch.zeros(2, 4, dtype=torch.long), attention_mask=None,
                     labels=None)
    with pytest.raises(DataDietError, match=r"no entry for example ids \[3\]"):
        other.decide(view, None)


def test_random_predictor_is_a_seeded_normal_score_and_refuses_a_learner_file(tmp_path):
    pool, model = _doc_pool(), _gpt()
    a = IGF(predictor="random").pool_scores(model=model, dataset=pool, model_name="gpt", seed=1)[1]
    b = IGF(predictor="random").pool_scores(model=model, dataset=pool, model_name="gpt", seed=1)[1]
    c = IGF(predictor="random").pool_scores(model=model, dataset=pool, model_name="gpt", seed=2)[1]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and len(a) == len(pool)
    path = tmp_path / "q.pt"
    save_learner(SecondaryLearner(LearnerArch(vocab_size=75, dim=2)), path, meta={})
    with pytest.raises(ConfigError, match="does not use a learner file"):
        IGF(predictor="random", learner=str(path)).plan(_ctx(pool, model))


def test_fit_ridge_recovers_a_planted_linear_map_and_picks_the_penalty_on_validation():
    from datadiet.methods.igf.learner import fit_ridge

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 5)) * np.array([1.0, 10.0, 0.1, 3.0, 1.0]) + 4.0
    w_true = np.array([0.5, -0.02, 3.0, 0.0, 1.0])
    y = x @ w_true + 2.0
    w, b, alpha = fit_ridge(x[:200], y[:200], x[200:], y[200:])
    np.testing.assert_allclose(x[200:] @ w + b, y[200:], atol=0.05)
    assert alpha == 1e-2  # noiseless: the smallest penalty validates best
    noisy = y + rng.normal(scale=50.0, size=len(y))  # signal buried in noise: a large penalty wins
    assert fit_ridge(x[:200], noisy[:200], x[200:], noisy[200:])[2] >= 10.0


def test_hidden_ridge_predictor_ranks_the_pool_by_a_planted_ig(tmp_path, monkeypatch):
    from datadiet.methods.igf.learner import pool_hidden_states

    monkeypatch.setenv("DATADIET_CACHE", str(tmp_path))
    pool, model = _doc_pool(n_docs=30, per_doc=6), _gpt()
    hidden = pool_hidden_states(model, np.asarray(pool.input_ids))
    direction = np.random.default_rng(3).normal(size=hidden.shape[1])
    truth = hidden @ direction  # IG planted as a linear function of the LM's own view of each context
    by_row = {tuple(r): t for r, t in zip(np.asarray(pool.input_ids).tolist(), truth)}

    def planted(_model, contexts, _objective, **_k):
        return np.array([by_row[tuple(r)] for r in np.asarray(contexts).tolist()]), {"seconds": 1.0,
                                                                                 "base_objective_ppl": 9.0}

    monkeypatch.setattr("datadiet.methods.igf.method.collect_ig", planted)
    m = IGF(**{**SMALL, "n_pairs": 120}, predictor="hidden_ridge")
    name = type(model).__name__  # what plan() names a model without a name
    ids, z, info, cost, _ = m.pool_scores(model=model, dataset=pool, model_name=name, seed=0)
    np.testing.assert_array_equal(ids, pool.ids)
    assert np.corrcoef(z, truth)[0, 1] > 0.99 and info["val_pearson"] > 0.99
    assert abs(z.mean()) < 1e-9 and z.std() == pytest.approx(1.0) and cost >= 1.0
    plan = m.plan(_ctx(pool, model))  # the second time: the pool's scores from the cache, their cost counted
    assert plan.info["igf"] == {"predictor": "hidden_ridge", "from_cache": True} and plan.filters[0].learner is None
    assert plan.info["selection_reused_s"] == plan.info["igf_cost_s"] == pytest.approx(cost)
    ids2, z2, _i, _c, _r = m.pool_scores(model=model, dataset=pool, model_name=name, seed=0)
    np.testing.assert_array_equal(z2, z)


def test_table_filter_telemetry_stays_finite_with_never_kept_contexts():
    pool = _pool(np.arange(16) % 70 + 5)
    z = np.r_[np.full(4, -np.inf), np.linspace(-1, 1, 12)]
    f = IGFFilter(None, batch_size=4, schedule="constant", threshold=-5.0, table=(pool.ids, z))
    eng = StepEngine(task="causal_lm", batch_size=4, filters=[f])
    fit(_gpt(), pool, engine=eng, collator=Collator(pad_token_id=0), epochs=1, lr=1e-3, fused_adamw=False)
    t = f.telemetry()
    assert t["never_kept_seen"] == 4 and t["kept"] == 12 and math.isfinite(t["mean_prediction"])
    json.dumps(t, allow_nan=False)  # a run record stays valid JSON
