"""Data diet (EL2N / GraNd pruning) and its dynamic variant: scores, selectors, cache, filter, CLI.

Tiny models built from configs, offline; every test runs in well under a few seconds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import RecordingAdamW, cli_error, make_tiny_bert, planted_texts, resume_vs_uninterrupted
from datadiet.cli.main import main
from datadiet.config import load_config
from datadiet.core.engine import StepEngine
from datadiet.errors import ConfigError, DataDietError
from datadiet.functional.schedule import linear_warmup_decay
from datadiet.loop import fit
from datadiet.methods.data_diet.dynamic import DataDietDynamic, DataDietDynamicMethod, el2n_score_fn
from datadiet.methods.registry import build_method
from datadiet.runner import run
from datadiet import Selection, random_subset
from datadiet.methods.data_diet.method import DataDiet, allocate, select_by_scores, select_positions, subset_sizes
from datadiet.methods.data_diet.score_runs import (
    ScoreCache, ScoreResult, TrainSettings, compute_scores, data_fingerprint, steps_for_epochs, train_steps,
)
from datadiet.methods.data_diet.scores import el2n, find_head, forward_scores, grand_head, grand_scores, score_dataset

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    # Score caches and default output folders go to the test's own folder.
    monkeypatch.setenv("DATADIET_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def planted(n: int = 64, flips=(), seed: int = 0):
    """A tokenized planted split (ids 100..) with the labels at ``flips`` flipped, and its collator."""
    from datadiet.data.collate import Collator, TokenizedSplit
    from datadiet.data.types import TextSplit
    from datadiet.models.tiny import char_tokenizer

    texts, labels = planted_texts(n, seed)
    labels = labels.copy()
    flips = np.asarray(list(flips), dtype=np.int64)
    labels[flips] = 1 - labels[flips]
    tok = char_tokenizer()
    ds = TokenizedSplit(TextSplit(ids=np.arange(100, 100 + n), texts=texts, labels=labels), tok, max_length=32)
    return ds, Collator(pad_token_id=tok.pad_token_id)


def tiny(seed: int) -> torch.nn.Module:
    return make_tiny_bert(seed)


SETTINGS = TrainSettings(batch_size=16, lr=1e-3, weight_decay=0.0, epochs=1, schedule="constant")


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """P(score of a positive > score of a negative), ties count half."""
    m = np.zeros(len(scores), dtype=bool)
    m[positives] = True
    a, b = scores[m][:, None], scores[~m][None, :]
    return float((a > b).mean() + 0.5 * (a == b).mean())


# ----------------------------------------------------------------------------------- the scores
def test_el2n_and_head_grand_equal_hand_computations():
    ds, col = planted(12)
    model = tiny(0).eval()
    batch = col([ds[i] for i in range(12)])
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in batch}
    y = batch["labels"]
    # the head our BERT classifier uses: the final Linear, fed by the pooler's dense + tanh
    assert find_head(model, 2) is model.classifier
    with torch.no_grad():
        logits = model(**inputs).logits
        h = model.bert(**inputs).pooler_output
    p = torch.softmax(logits, -1).numpy()
    onehot = np.eye(2)[y.numpy()]
    hand_el2n = np.sqrt(((p - onehot) ** 2).sum(1))
    hand_head = []
    for i in range(12):  # autograd on the head alone, one example at a time
        w, b = model.classifier.weight, model.classifier.bias
        loss = F.cross_entropy((h[i : i + 1] @ w.T + b), y[i : i + 1])
        gw, gb = torch.autograd.grad(loss, [w, b])
        hand_head.append(float(torch.sqrt(gw.pow(2).sum() + gb.pow(2).sum())))
    got = forward_scores(model, ds, collator=col, batch_size=5)
    np.testing.assert_allclose(got["el2n"], hand_el2n, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["grand_head"], hand_head, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(el2n(logits, y).numpy(), hand_el2n, rtol=1e-5)
    np.testing.assert_allclose(grand_head(logits, y, h, bias=False).numpy(),
                               hand_el2n * np.linalg.norm(h.numpy(), axis=1), rtol=1e-5)
    assert model.training is False  # mode restored


def test_head_grand_refused_when_the_last_linear_is_not_the_logits():
    class Scaled(torch.nn.Module):  # logits = 2 * classifier output: the closed form would be wrong
        def __init__(self):
            super().__init__()
            self.inner = tiny(0)
            self.config = self.inner.config

        def forward(self, **kw):
            out = self.inner(**kw)
            out.logits = out.logits * 2
            return out

    ds, col = planted(8)
    res = forward_scores(Scaled(), ds, collator=col)
    assert "grand_head" not in res and res["el2n"].shape == (8,)
    with pytest.raises(DataDietError, match="use score=el2n or score=grand"):
        score_dataset(Scaled(), ds, kind="grand_head", collator=col)


def _grand_by_hand(model, ds, col):
    out = []
    for i in range(len(ds)):
        model.zero_grad()
        b = col([ds[i]])
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        F.cross_entropy(logits, b["labels"]).backward()
        out.append(math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters() if p.grad is not None)))
    model.zero_grad()
    return np.asarray(out)


def test_full_grand_with_vmap_equals_a_per_example_autograd_loop():
    ds, col = planted(10)  # varied lengths: the vmap chunks are padded, each example sees only its tokens
    model = tiny(1).eval()
    ref = _grand_by_hand(model, ds, col)
    got, impl = grand_scores(model, ds, collator=col, chunk_size=4)
    assert impl == "vmap"
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)
    loop, impl = grand_scores(model, ds, collator=col, implementation="loop")
    assert impl == "loop"
    np.testing.assert_allclose(loop, ref, rtol=1e-5, atol=1e-7)


def test_full_grand_falls_back_to_the_loop_when_vmap_cannot_run():
    class Branchy(torch.nn.Module):  # data-dependent control flow: vmap refuses it
        def __init__(self):
            super().__init__()
            self.inner = tiny(2)
            self.config = self.inner.config

        def forward(self, input_ids, **kw):
            if bool(input_ids.sum() > 0):
                return self.inner(input_ids=input_ids, **kw)
            raise AssertionError

    ds, col = planted(6)
    model = Branchy().eval()
    got, impl = grand_scores(model, ds, collator=col, chunk_size=3)
    assert impl == "loop"
    np.testing.assert_allclose(got, _grand_by_hand(model.inner, ds, col), rtol=1e-5, atol=1e-7)


def test_scores_are_averaged_exactly_over_independent_runs():
    ds, col = planted(20)
    res = compute_scores(kind="el2n", seeds=[3, 4, 5], steps=2, build_model=tiny, dataset=ds, collator=col,
                         settings=SETTINGS, labels=ds.labels)
    assert res.per_seed.shape == (3, 20) and res.seeds == (3, 4, 5)
    np.testing.assert_array_equal(res.scores, res.per_seed.mean(axis=0))
    for j, s in enumerate((3, 4, 5)):  # each row is its own run: fresh model from its seed, trained, scored
        m = tiny(s)
        train_steps(m, ds, collator=col, steps=2, settings=SETTINGS, seed=s)
        np.testing.assert_allclose(res.per_seed[j], forward_scores(m, ds, collator=col)["el2n"], rtol=1e-6)
    assert not np.allclose(res.per_seed[0], res.per_seed[1])  # independent runs differ
    assert res.cost_s > 0 and res.cached == (False, False, False)
    np.testing.assert_array_equal(res.ids, np.arange(100, 120))


def test_a_scoring_run_is_the_start_of_an_ordinary_run():
    ds, col = planted(40)
    st = TrainSettings(batch_size=16, lr=1e-3, weight_decay=0.01, epochs=2, schedule="linear", warmup=0.1)
    a = tiny(0)
    steps = steps_for_epochs(2.0, n=40, batch_size=16)
    assert steps == 6
    train_steps(a, ds, collator=col, steps=steps, settings=st, seed=7)
    b = tiny(0)
    fit(b, ds, engine=StepEngine(task="classification", batch_size=16), collator=col, epochs=2, lr=1e-3,
        weight_decay=0.01, warmup=0.1, schedule="linear", seed=7)
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(pa, pb), n
    assert steps_for_epochs(0.5, n=40, batch_size=16) == 2 and steps_for_epochs(0, n=40, batch_size=16) == 0


def test_stop_after_steps_is_the_first_steps_of_the_run():
    """fit(stop_after_steps=k): the run's own first k steps (data order, LR, the partial batch at an
    epoch's end), unlike max_steps (LR horizon k, kept rows carried over); train_steps is exactly it."""
    ds, col = planted(40)  # batch 16: steps of 16, 16, 8 rows per epoch

    def go(record=True, **kw):
        m = tiny(0)
        eng = StepEngine(task="classification", batch_size=16)
        opt = RecordingAdamW(m.parameters(), eng, lr=1e-3, weight_decay=0.01) if record else None
        res = fit(m, ds, engine=eng, collator=col, epochs=3, optimizer=opt, lr=1e-3, weight_decay=0.01,
                  schedule="linear", warmup=0.1, seed=7, **kw)
        return m, eng, opt, res

    _, full_eng, full_opt, full = go()
    assert full_eng.counts.optimizer_steps == 9
    for k in (1, 3, 5, 9):
        m, eng, opt, res = go(stop_after_steps=k)
        assert eng.counts.optimizer_steps == k and res.losses == full.losses[:k] and opt.trace == full_opt.trace[:k]
        assert eng.counts.examples_backpropagated == [16, 32, 40][(k - 1) % 3] + 40 * ((k - 1) // 3)
        st = TrainSettings(batch_size=16, lr=1e-3, weight_decay=0.01, epochs=3, schedule="linear", warmup=0.1)
        ref, m = tiny(0), go(record=False, stop_after_steps=k)[0]  # fit's own optimizer, as train_steps uses
        assert train_steps(ref, ds, collator=col, steps=k, settings=st, seed=7) == eng.counts.examples_backpropagated
        for (n, pa), pb in zip(ref.named_parameters(), m.parameters()):
            assert torch.equal(pa, pb), (k, n)
    # past the run's end: more passes, the horizon stretched to the steps taken (LR reaches 0 at the end)
    _, eng, opt, res = go(stop_after_steps=11)
    assert eng.counts.optimizer_steps == 11 and eng.counts.examples_backpropagated == 3 * 40 + 2 * 16
    assert opt.trace[:9] != full_opt.trace and opt.trace[-1][1] == pytest.approx(
        1e-3 * linear_warmup_decay(opt.trace[-1][0] / (3 * 40 + 2 * 16), warmup=0.1, kind="linear"))
    # max_steps is another thing: 8 steps, horizon 8, the short batch of each epoch carried over
    _, eng, _, _ = go(max_steps=8)
    assert eng.counts.optimizer_steps == 8 and eng.counts.examples_backpropagated == 8 * 16
    with pytest.raises(ValueError, match="not both"):
        go(max_steps=2, stop_after_steps=2)
    assert train_steps(tiny(0), ds, collator=col, steps=0, settings=SETTINGS, seed=0) == 0


def test_planted_truth_el2n_ranks_flipped_labels_high():
    n = 64
    flipped = np.random.default_rng(1).choice(n, 6, replace=False)
    ds, col = planted(n, flips=flipped)
    res = compute_scores(kind="el2n", seeds=[0, 1], steps=48, build_model=tiny, dataset=ds, collator=col,
                         settings=SETTINGS, labels=ds.labels)
    assert auroc(res.scores, flipped) >= 0.95
    top = select_positions(res.scores, mode="top", keep=6 / n)
    assert len(set(top) & set(flipped)) >= 5
    # offset pruning drops exactly those likely-mislabelled examples
    off = select_positions(res.scores, mode="offset", offset=6 / n, keep=0.5)
    assert not set(off) & set(flipped)


# ------------------------------------------------------------------------------------- selectors
def test_selectors_pick_the_right_indices():
    s = np.array([0.5, 0.9, 0.1, 0.7, 0.3, 0.9, 0.2, 0.8, 0.6, 0.4])
    assert list(select_positions(s, mode="top", keep=0.3)) == [1, 5, 7]  # tie 0.9: both, by position
    assert list(select_positions(s, mode="bottom", keep=0.3)) == [2, 4, 6]
    assert list(select_positions(s, mode="offset", keep=0.3, offset=0.2)) == [3, 7, 8]  # drop 1 and 5
    assert list(select_positions(s, mode="top", keep=0.2)) == [1, 5]
    assert list(select_positions(s, mode="top", keep=0.1)) == [1]  # tie broken by position
    assert list(select_positions(s, mode="top", keep=0.01)) == [1]  # at least one example
    r = select_positions(s, mode="random", keep=0.4, seed=3)
    np.testing.assert_array_equal(r, random_subset(np.arange(10), fraction=0.4, seed=3).indices)
    sel = select_by_scores(s, np.arange(200, 210), mode="top", keep=0.3)
    assert isinstance(sel, Selection) and list(sel.ids) == [201, 205, 207] and sel.n_total == 10
    np.testing.assert_array_equal(sel.scores, [0.9, 0.9, 0.8])
    assert sel.params["mode"] == "top" and sel.params["keep"] == 0.3


@pytest.mark.parametrize("mode", ["top", "bottom", "offset", "random"])
def test_stratified_selection_keeps_size_and_class_balance(mode):
    rng = np.random.default_rng(0)
    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    scores = rng.random(100) + (labels == 0) * 5.0  # class 0 is much "harder": plain top-k takes only it
    kw = dict(keep=0.3, offset=0.1 if mode == "offset" else 0.0, seed=1)
    plain = select_positions(scores, mode=mode, **kw)
    strat = select_positions(scores, mode=mode, labels=labels, stratified=True, **kw)
    assert len(plain) == len(strat) == 30
    assert np.bincount(labels[strat], minlength=3).tolist() == [18, 9, 3]
    if mode == "top":
        assert np.bincount(labels[plain], minlength=3).tolist() == [30, 0, 0]
        # within each class: that class's hardest
        for c, k in ((0, 18), (1, 9), (2, 3)):
            members = np.flatnonzero(labels == c)
            want = members[np.argsort(-scores[members])[:k]]
            assert set(strat[labels[strat] == c]) == set(want)
    if mode == "offset":
        for c, o in ((0, 6), (1, 3), (2, 1)):
            members = np.flatnonzero(labels == c)
            dropped = members[np.argsort(-scores[members])[:o]]
            assert not set(dropped) & set(strat)
    assert len(set(strat)) == 30 and np.all(np.diff(strat) > 0)


def test_offset_keeps_the_requested_size_and_allocation_is_exact():
    s = np.linspace(0, 1, 101)
    pos = select_positions(s, mode="offset", keep=0.7, offset=0.05)
    assert len(pos) == 71 and pos.max() == 95 and pos.min() == 25  # drop the top 5, keep the next 71
    assert subset_sizes(101, keep=0.7, offset=0.05) == (71, 5)
    for counts, k in (([5, 3, 2], 5), ([1, 1, 1], 2), ([7, 0, 3], 10), ([50, 49, 1], 33)):
        q = allocate(np.array(counts), k)
        assert q.sum() == k and np.all(q <= counts)


def test_selector_errors_name_the_fix():
    s = np.arange(10.0)
    with pytest.raises(ConfigError, match="offset \\+ keep must be <= 1"):
        select_positions(s, mode="offset", keep=0.8, offset=0.3)
    with pytest.raises(ConfigError, match="mode='offset' only"):
        select_positions(s, mode="top", keep=0.5, offset=0.2)
    with pytest.raises(ConfigError, match="needs class labels"):
        select_positions(s, mode="top", keep=0.5, stratified=True)
    with pytest.raises(ConfigError, match="mode must be one of"):
        select_positions(s, mode="hardest", keep=0.5)
    with pytest.raises(DataDietError, match="NaN"):
        select_positions(np.array([0.1, np.nan]), mode="top", keep=0.5)
    with pytest.raises(ConfigError, match="keep must be"):
        DataDiet(keep=0.0)
    with pytest.raises(ConfigError, match="not both"):
        DataDiet(score_epochs=1.0, score_steps=10)
    with pytest.raises(ConfigError, match="score must be one of"):
        DataDiet(score="forgetting")
    assert DataDiet().params()["score_epochs"] == 1.0 and DataDiet().score_seeds == 5


def test_selection_works_with_a_plain_hf_dataset_select():
    datasets = pytest.importorskip("datasets")
    texts, labels = planted_texts(20)
    hf = datasets.Dataset.from_dict({"text": texts, "label": labels.tolist(), "example_id": list(range(500, 520))})
    sel = select_by_scores(np.arange(20.0)[::-1], np.asarray(hf["example_id"]), mode="top", keep=0.25)
    sub = hf.select(sel.indices)
    assert list(sub["example_id"]) == list(sel.ids) == [500, 501, 502, 503, 504]


# ------------------------------------------------------------------------------------------ cache
def test_cache_hit_returns_identical_scores_and_reports_the_original_cost(tmp_path):
    ds, col = planted(24)
    cache = ScoreCache(tmp_path / "scores")
    base = {"model": "tiny-bert", "data": data_fingerprint(ds), "settings": vars(SETTINGS)}
    kw = dict(seeds=[0, 1], steps=3, build_model=tiny, dataset=ds, collator=col, settings=SETTINGS, cache=cache,
              cache_base=base)
    first = compute_scores(kind="el2n", **kw)
    assert first.cached == (False, False) and first.cost_s > 0 and first.reused_s == 0

    def no_model(seed):
        raise AssertionError("a cache hit must not build or train a model")

    second = compute_scores(kind="el2n", **{**kw, "build_model": no_model})
    assert second.cached == (True, True)
    np.testing.assert_array_equal(second.scores, first.scores)
    np.testing.assert_array_equal(second.per_seed, first.per_seed)
    assert second.cost_s == pytest.approx(first.cost_s) and second.reused_s == pytest.approx(first.cost_s)
    assert second.spent_s < first.cost_s
    # head GraNd rode on the same forward: cached too, same runs
    head = compute_scores(kind="grand_head", **{**kw, "build_model": no_model})
    assert head.cached == (True, True) and not np.allclose(head.scores, first.scores)
    # a later run for a score that was not cached (grand) keeps the cached EL2N runs as they were
    before = {p.name: p.read_bytes() for p in (tmp_path / "scores").iterdir()}
    compute_scores(kind="grand", **{**kw, "build_model": lambda seed: tiny(seed + 7)})  # a different model
    for name, data in before.items():
        assert (tmp_path / "scores" / name).read_bytes() == data, "a cached run was overwritten"
    again = compute_scores(kind="el2n", **{**kw, "build_model": no_model})
    np.testing.assert_array_equal(again.per_seed, first.per_seed)
    # a third seed: only that run is computed
    third = compute_scores(kind="el2n", **{**kw, "seeds": [0, 1, 2]})
    assert third.cached == (True, True, False)
    np.testing.assert_array_equal(third.per_seed[:2], first.per_seed)
    # anything else in the key (step, data, settings) is a miss
    for change in ({"steps": 4}, {"cache_base": {**base, "data": "other"}}):
        assert compute_scores(kind="el2n", **{**kw, **change}).cached == (False, False)


def test_scores_file_round_trip_and_bad_files(tmp_path):
    ds, col = planted(8)
    res = compute_scores(kind="el2n", seeds=[0], steps=0, build_model=tiny, dataset=ds, collator=col,
                         settings=SETTINGS, labels=ds.labels)
    p = res.save(tmp_path / "s.json")
    back = ScoreResult.load(p)
    np.testing.assert_array_equal(back.scores, res.scores)
    np.testing.assert_array_equal(back.ids, res.ids)
    np.testing.assert_array_equal(back.labels, ds.labels)
    assert back.kind == "el2n" and back.seeds == (0,) and back.steps == 0
    with pytest.raises(DataDietError, match="does not exist.*datadiet score"):
        ScoreResult.load(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataDietError, match="not valid JSON"):
        ScoreResult.load(tmp_path / "bad.json")
    (tmp_path / "sel.json").write_text(json.dumps({"format": "datadiet.selection/1"}))
    with pytest.raises(DataDietError, match="not a datadiet scores file"):
        ScoreResult.load(tmp_path / "sel.json")


# ------------------------------------------------------------------------------- dynamic variant
class FixedScores:
    """A score_fn returning fixed scores and counting its calls (and when they happened)."""

    def __init__(self, scores, engine=None):
        self.scores = np.asarray(scores, dtype=np.float64)
        self.calls = []
        self.engine = engine

    def __call__(self):
        self.calls.append(None if self.engine is None else self.engine.epoch)
        return self.scores


def _fit(model, ds, col, engine, *, epochs, **kw):
    args = dict(collator=col, epochs=epochs, lr=1e-3, seed=0, weight_decay=0.0)
    args.update(kw)
    return fit(model, ds, engine=engine, **args)


def test_dynamic_filter_rescores_at_the_right_epochs_and_counts_skips():
    n = 40
    ds, col = planted(n)
    scores = np.arange(n, dtype=float)  # the last 10 ids are the "hardest"
    fn = FixedScores(scores)
    f = DataDietDynamic(ids=ds.ids, score_fn=fn, keep=0.25, every=2, start_epoch=1, epochs=5)
    eng = StepEngine(task="classification", batch_size=8, filters=[f])
    _fit(tiny(0), ds, col, eng, epochs=5)
    assert [r["epoch"] for r in f.rescores] == [1, 3] and len(fn.calls) == 2  # not at 0, 2, 4 nor after the end
    assert eng.counts.examples_seen == 5 * n
    assert eng.skipped() == {"data_diet_dynamic": 4 * 30}  # epochs 1-4 keep 10 of 40
    assert eng.counts.examples_backpropagated == n + 4 * 10
    assert eng.counts.optimizer_steps == 5 + 4 * 2
    assert set(f.kept.tolist()) == set(ds.ids[30:].tolist())
    t = f.telemetry()
    assert t["scoring_forwards"] == 2 * n and t["pruned"] == 120 and t["seen"] == 200
    assert t["rescored_epochs"] == [1, 3]


def test_dynamic_keep_everything_reproduces_plain_training_exactly():
    ds, col = planted(40)
    a, b = tiny(0), tiny(0)
    _fit(a, ds, col, StepEngine(task="classification", batch_size=8), epochs=3)
    f = DataDietDynamic(ids=ds.ids, score_fn=el2n_score_fn(b, ds, collator=col), keep=1.0, start_epoch=1, epochs=3)
    _fit(b, ds, col, StepEngine(task="classification", batch_size=8, filters=[f]), epochs=3)
    assert [r["epoch"] for r in f.rescores] == [1, 2]
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_dynamic_skipped_examples_change_nothing():
    # Pruning from epoch 0 on fixed scores: what the pruned examples say (their labels) cannot matter.
    n = 40
    scores = np.r_[np.zeros(20), np.ones(20)]  # keep the second half
    ds1, col = planted(n)
    ds2, _ = planted(n, flips=range(20))  # the pruned half has all its labels flipped
    models = []
    for ds in (ds1, ds2):
        m = tiny(0)
        f = DataDietDynamic(ids=ds.ids, score_fn=FixedScores(scores), keep=0.5, start_epoch=0, epochs=2)
        eng = StepEngine(task="classification", batch_size=8, filters=[f])
        _fit(m, ds, col, eng, epochs=2)
        assert eng.skipped() == {"data_diet_dynamic": 40} and eng.counts.examples_forwarded == 40
        models.append(m)
    for pa, pb in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(pa, pb)


@pytest.mark.parametrize("schedule_by", ["examples", "steps"])
def test_dynamic_lr_schedule(schedule_by):
    n, epochs, lr = 40, 3, 1e-3
    ds, col = planted(n)
    f = DataDietDynamic(ids=ds.ids, score_fn=FixedScores(np.arange(n, dtype=float)), keep=0.25, start_epoch=1,
                        epochs=epochs)
    eng = StepEngine(task="classification", batch_size=8, filters=[f])
    model = tiny(0)
    opt = RecordingAdamW(model.parameters(), eng, lr=lr, weight_decay=0.0)
    _fit(model, ds, col, eng, epochs=epochs, optimizer=opt, schedule="linear", warmup=0.1, schedule_by=schedule_by)
    steps = [s for s, _ in opt.trace]
    assert len(opt.trace) == eng.counts.optimizer_steps == 5 + 2 * 2  # full epoch 0, then 10 of 40 per epoch
    if schedule_by == "examples":
        # every step uses the LR full training would use at the same point of the example stream ...
        for seen, got in opt.trace:
            assert got == pytest.approx(lr * linear_warmup_decay(seen / (epochs * n), warmup=0.1))
        # ... so the schedule ends where full training's does: the last step is at progress 1
        assert steps[-1] == epochs * n and opt.trace[-1][1] == 0.0
    else:
        # progress = steps taken / the 15 full training would take: pruning leaves the LR undecayed
        # (documented; use schedule_by=examples with pruning methods)
        assert opt.trace[-1][1] == pytest.approx(lr * linear_warmup_decay(8 / 15, warmup=0.1))
        assert opt.trace[-1][1] > 0.4 * lr


def test_dynamic_filter_resumes_like_an_uninterrupted_run():
    ds, col = planted(32)

    def build():
        m = tiny(0)
        f = DataDietDynamic(ids=ds.ids, score_fn=el2n_score_fn(m, ds, collator=col), keep=0.5, start_epoch=1, epochs=3)
        eng = StepEngine(task="classification", batch_size=8, filters=[f])
        return m, eng, torch.optim.AdamW(m.parameters(), lr=1e-3)

    (m1, e1), (m2, e2) = resume_vs_uninterrupted(build, ds, col, epochs=3, stop_after=2)
    for pa, pb in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(pa, pb)
    assert e1.counts.as_dict() == e2.counts.as_dict()
    assert [r["epoch"] for r in e2.filters[0].rescores] == [1, 2]


def test_dynamic_method_validates_early():
    with pytest.raises(ConfigError, match="mode must be one of"):
        DataDietDynamicMethod(mode="random")
    with pytest.raises(ConfigError, match="offset \\+ keep"):
        DataDietDynamicMethod(mode="offset", keep=0.9, offset=0.2)
    cfg_args = ["model.name=tiny-bert", "data.max_train=32", "data.max_test=16", "train.epochs=1",
                "method.name=data_diet_dynamic", "train.bf16=false"]
    with pytest.raises(ConfigError, match="set train.epochs >= 2"):
        run(load_config(None, cfg_args + ["output_dir=runs"]))


# ------------------------------------------------------------------------- through the runner
def _cfg(*extra: str):
    return load_config(None, ["model.name=tiny-bert", "model.max_length=24", "data.max_train=48", "data.max_test=16",
                              "train.epochs=1", "train.batch_size=16", "train.bf16=false", "train.lr=1e-3",
                              "train.threads=1", "output_dir=runs", *extra])


def test_data_diet_through_the_runner_counts_cached_scoring_cost(tmp_path):
    params = ["method.name=data_diet", "method.params.score_seeds=2", "method.params.score_steps=2",
              "method.params.keep=0.5"]
    r1 = run(_cfg(*params, "run_name=a"))
    s1 = r1["plan_info"]["scoring"]
    assert s1["cached"] == [False, False] and r1["n_train_used"] == 24
    assert r1["timings"]["selection_s"] >= s1["cost_s"] > 0 and r1["timings"]["selection_reused_s"] == 0
    assert (tmp_path / "runs" / "a" / "scores.json").exists()
    r2 = run(_cfg(*params, "run_name=b"))
    s2 = r2["plan_info"]["scoring"]
    assert s2["cached"] == [True, True] and s2["cost_s"] == pytest.approx(s1["cost_s"])
    # the cost paid earlier still counts in the run's selection time (and so its wall-clock)
    assert r2["timings"]["selection_reused_s"] == pytest.approx(s1["cost_s"])
    assert r2["timings"]["selection_s"] >= s1["cost_s"]
    sel1 = Selection.load(tmp_path / "runs" / "a" / "selection.json")
    sel2 = Selection.load(tmp_path / "runs" / "b" / "selection.json")
    np.testing.assert_array_equal(sel1.ids, sel2.ids)
    # the random baseline at the same size runs no scoring at all
    r3 = run(_cfg("method.name=data_diet", "method.params.mode=random", "method.params.keep=0.5", "run_name=c"))
    assert r3["plan_info"]["scoring"] is None and r3["n_train_used"] == 24


def test_training_on_a_selection_file_and_mismatched_ids(tmp_path):
    r = run(_cfg("method.name=random_subset", "method.params.fraction=0.25", "run_name=pick"))
    path = tmp_path / "runs" / "pick" / "selection.json"
    sel = Selection.load(path)
    rec = run(_cfg(f"data.selection={path}", "run_name=sub"))
    assert rec["n_train"] == len(sel) == 12 and rec["counts"]["examples_backpropagated"] == 12
    assert rec["selection_file"]["n_selected"] == 12 and rec["selection_file"]["n_total"] == r["n_train"]
    other = Selection(method="x", indices=np.array([0, 1]), ids=np.array([10**9, 10**9 + 1]), n_total=2)
    other.save(tmp_path / "other.json")
    with pytest.raises(DataDietError, match="not in this training set.*datadiet select"):
        run(_cfg(f"data.selection={tmp_path / 'other.json'}", "run_name=bad"))


def test_a_selection_file_gives_a_subset_of_the_same_type_with_everything_aligned(tmp_path):
    from datadiet.data.collate import LMContexts, TokenizedSplit
    from datadiet.methods.igf.method import _pool_arrays
    from datadiet.runner import add_label_noise, apply_selection_file

    ds, _col = planted(20)
    flipped = add_label_noise(ds, fraction=0.5, num_classes=2, seed=0)
    pos = np.array([1, 4, 5, 9, 13, 18])
    Selection(method="x", indices=pos[::-1].copy(), ids=ds.ids[pos[::-1]], n_total=20).save(tmp_path / "s.json")
    sub, info = apply_selection_file(ds, tmp_path / "s.json")
    assert isinstance(sub, TokenizedSplit) and len(sub) == 6 and info["n_selected"] == 6
    np.testing.assert_array_equal(sub.ids, ds.ids[pos])  # in split order, whatever the file's order
    np.testing.assert_array_equal(sub.labels, ds.labels[pos])
    assert [sub[i] for i in range(6)] == [ds[int(p)] for p in pos]
    np.testing.assert_array_equal(sub.flipped_ids, [i for i in ds.ids[pos] if i in set(flipped.tolist())])
    sub.features[0]["labels"] = 1 - sub.features[0]["labels"]  # its rows are its own
    assert ds[int(pos[0])]["labels"] == int(ds.labels[pos[0]])
    assert not hasattr(sub.subset([0]), "base")

    lm = LMContexts(np.arange(40).reshape(8, 5), np.arange(100, 108), np.array([0, 0, 1, 1, 2, 2, 3, 3]))
    Selection(method="x", indices=np.array([2, 6]), ids=np.array([102, 106]), n_total=8).save(tmp_path / "l.json")
    sub, _ = apply_selection_file(lm, tmp_path / "l.json")
    assert isinstance(sub, LMContexts) and sub.labels is None
    np.testing.assert_array_equal(sub.doc_ids, [1, 3])
    assert [sub[i] for i in range(2)] == [lm[2], lm[6]]
    toks, ids, docs = _pool_arrays(sub)  # igf reads a subset like any pool
    np.testing.assert_array_equal(toks, lm.input_ids[[2, 6]])
    np.testing.assert_array_equal(ids, [102, 106])
    np.testing.assert_array_equal(docs, [1, 3])


# ------------------------------------------------------------------------------------------- CLI
TINY_SET = ["data.max_train=48", "data.max_test=16", "train.bf16=false"]


def test_cli_score_select_train_happy_path(tmp_path, capsys):
    scores = tmp_path / "s.json"
    assert main(["score", "-q", "-c", TINY, "--set", *TINY_SET, "--seeds", "2", "--score-steps", "2",
                 "--out", str(scores)]) == 0
    out = capsys.readouterr().out
    assert "el2n scores of 48 examples" in out and str(scores) in out
    res = ScoreResult.load(scores)
    assert res.seeds == (0, 1) and res.steps == 2 and len(res) == 48
    # again: from the cache, reporting the cost paid earlier
    assert main(["score", "-q", "-c", TINY, "--set", *TINY_SET, "--seeds", "2", "--score-steps", "2",
                 "--out", str(tmp_path / "s2.json")]) == 0
    assert "2 run(s) from the cache" in capsys.readouterr().out

    sel_path = tmp_path / "sel.json"
    assert main(["select", "-q", "--scores", str(scores), "-p", "keep=0.5", "stratified=true",
                 "--out", str(sel_path)]) == 0
    assert "kept 24 of 48" in capsys.readouterr().out
    sel = Selection.load(sel_path)
    assert len(sel) == 24 and sel.params["stratified"] is True and sel.info["score"]["seeds"] == [0, 1]
    full = np.bincount(res.labels)
    assert np.abs(np.bincount(res.labels[sel.indices], minlength=len(full)) - full / 2).max() <= 1

    # select from a config (scores from the cache), then train on the selection
    cfg_sel = tmp_path / "sel2.json"
    assert main(["select", "-q", "-c", TINY, "--set", *TINY_SET, "-p", "score_seeds=2", "score_steps=2", "keep=0.5",
                 "--out", str(cfg_sel)]) == 0
    capsys.readouterr()
    sel2 = Selection.load(cfg_sel)
    assert len(sel2) == 24 and sel2.info["score"]["reused_s"] > 0
    assert main(["train", "-q", "-c", TINY, "--out", str(tmp_path / "runs"), "--set", *TINY_SET,
                 f"data.selection={cfg_sel}"]) == 0
    assert "train set: 24 examples" in capsys.readouterr().out
    # another prune method plugs in through --method with no CLI change
    assert main(["select", "-q", "-c", TINY, "--set", *TINY_SET, "--method", "random_subset", "-p", "fraction=0.25",
                 "--out", str(tmp_path / "r.json")]) == 0
    assert len(Selection.load(tmp_path / "r.json")) == 12


def test_cli_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    scores = tmp_path / "s.json"
    assert main(["score", "-q", "-c", TINY, "--set", *TINY_SET, "--seeds", "1", "--score-steps", "0",
                 "--out", str(scores)]) == 0
    capsys.readouterr()
    (tmp_path / "junk.json").write_text("[1, 2")
    cases = [
        (["select"], "give --scores FILE"),
        (["select", "--scores", str(scores), "-c", TINY], "not both"),
        (["select", "--scores", str(tmp_path / "nope.json")], "does not exist; create one with `datadiet score`"),
        (["select", "--scores", str(tmp_path / "junk.json")], "not valid JSON"),
        (["select", "--scores", str(scores), "--method", "data_dit"], "Did you mean 'data_diet'"),
        (["select", "--scores", str(scores), "--method", "random_skip"], "not an offline selector"),
        (["select", "--scores", str(scores), "--method", "random_subset"], "cannot select from a scores file"),
        (["select", "--scores", str(scores), "-p", "kep=0.5"], "Did you mean 'keep'"),
        (["select", "--scores", str(scores), "-p", "keep=1.5"], "keep must be <= 1.0"),
        (["select", "--scores", str(scores), "-p", "keep"], "must look like KEY=VALUE, e.g. -p keep=0.7"),
        (["select", "--scores", str(scores), "-p", "mode=offset", "offset=0.5", "keep=0.7"], "offset + keep"),
        (["select", "--scores", str(scores), "-p", "score_seeds=3"], "recompute with `datadiet score`"),
        (["select", "--scores", str(scores), "-p", "score=grand"], "set score=el2n"),
        (["score", "-c", TINY, "--set", *TINY_SET, "--score", "forgetting"], "score must be one of"),
        (["score", "-c", TINY, "--set", *TINY_SET, "--seeds", "0"], "--seeds must be >= 1"),
        (["score", "-c", TINY, "--set", *TINY_SET, "model.name=tiny-gpt2", "data.task=causal_lm"],
         "data_diet scores classifiers"),
        (["score", "-c", str(tmp_path / "nope.yaml")], "does not exist"),
        (["train", "-c", TINY, "--set", f"data.selection={tmp_path / 'nope.json'}"], "datadiet select"),
        (["train", "-c", TINY, "--set", "method.name=data_diet", "method.params.mode=offset",
          "method.params.offset=0.4", "method.params.keep=0.7"], "offset + keep must be <= 1"),
    ]
    for argv, needle in cases:
        line = cli_error(capsys, argv)
        assert needle in line, (argv, line)


def test_methods_listing_shows_both_data_diet_methods(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "data_diet " in out and "data_diet_dynamic" in out
    assert build_method("data_diet", {"score": "grand_head", "mode": "offset", "offset": 0.1}).params()["offset"] == 0.1
