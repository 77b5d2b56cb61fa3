"""INGENIOUS as a method: embeddings (+ cache), planted clusters, seeds, re-selection, LR schedule, resume, CLI.

Tiny models built from configs, offline. The submodular math itself is tested in test_submodular.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import RecordingAdamW, cli_error, make_tiny_bert, planted_texts, resume_vs_uninterrupted
from datadiet.cli.main import main
from datadiet.config import load_config
from datadiet.core.engine import StepEngine
from datadiet.errors import ConfigError, DataDietError
from datadiet.functional.schedule import linear_warmup_decay
from datadiet.loop import fit
from datadiet.core.method import PlanContext
from datadiet.models.registry import LoadedModel
from datadiet.methods.registry import build_method
from datadiet.runner import load_data, run
from datadiet.core.selection import Selection
from datadiet.methods.ingenious import embeddings as emb_mod
from datadiet.methods.ingenious.embeddings import EmbeddingCache, example_embeddings, model_embeddings
from datadiet.methods.ingenious.method import Ingenious, IngeniousFilter, derive_seed
from datadiet.methods.ingenious.submodular import submodular_gains

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")
TINY_SET = ["data.max_train=48", "data.max_test=16", "train.bf16=false"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    # embedding caches and default output folders go to the test's own folder
    monkeypatch.setenv("DATADIET_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def tokenized(texts, labels=None, *, first_id: int = 100):
    from datadiet.data.collate import Collator, TokenizedSplit
    from datadiet.data.types import TextSplit
    from datadiet.models.tiny import char_tokenizer

    tok = char_tokenizer()
    labels = np.zeros(len(texts), dtype=np.int64) if labels is None else np.asarray(labels)
    ds = TokenizedSplit(TextSplit(ids=np.arange(first_id, first_id + len(texts)), texts=list(texts), labels=labels),
                        tok, max_length=48)
    return ds, Collator(pad_token_id=tok.pad_token_id), tok


def context(ds, col, tok, *, model=None, seed: int = 0, batch_size: int = 8) -> PlanContext:
    model = make_tiny_bert(0) if model is None else model
    return PlanContext(ids=np.asarray(ds.ids), labels=ds.labels, seed=seed, task="classification",
                       batch_size=batch_size, epochs=1, model=model, tokenizer=tok, model_name="tiny-bert",
                       pad_token_id=tok.pad_token_id or 0, train_dataset=ds, collator=col, max_length=128)


def clustered_texts(n_clusters: int = 6, per: int = 5, seed: int = 0):
    """Clusters of near-duplicate texts (one base string per cluster, over its own letters, plus a
    one-character variation per member), shuffled; returns (texts, cluster of each text)."""
    rng = np.random.default_rng(seed)
    letters = "abcdefghijklmnopqrstuvwx"
    texts, cluster = [], []
    for c in range(n_clusters):
        chars = letters[3 * c : 3 * c + 3]
        words = [chars * (1 + (c + w) % 3) for w in range(3 + c % 3)]
        base = " ".join(words)
        for m in range(per):
            texts.append(f"{base} {m}")
            cluster.append(c)
    perm = rng.permutation(len(texts))
    return [texts[i] for i in perm], np.asarray(cluster)[perm]


# ------------------------------------------------------------------------------------- planted truth
def test_planted_near_duplicates_one_representative_per_cluster_through_the_method():
    texts, cluster = clustered_texts(n_clusters=6, per=5)
    ds, col, tok = tokenized(texts)
    ctx = context(ds, col, tok)
    m = Ingenious(fraction=6 / 30, sampling="top_k", cache=False)
    sel, gains, info = m.select(ctx)
    assert sorted(cluster[sel.indices].tolist()) == list(range(6))  # one per cluster
    order = np.argsort(gains.rank)  # the greedy order (a single part)
    assert sorted(cluster[order[:6]].tolist()) == list(range(6))  # ... before any second member
    g = gains.gains[order]
    assert g[5] > 10 * g[6]  # then the gains collapse
    # the plan is a prune plan whose selection carries the gains as scores, ids and provenance
    plan = m.plan(ctx)
    assert plan.filters == [] and isinstance(plan.selection, Selection)
    s = plan.selection
    np.testing.assert_array_equal(s.indices, sel.indices)
    np.testing.assert_array_equal(s.ids, ds.ids[s.indices])
    np.testing.assert_array_equal(s.scores, gains.gains[s.indices])
    assert s.method == "ingenious" and s.params["objective"] == "facility_location" and s.params["seed"] == 0
    assert info["embedding"]["dim"] == 32 and info["embedding"]["cached"] is False
    assert plan.info["selection_reused_s"] == 0.0 and plan.info["ingenious"]["spent_s"] > 0
    # Taylor-softmax sampling weighs the first greedy picks (large gains) far above the duplicates
    sel2, _, _ = Ingenious(fraction=0.4, cache=False).select(ctx)
    assert len(sel2) == 12 and order[0] in sel2.indices


def test_selection_is_reproducible_under_a_seed():
    texts, _ = planted_texts(64)
    ds, col, tok = tokenized(texts)
    a = Ingenious(fraction=0.25, cache=False).plan(context(ds, col, tok, seed=3)).selection
    b = Ingenious(fraction=0.25, cache=False).plan(context(ds, col, tok, seed=3)).selection
    c = Ingenious(fraction=0.25, cache=False).plan(context(ds, col, tok, seed=4)).selection
    d = Ingenious(fraction=0.25, seed=3, cache=False).plan(context(ds, col, tok, seed=9)).selection
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.indices, d.indices)  # an explicit seed wins over the run's
    assert not np.array_equal(a.indices, c.indices)
    assert len(a) == 16 and a.params["sample_seed"] == derive_seed(3, 2, 0)
    for objective, kernel in (("graph_cut", "dense"), ("log_determinant", "dense"), ("facility_location", "knn")):
        s = Ingenious(fraction=0.25, objective=objective, kernel=kernel, knn=8, cache=False).plan(
            context(ds, col, tok)).selection
        assert len(s) == 16 and np.isfinite(s.scores).all()


def test_derived_seeds_are_distinct_streams():
    seeds = {derive_seed(0, stream, i) for stream in (1, 2) for i in range(50)}
    assert len(seeds) == 100 and all(0 <= s < 2**32 for s in seeds)


# ------------------------------------------------------------------------------------------- embeddings
def test_model_embeddings_are_mean_pooled_unit_rows_in_dataset_order():
    texts, _ = planted_texts(20)
    ds, col, _ = tokenized(texts)
    model = make_tiny_bert(0)
    model.train()
    e = model_embeddings(model, ds, collator=col, batch_size=3)
    assert model.training  # mode restored
    assert e.shape == (20, 32) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    # one example alone (no padding) gives the same vector as in its length-sorted batch
    with torch.no_grad():
        b = col([ds[7]])
        h = model.bert(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state[0].mean(0)
    np.testing.assert_allclose(e[7], (h / h.norm()).numpy(), atol=1e-5)
    first = model_embeddings(model, ds, collator=col, layer=0)
    assert not np.allclose(first, e)
    with pytest.raises(ConfigError, match=r"layer must be in \[-3, 2\]"):
        model_embeddings(model, ds, collator=col, layer=3)


def test_embedding_cache_hit_returns_identical_embeddings_and_the_original_cost(tmp_path, monkeypatch):
    texts, _ = planted_texts(24)
    ds, col, tok = tokenized(texts)
    model = make_tiny_bert(0)
    cache = EmbeddingCache(tmp_path / "emb")
    kw = dict(ids=ds.ids, model=model, dataset=ds, collator=col, model_name="tiny-bert", cache=cache)
    first = example_embeddings(**kw)
    assert not first.cached and first.cost_s > 0 and first.reused_s == 0
    assert len(list((tmp_path / "emb").glob("*.npz"))) == 1 and not list((tmp_path / "emb").glob("*.tmp*"))

    def boom(*a, **k):
        raise AssertionError("a cache hit must not run the model")

    with monkeypatch.context() as mp:
        mp.setattr(emb_mod, "model_embeddings", boom)
        second = example_embeddings(**kw)
    assert second.cached and second.cost_s == pytest.approx(first.cost_s) and second.reused_s == second.cost_s
    np.testing.assert_array_equal(second.vectors, first.vectors)
    # anything in the key is a miss: layer, max_length, other weights, other data
    assert not example_embeddings(**{**kw, "layer": 1}).cached
    assert not example_embeddings(**{**kw, "max_length": 7}).cached
    assert not example_embeddings(**{**kw, "model": make_tiny_bert(1)}).cached
    ds2, _, _ = tokenized(texts, first_id=500)
    assert not example_embeddings(**{**kw, "ids": ds2.ids, "dataset": ds2}).cached
    # the encoder path (a tiny encoder passed in) caches on ids + texts, and a hit never loads it
    enc = (make_tiny_bert(2).bert, tok)
    e1 = example_embeddings(ids=ds.ids, encoder="tiny-encoder", texts=texts, loaded=enc, cache=cache)
    e2 = example_embeddings(ids=ds.ids, encoder="tiny-encoder", texts=texts, cache=cache)  # no encoder given
    assert not e1.cached and e2.cached
    np.testing.assert_array_equal(e1.vectors, e2.vectors)
    assert not example_embeddings(ids=ds.ids, encoder="tiny-encoder", texts=texts[::-1], loaded=enc, cache=cache).cached
    # a damaged entry is recomputed, not trusted
    for p in (tmp_path / "emb").glob("*.npz"):
        p.write_bytes(b"junk")
    assert not example_embeddings(**kw).cached


def test_runner_counts_the_cached_embedding_cost_as_selection_time(tmp_path):
    args = ["model.name=tiny-bert", "model.max_length=24", "data.max_train=48", "data.max_test=16", "train.epochs=1",
            "train.batch_size=8", "train.bf16=false", "train.threads=1", "output_dir=runs",
            "method.name=ingenious", "method.params.fraction=0.25"]
    r1 = run(load_config(None, args + ["run_name=a"]))
    i1 = r1["plan_info"]["ingenious"]
    assert i1["embedding"]["cached"] is False and r1["n_train_used"] == 12
    assert r1["timings"]["selection_reused_s"] == 0 and r1["timings"]["selection_s"] >= i1["spent_s"]
    r2 = run(load_config(None, args + ["run_name=b"]))
    i2 = r2["plan_info"]["ingenious"]
    assert i2["embedding"]["cached"] is True
    assert r2["timings"]["selection_reused_s"] == pytest.approx(i1["embedding"]["cost_s"])
    assert r2["timings"]["selection_s"] >= i1["embedding"]["cost_s"]
    s1 = Selection.load(tmp_path / "runs" / "a" / "selection.json")
    s2 = Selection.load(tmp_path / "runs" / "b" / "selection.json")
    np.testing.assert_array_equal(s1.ids, s2.ids)
    assert s1.info["cost"]["cost_s"] > 0 and s1.scores is not None


def test_warm_start_embeds_with_a_trained_copy_and_leaves_the_run_model_alone():
    import copy

    from datadiet.runner import plan_context, prepare
    from datadiet.methods.data_diet.score_runs import TrainSettings, train_steps

    cfg = load_config(None, ["model.name=tiny-bert", "model.max_length=24", "data.max_train=48", "data.max_test=16",
                             "train.epochs=1", "train.batch_size=8", "train.bf16=false", "train.threads=1"])
    ds, lm, train, _test, collator, _ = prepare(cfg)
    ctx = plan_context(cfg, lm, train, collator, task=ds.task)
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    warm = Ingenious(fraction=0.5, warm_start_steps=3, cache=False)
    sel, _gains, info = warm.select(ctx)
    assert info["warm_start_examples"] == 3 * 8 and info["warm_start_s"] > 0 and len(sel) == 24
    for k, v in lm.model.state_dict().items():  # the run trains from the loaded weights
        assert torch.equal(v, before[k]), k
    # the embeddings are those of a copy trained for 3 steps with the warm-start seed stream
    ref = copy.deepcopy(lm.model)
    settings = TrainSettings.from_context(ctx)
    train_steps(ref, train, collator=collator, steps=3, settings=settings, seed=derive_seed(0, 3, 0))
    expect = model_embeddings(ref.eval(), train, collator=collator, batch_size=cfg.train.eval_batch_size)
    np.testing.assert_allclose(warm.embed(ctx).vectors, expect, atol=1e-6)
    cold = Ingenious(fraction=0.5, cache=False).embed(ctx).vectors
    assert not np.allclose(cold, expect, atol=1e-4)


# --------------------------------------------------------------------------------------- re-selection
class RecordingFilter(IngeniousFilter):
    """Records (steps taken, kept set) at every decision."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.decisions = []

    def decide(self, batch, losses):
        d = super().decide(batch, losses)
        self.decisions.append((self.steps, frozenset(self.kept.tolist())))
        return d


