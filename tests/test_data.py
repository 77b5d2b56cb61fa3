"""Data: de-duplication, deterministic disjoint splits, stable ids, contexts, built-in sets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from datadiet.data import Collator, TokenizedSplit, lm_contexts, load_dataset
from datadiet.data.split import flip_labels, stratified_split
from datadiet.errors import DataError


def write_csv(path, n=200, dup=20, seed=0):
    rng = np.random.default_rng(seed)
    texts = [f"text number {i} " + "x" * int(rng.integers(1, 5)) for i in range(n)]
    labels = ["pos" if i % 3 else "neg" for i in range(n)]
    df = pd.DataFrame({"body": texts + texts[:dup], "y": labels + labels[:dup]})
    df.to_csv(path, index=False)
    return df


def test_stratified_split_is_deterministic_disjoint_and_proportional():
    labels = np.array([0] * 700 + [1] * 300)
    tr1, te1 = stratified_split(labels, test_size=0.2, seed=3)
    tr2, te2 = stratified_split(labels, test_size=0.2, seed=3)
    assert np.array_equal(te1, te2) and np.array_equal(tr1, tr2)
    assert len(te1) == 200 and set(tr1).isdisjoint(te1) and len(tr1) + len(te1) == 1000
    assert (labels[te1] == 1).sum() == 60  # 30% of the test split, like the whole set
    _, te3 = stratified_split(labels, test_size=0.2, seed=4)
    assert not np.array_equal(te1, te3)


def test_local_csv_dedup_split_and_ids(tmp_path):
    f = tmp_path / "d.csv"
    write_csv(f)
    a = load_dataset(str(f), text_column="body", label_column="y", test_size=0.25, seed=0)
    b = load_dataset(str(f), text_column="body", label_column="y", test_size=0.25, seed=0)
    assert a.info["duplicates_dropped"] == 20 and a.info["rows"] == 200
    assert len(a.train) + len(a.test) == 200 and len(a.test) == 50
    assert set(a.train.texts).isdisjoint(a.test.texts)
    assert set(a.train.ids.tolist()).isdisjoint(a.test.ids.tolist())
    assert np.array_equal(a.train.ids, b.train.ids) and a.train.texts == b.train.texts
    assert a.label_names == ["neg", "pos"]
    # Ids are stable: the same text keeps its id in a subsample and after re-ordering.
    by_text = dict(zip(a.train.texts, a.train.ids.tolist()))
    c = load_dataset(str(f), text_column="body", label_column="y", test_size=0.25, seed=0, max_train=40)
    assert len(c.train) == 40
    assert all(by_text[t] == i for t, i in zip(c.train.texts, c.train.ids.tolist()))
    perm = np.random.default_rng(0).permutation(len(a.train))
    sub = a.train.subset(perm)
    assert all(by_text[t] == i for t, i in zip(sub.texts, sub.ids.tolist()))
    assert a.train.select_ids(sub.ids[:5]).texts == sub.texts[:5]


@pytest.mark.parametrize("suffix", [".tsv", ".jsonl", ".parquet"])
def test_other_file_formats(tmp_path, suffix):
    df = pd.DataFrame({"text": [f"sentence {i}" for i in range(40)], "label": [i % 2 for i in range(40)],
                       "text2": [f"other {i}" for i in range(40)]})
    f = tmp_path / f"d{suffix}"
    if suffix == ".tsv":
        df.to_csv(f, sep="\t", index=False)
    elif suffix == ".jsonl":
        df.to_json(f, orient="records", lines=True)
    else:
        df.to_parquet(f)
    d = load_dataset(str(f), text_pair_column="text2", test_size=10)
    assert len(d.train) == 30 and len(d.test) == 10 and d.train.texts_pair is not None


def test_separate_test_file_never_shares_a_text(tmp_path):
    tr = pd.DataFrame({"text": [f"s {i}" for i in range(30)], "label": [i % 2 for i in range(30)]})
    te = pd.DataFrame({"text": [f"s {i}" for i in range(25, 40)], "label": [i % 2 for i in range(25, 40)]})
    tr.to_csv(tmp_path / "tr.csv", index=False)
    te.to_csv(tmp_path / "te.csv", index=False)
    d = load_dataset(str(tmp_path / "tr.csv"), test_file=str(tmp_path / "te.csv"))
    assert len(d.test) == 15 and len(d.train) == 25
    assert set(d.train.texts).isdisjoint(d.test.texts)


def test_bad_inputs_have_clear_messages(tmp_path):
    f = tmp_path / "d.csv"
    pd.DataFrame({"sentence": ["a b", "c d"], "label": [0, 1]}).to_csv(f, index=False)
    with pytest.raises(DataError, match=r"no text column 'text'.*Columns found: sentence, label"):
        load_dataset(str(f))
    one = tmp_path / "one.csv"
    pd.DataFrame({"text": [f"t{i}" for i in range(10)], "label": ["a"] * 10}).to_csv(one, index=False)
    with pytest.raises(DataError, match="only one class"):
        load_dataset(str(one))
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    with pytest.raises(DataError, match="empty"):
        load_dataset(str(empty))
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(str(tmp_path / "missing.csv"))


def test_lm_contexts_keep_documents_and_stable_ids():
    from datadiet.data.types import TextSplit
    from datadiet.models.tiny import char_tokenizer

    tok = char_tokenizer(causal=True)
    split = TextSplit(ids=np.array([5, 9]), texts=["a" * 50, "b" * 35], doc_ids=np.array([0, 1]))
    ctx = lm_contexts(split, tok, context_length=16)
    assert len(ctx) == 3 + 2  # tails dropped
    assert ctx.doc_ids.tolist() == [0, 0, 0, 1, 1]
    assert len(set(ctx.ids.tolist())) == 5
    batch = Collator(pad_token_id=0)([ctx[i] for i in range(len(ctx))])
    assert batch["input_ids"].shape == (5, 16) and "doc_id" in batch and "example_id" in batch


def test_rotten_tomatoes_builtin_offline():
    d = load_dataset("rotten_tomatoes")
    assert d.task == "classification" and d.label_names == ["fresh", "rotten"]
    assert d.info["rows"] == 12752 and len(d.test) == 2000 and len(d.train) == 10752
    assert set(d.train.texts).isdisjoint(d.test.texts)
    share = lambda s: float(np.mean(s.labels))  # noqa: E731
    assert abs(share(d.train) - share(d.test)) < 0.005  # stratified


def test_tokenized_split_and_collator_dynamic_padding():
    from datadiet.data.types import TextSplit
    from datadiet.models.tiny import char_tokenizer

    tok = char_tokenizer()
    split = TextSplit(ids=np.array([3, 4]), texts=["ab", "abcdef"], labels=np.array([0, 1]))
    ds = TokenizedSplit(split, tok, max_length=6)
    b = Collator(pad_token_id=tok.pad_token_id)([ds[0], ds[1]])
    assert b["input_ids"].shape == (2, 6)  # [CLS] a b c d [SEP] truncated to 6; padded to the longest
    assert b["attention_mask"][0].tolist() == [1, 1, 1, 1, 0, 0]
    assert b["example_id"].tolist() == [3, 4] and b["labels"].tolist() == [0, 1]


@pytest.mark.slow
def test_all_builtin_datasets_load():
    for name in ("fine_foods", "health_tweets", "news_outlets", "news_outlets_text", "austen"):
        d = load_dataset(name)
        assert len(d.train) > 0 and len(d.test) > 0
        if d.task == "causal_lm":
            assert set(d.train.doc_ids.tolist()).isdisjoint(d.test.doc_ids.tolist())
        else:
            assert set(d.train.texts).isdisjoint(d.test.texts)


@pytest.mark.parametrize("num_classes", [2, 5])
def test_flip_labels_plants_exactly_the_requested_noise(num_classes):
    labels = np.arange(200) % num_classes
    new, pos = flip_labels(labels, fraction=0.1, num_classes=num_classes, seed=3)
    assert len(pos) == 20 and np.all(np.diff(pos) > 0)
    assert np.all(new[pos] != labels[pos]) and np.all((0 <= new) & (new < num_classes))
    rest = np.setdiff1d(np.arange(200), pos)
    assert np.array_equal(new[rest], labels[rest])
    again, pos2 = flip_labels(labels, fraction=0.1, num_classes=num_classes, seed=3)
    assert np.array_equal(again, new) and np.array_equal(pos2, pos)
    assert not np.array_equal(flip_labels(labels, fraction=0.1, num_classes=num_classes, seed=4)[1], pos)


def test_label_noise_config_flips_training_labels_only(tmp_path):
    from datadiet.config import RunConfig
    from datadiet.errors import ConfigError
    from datadiet.runner import prepare

    csv = tmp_path / "d.csv"
    pd.DataFrame({"text": [f"text number {i}" for i in range(100)], "label": [i % 2 for i in range(100)]}).to_csv(
        csv, index=False)
    base = {"data": {"name": str(csv), "test_size": 0.2}, "model": {"name": "tiny-bert"}}
    clean = prepare(RunConfig.from_dict(base))
    noisy = prepare(RunConfig.from_dict({**base, "data": {**base["data"], "label_noise": 0.25}}))
    tr_c, tr_n = clean[2], noisy[2]
    flipped = set(tr_n.flipped_ids.tolist())
    assert len(flipped) == 20  # round(0.25 * 80)
    for i in range(len(tr_c)):
        changed = tr_c[i]["labels"] != tr_n[i]["labels"]
        assert changed == (int(tr_c.ids[i]) in flipped)
        assert tr_n.labels[i] == tr_n[i]["labels"]
    assert [t["labels"] for t in clean[3]] == [t["labels"] for t in noisy[3]], "the test split stays clean"
    with pytest.raises(ConfigError, match="data.label_noise must be < 1"):
        RunConfig.from_dict({**base, "data": {**base["data"], "label_noise": 1.0}})