def resample_filter(ids, *, fraction=0.5, every=3, seed=0, cls=IngeniousFilter, sampling="taylor_softmax"):
    x = np.random.default_rng(seed).normal(size=(len(ids), 8)).astype(np.float32)
    g = submodular_gains(x, fraction=fraction, seed=derive_seed(seed, 1, 0))
    m = Ingenious(fraction=fraction, sampling=sampling)
    first = m.draw(g, ids, seed=seed)
    return cls(ids=ids, kept=first.ids, gains=g, fraction=fraction, every=every, seed=seed, sampling=sampling)


@pytest.mark.parametrize("schedule_by", ["examples", "steps"])
def test_reselection_changes_the_subset_at_the_right_steps_and_keeps_the_lr_schedule(schedule_by):
    n, bs, epochs, lr, every = 40, 8, 3, 1e-3, 3
    texts, labels = planted_texts(n)
    ds, col, _ = tokenized(texts, labels)
    f = resample_filter(ds.ids, every=every, cls=RecordingFilter)
    eng = StepEngine(task="classification", batch_size=bs, filters=[f])
    model = make_tiny_bert(0)
    opt = RecordingAdamW(model.parameters(), eng, lr=lr, weight_decay=0.0)
    res = fit(model, ds, engine=eng, collator=col, epochs=epochs, optimizer=opt, schedule="linear", warmup=0.1,
              schedule_by=schedule_by, seed=0)
    c = eng.counts
    steps = c.optimizer_steps
    # re-selected after steps 3, 6, 9, ... (when the next batch arrives), never at other steps
    at = [h["step"] for h in f.history]
    assert at == list(range(every, every * len(at) + 1, every)) and len(at) >= (steps - 2) // every
    assert all(h["changed"] > 0 and h["kept"] == 20 for h in f.history)
    for (s0, k0), (s1, k1) in zip(f.decisions, f.decisions[1:]):
        crossed = s1 // every > s0 // every
        assert (k0 != k1) == crossed, (s0, s1)
    # every example is counted: trained or skipped for reason "ingenious"
    assert c.examples_seen == epochs * n
    assert c.examples_backpropagated + eng.skipped()["ingenious"] == epochs * n
    assert f.telemetry()["pruned"] == eng.skipped()["ingenious"]
    # each epoch takes ceil(trained / batch) optimizer steps (full batches, one partial flush)
    for e in res.epochs:
        assert e["optimizer_steps"] == math.ceil(e["examples_backpropagated"] / bs)
    assert len(opt.trace) == steps
    if schedule_by == "examples":
        # every step uses the LR full training uses at the same point of the example stream, and the
        # last step is at progress 1: the schedule ends exactly where full training's ends
        for seen, got in opt.trace:
            assert got == pytest.approx(lr * linear_warmup_decay(seen / (epochs * n), warmup=0.1))
        assert opt.trace[-1] == (epochs * n, 0.0)
    else:
        # progress = steps / the 15 steps full training takes: a subset never finishes decaying
        # (documented: use schedule_by=examples, the default, with re-selection)
        # (the LR of step t is set at progress (t - 1) / planned steps, as in full training)
        assert opt.trace[-1][1] == pytest.approx(lr * linear_warmup_decay((steps - 1) / 15, warmup=0.1))
        assert opt.trace[-1][1] > 0.2 * lr


def test_fixed_subset_takes_exactly_the_steps_its_schedule_assumes():
    # without re-selection the loop trains on the selection's positions: the schedule's step count is exact
    n, bs, epochs, lr = 40, 8, 3, 1e-3
    texts, labels = planted_texts(n)
    ds, col, tok = tokenized(texts, labels)
    sel = Ingenious(fraction=0.5, cache=False).plan(context(ds, col, tok)).selection
    for schedule_by in ("examples", "steps"):
        eng = StepEngine(task="classification", batch_size=bs)
        model = make_tiny_bert(0)
        opt = RecordingAdamW(model.parameters(), eng, lr=lr, weight_decay=0.0)
        fit(model, ds, engine=eng, collator=col, epochs=epochs, optimizer=opt, positions=sel.indices,
            schedule_by=schedule_by, seed=0)
        planned = epochs * math.ceil(20 / bs)  # what fit's schedule assumes for these positions
        assert eng.counts.optimizer_steps == planned == len(opt.trace)
        last = 1.0 if schedule_by == "examples" else (planned - 1) / planned  # as for any full run
        assert opt.trace[-1][1] == pytest.approx(lr * linear_warmup_decay(last))


def test_keep_everything_filter_reproduces_plain_training_exactly():
    texts, labels = planted_texts(32)
    ds, col, _ = tokenized(texts, labels)
    a, b = make_tiny_bert(0), make_tiny_bert(0)
    fit(a, ds, engine=StepEngine(task="classification", batch_size=8), collator=col, epochs=2, seed=0)
    f = resample_filter(ds.ids, fraction=1.0, every=2)
    eng = StepEngine(task="classification", batch_size=8, filters=[f])
    fit(b, ds, engine=eng, collator=col, epochs=2, seed=0)
    assert len(f.history) >= 3 and eng.skipped() == {}
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize("reselect", ["resample", "recompute"])
def test_reselection_state_round_trips_resume_equals_uninterrupted(reselect):
    texts, labels = planted_texts(32)
    ds, col, tok = tokenized(texts, labels)

    def build():
        m = make_tiny_bert(0)
        plan = Ingenious(fraction=0.5, reselect_every=3, reselect=reselect, cache=False).plan(context(ds, col, tok, model=m))
        eng = StepEngine(task="classification", batch_size=8, filters=plan.filters)
        return m, eng, torch.optim.AdamW(m.parameters(), lr=1e-3)

    (m1, e1), (m2, e2) = resume_vs_uninterrupted(build, ds, col, epochs=4, stop_after=2)
    for pa, pb in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(pa, pb)
    assert e1.counts.as_dict() == e2.counts.as_dict() and e1.skipped() == e2.skipped()
    f1, f2 = e1.filters[0], e2.filters[0]
    assert torch.equal(f1.kept, f2.kept)
    assert [h["step"] for h in f1.history] == [h["step"] for h in f2.history]
    assert [h["step"] for h in f1.history if h["step"] > 4] != []  # re-selections happened after the resume point
    assert f2.telemetry()["embedding_forwards"] == (32 * len(f2.history) if reselect == "recompute" else 0)


def test_reselection_through_the_runner_records_costs_and_counts(tmp_path):
    rec = run(load_config(None, [
        "model.name=tiny-bert", "model.max_length=24", "data.max_train=48", "data.max_test=16", "train.epochs=2",
        "train.batch_size=8", "train.bf16=false", "train.threads=1", "output_dir=runs", "method.name=ingenious",
        "method.params.fraction=0.5", "method.params.reselect_every=2", "method.params.reselect=recompute",
        "method.params.cache=false"]))
    c = rec["counts"]
    t = rec["filters"]["IngeniousFilter"]
    assert rec["n_train_used"] == 48 and c["examples_seen"] == 96
    assert c["examples_backpropagated"] + c["skipped"]["ingenious"] == 96 and c["examples_forwarded_nograd"] == 0
    assert t["reselected_at_steps"][:2] == [2, 4] and t["selection_s"] > 0
    assert t["embedding_forwards"] == 48 * len(t["reselected_at_steps"])
    assert rec["plan_info"]["ingenious"]["initial_selection"]["n_selected"] == 24
    assert rec["plan_info"]["ingenious"]["cost_s"] > 0 and rec["method"]["mechanism"] == "prune"


def test_reselection_on_a_causal_lm_at_equal_steps(tmp_path):
    # continued pre-training: contexts of a text corpus, a fixed step budget, a new subset every 2 steps
    words = "the quick brown fox jumps over a lazy dog while it rains on my green hat".split()
    rows = [f'"{" ".join(words[i % 7:] + words[:i % 7])} {" ".join(words[: i % 5 + 3])} {i}",doc{i}' for i in range(24)]
    csv = tmp_path / "notes.csv"
    csv.write_text("text,doc\n" + "\n".join(rows) + "\n")
    rec = run(load_config(None, [
        f"data.name={csv}", "model.name=tiny-gpt2", "data.context_length=12", "data.max_test=3", "train.max_steps=6",
        "train.batch_size=4", "train.bf16=false", "train.threads=1", "output_dir=runs", "method.name=ingenious",
        "method.params.fraction=0.5", "method.params.reselect_every=2", "method.params.cache=false"]))
    t = rec["filters"]["IngeniousFilter"]
    assert rec["counts"]["optimizer_steps"] == 6 and rec["counts"]["examples_backpropagated"] == 24
    assert t["reselected_at_steps"] == [2, 4] and abs(t["current_size"] - rec["n_train_used"] / 2) <= 1
    assert rec["status"] == "finished" and rec["value"] > 1  # held-out perplexity


# ------------------------------------------------------------------------------------------ validation
def test_method_validates_early_with_messages_that_name_the_fix():
    cases = [
        ({"objective": "facility"}, "objective must be one of"),
        ({"sampling": "softmax"}, "sampling must be one of"),
        ({"embedding": "bert"}, "embedding must be one of"),
        ({"fraction": 0}, "fraction must be > 0.0"),
        ({"knn": 0}, "knn must be >= 1"),
        ({"reselect_every": 0}, "reselect_every must be >= 1"),
        ({"kernel": "knn", "objective": "log_determinant"}, "needs kernel='dense'"),
        ({"embedding": "minilm", "reselect": "recompute", "reselect_every": 5}, "set embedding=model or reselect=resample"),
        ({"sampling": "top_k", "reselect_every": 5}, "would never change it"),
        ({"layer": 1.5}, "layer must be an integer"),
        ({"cache": "yes"}, "cache must be true or false"),
        ({"warm_start_steps": -1}, "warm_start_steps must be >= 0"),
        ({"embedding": "minilm", "warm_start_steps": 5}, "set embedding=model or warm_start_steps=0"),
    ]
    for params, needle in cases:
        with pytest.raises(ConfigError, match=None) as ei:
            build_method("ingenious", params)
        assert needle in str(ei.value), (params, str(ei.value))
    with pytest.raises(ConfigError, match="Did you mean 'fraction'"):
        build_method("ingenious", {"fracton": 0.3})
    # these combinations are fine: top_k with recompute, recompute without re-selection is ignored
    build_method("ingenious", {"sampling": "top_k", "reselect": "recompute", "reselect_every": 5})
    build_method("ingenious", {"embedding": "minilm", "reselect": "recompute"})


def test_minilm_embedding_needs_the_texts():
    texts, _ = planted_texts(8)
    ds, col, tok = tokenized(texts)
    with pytest.raises(DataDietError, match="use embedding=model"):
        Ingenious(embedding="minilm", cache=False).plan(context(ds, col, tok))


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_select_writes_a_selection_that_trains_and_plain_hf_select_takes(tmp_path, capsys):
    out = tmp_path / "sel.json"
    assert main(["select", "-q", "-c", TINY, "--set", *TINY_SET, "--method", "ingenious", "-p", "fraction=0.25",
                 "objective=facility_location", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ingenious: kept 12 of 48 examples" in text and "selection cost:" in text and str(out) in text
    sel = Selection.load(out)
    assert sel.method == "ingenious" and len(sel) == 12 and sel.n_total == 48
    assert sel.params["fraction"] == 0.25 and sel.params["sampling"] == "taylor_softmax" and sel.params["seed"] == 0
    np.testing.assert_array_equal(sel.scores, sel.gains)
    assert np.all(sel.scores >= 0)
    # again: embeddings from the cache, same subset, the earlier cost reported
    assert main(["select", "-q", "-c", TINY, "--set", *TINY_SET, "--method", "ingenious", "-p", "fraction=0.25",
                 "--out", str(tmp_path / "again.json")]) == 0
    assert "paid earlier, taken from the cache" in capsys.readouterr().out
    np.testing.assert_array_equal(Selection.load(tmp_path / "again.json").ids, sel.ids)
    # train on it through the config's data.selection
    assert main(["train", "-q", "-c", TINY, "--out", str(tmp_path / "runs"), "--set", *TINY_SET,
                 f"data.selection={out}"]) == 0
    assert "train set: 12 examples" in capsys.readouterr().out
    # a plain Hugging Face dataset of the same training split takes the indices as they are
    datasets = pytest.importorskip("datasets")
    train = load_data(load_config(TINY, TINY_SET)).train
    hf = datasets.Dataset.from_dict({"text": train.texts, "label": train.labels.tolist(),
                                     "example_id": train.ids.tolist()})
    assert list(hf.select(sel.indices)["example_id"]) == sel.ids.tolist()
    # the method in the config is used when --method is not given
    assert main(["select", "-q", "-c", TINY, "--set", *TINY_SET, "method.name=ingenious", "method.params.fraction=0.5",
                 "--out", str(tmp_path / "cfg.json")]) == 0
    assert len(Selection.load(tmp_path / "cfg.json")) == 24


def test_cli_select_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    scores = tmp_path / "s.json"
    assert main(["score", "-q", "-c", TINY, "--set", *TINY_SET, "--seeds", "1", "--score-steps", "0",
                 "--out", str(scores)]) == 0
    capsys.readouterr()
    sel = ["select", "-c", TINY, "--set", *TINY_SET, "--method", "ingenious"]
    cases = [
        (sel + ["-p", "objective=facility"], "objective must be one of"),
        (sel + ["-p", "fraction=0"], "fraction must be > 0.0"),
        (sel + ["-p", "fracton=0.3"], "Did you mean 'fraction'"),
        (sel + ["-p", "reselect_every=10"], "a selection file cannot hold"),
        (sel + ["-p", "layer=7"], "layer must be in [-3, 2]"),
        (sel + ["-p", "kernel=knn", "objective=log_determinant"], "needs kernel='dense'"),
        (["select", "--scores", str(scores), "--method", "ingenious"], "cannot select from a scores file"),
        (["select", "--method", "ingenious"], "give --scores FILE"),
        (["train", "-c", TINY, "--set", "method.name=ingenious", "method.params.sampling=best"],
         "sampling must be one of"),
    ]
    for argv, needle in cases:
        line = cli_error(capsys, argv)
        assert needle in line, (argv, line)


# ------------------------------------------------------------------------------------------- slow
@pytest.mark.slow
def test_minilm_model_embedding_equals_the_minilm_sentence_encoder():
    # embedding=model on the MiniLM classifier is the MiniLM sentence embedding (mean-pooled last
    # layer), which is why embedding=model is the default (docs/methods/ingenious.md)
    cfg = load_config(None, ["model.name=minilm", "model.max_length=64", "data.max_train=64", "train.bf16=false",
                             "train.device=cpu"])
    from datadiet.runner import plan_context, prepare

    ds, lm, train, _test, col, _ = prepare(cfg)
    ctx = plan_context(cfg, lm, train, col, task=ds.task)
    a = Ingenious(embedding="model", cache=False).embed(ctx)
    b = Ingenious(embedding="minilm", cache=False).embed(ctx)
    np.testing.assert_allclose(a.vectors, b.vectors, atol=2e-4)
