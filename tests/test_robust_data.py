"""Bad data inputs (issue 18, the data side): each gets one clear message naming the problem, the
file and the fix (exit status 2 from the CLI), never a traceback or a silently different task."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from datadiet.cli.main import main
from datadiet.data import load_dataset
from datadiet.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")
SMALL = ["model.name=tiny-bert", "data.max_train=200", "data.max_test=100", "train.threads=1"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def train_error(capsys, tmp_path, *overrides: str) -> str:
    """``datadiet train`` with the tiny config and ``overrides``: exit 2, one clean line; returns stderr."""
    code = main(["train", "-q", "--out", str(tmp_path / "runs"), "--config", TINY, "--set", *SMALL, *overrides])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") or "\nerror: " in err, err
    assert "Traceback" not in err
    return err


def ok_csv(tmp_path: Path, name: str = "ok.csv", n: int = 60, labels=("neg", "pos"), prefix: str = "review") -> str:
    """``n`` rows of ``text,label``, labels cycling through ``labels``."""
    p = tmp_path / name
    pd.DataFrame({"text": [f"{prefix} number {i}" for i in range(n)],
                  "label": [labels[i % len(labels)] for i in range(n)]}).to_csv(p, index=False)
    return str(p)


# ------------------------------------------------------------------- 3: misspelt / missing label column
def test_misspelt_label_column_with_a_causal_model_is_an_error_not_a_language_model_run(capsys, tmp_path):
    csv = ok_csv(tmp_path)
    err = train_error(capsys, tmp_path, f"data.name={csv}", "data.label_column=lable", "model.name=tiny-gpt2")
    assert "no label column 'lable'" in err and "Columns found: text, label" in err
    assert "Did you mean 'label'" in err
    records = [json.loads(r.read_text()) for r in (tmp_path / "runs").rglob("record.json")]
    assert records and all(r["status"] == "failed" and "perplexity" not in json.dumps(r) for r in records)


def test_misspelt_label_column_with_a_classifier_blames_the_column_not_the_model(capsys, tmp_path):
    err = train_error(capsys, tmp_path, f"data.name={ok_csv(tmp_path)}", "data.label_column=lable")
    assert "no label column 'lable'" in err and "Columns found: text, label" in err
    assert "classifier" not in err


def test_task_is_inferred_only_when_no_label_column_was_named(tmp_path):
    csv = ok_csv(tmp_path)
    with pytest.raises(DataError, match=r"no label column 'lable'.*Columns found: text, label.*data.task=causal_lm"):
        load_dataset(csv, label_column="lable")
    assert load_dataset(csv).task == "classification"  # the default column is there
    text_only = tmp_path / "text.csv"
    pd.DataFrame({"text": [f"some sentence {i}" for i in range(20)]}).to_csv(text_only, index=False)
    assert load_dataset(str(text_only)).task == "causal_lm"  # nothing named, no 'label': text
    # An explicit task wins: a named column is not needed for language-model text.
    assert load_dataset(csv, label_column="lable", task="causal_lm").task == "causal_lm"


# ---------------------------------------------------------------- 4: test labels vs training labels
def test_test_file_sharing_no_label_with_training_is_refused(capsys, tmp_path):
    te = ok_csv(tmp_path, "te.csv", n=20, labels=("no", "yes"), prefix="held out")
    err = train_error(capsys, tmp_path, f"data.name={ok_csv(tmp_path)}", f"data.test_file={te}")
    assert "shares no label with the training data" in err and "te.csv" in err
    assert "'neg', 'pos'" in err and "'no', 'yes'" in err


def test_test_classes_unseen_in_training_are_warned_about(tmp_path, caplog):
    te = ok_csv(tmp_path, "te.csv", n=30, labels=("neg", "pos", "meh"), prefix="held out")
    with caplog.at_level(logging.WARNING, logger="datadiet"):
        d = load_dataset(ok_csv(tmp_path), test_file=te)
    assert len(d.test) == 30
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("not in the training data" in m and "'meh'" in m and "10 test examples" in m for m in warned), warned


def test_matching_test_file_gives_no_warning(tmp_path, caplog):
    te = ok_csv(tmp_path, "te.csv", n=20, prefix="held out")
    with caplog.at_level(logging.WARNING, logger="datadiet"):
        load_dataset(ok_csv(tmp_path), test_file=te)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_test_file_is_honoured_for_a_builtin_dataset(tmp_path):
    te = ok_csv(tmp_path, "te.csv", n=20, labels=("fresh", "rotten"), prefix="my own held-out snippet")
    d = load_dataset("rotten_tomatoes", test_file=te, max_train=50)
    assert sorted(d.test.texts) == sorted(pd.read_csv(te)["text"])
    assert d.label_names == ["fresh", "rotten"] and len(d.train) == 50
    bad = ok_csv(tmp_path, "bad.csv", n=20, prefix="my own held-out snippet")  # pos/neg: not RT's labels
    with pytest.raises(DataError, match="shares no label with the training data"):
        load_dataset("rotten_tomatoes", test_file=bad, max_train=50)


def test_missing_test_file_is_refused_before_a_run_folder_is_made(capsys, tmp_path):
    err = train_error(capsys, tmp_path, f"data.name={ok_csv(tmp_path)}", f"data.test_file={tmp_path / 'nope.csv'}")
    assert "test file" in err and "nope.csv" in err and "does not exist" in err
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------ 9: tracebacks -> one line
def test_all_empty_text_column(capsys, tmp_path):
    p = tmp_path / "empty_text.csv"
    pd.DataFrame({"text": [""] * 20, "label": ["pos", "neg"] * 10}).to_csv(p, index=False)
    err = train_error(capsys, tmp_path, f"data.name={p}")
    assert "all 20 rows have an empty text" in err and "'text'" in err and "data.text_column" in err


def test_all_empty_text_column_names_the_users_column(tmp_path):
    p = tmp_path / "empty_body.csv"
    pd.DataFrame({"body": [None] * 6, "y": ["a", "b"] * 3}).to_csv(p, index=False)
    with pytest.raises(DataError, match=r"empty text in column 'body'"):
        load_dataset(str(p), text_column="body", label_column="y")


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_list_valued_labels(capsys, tmp_path, suffix):
    labels = [["a", "b"] if i % 2 else ["c"] for i in range(20)]
    df = pd.DataFrame({"text": [f"t {i}" for i in range(20)], "label": labels})
    p = tmp_path / f"lists{suffix}"
    if suffix == ".jsonl":
        df.to_json(p, orient="records", lines=True)
    else:
        df.to_parquet(p)
    err = train_error(capsys, tmp_path, f"data.name={p}")
    assert "label column 'label' holds lists" in err and "one label per row" in err


def test_list_valued_texts(tmp_path):
    p = tmp_path / "lists.jsonl"
    pd.DataFrame({"text": [["a", f"b{i}"] for i in range(10)], "label": [i % 2 for i in range(10)]}).to_json(
        p, orient="records", lines=True)
    with pytest.raises(DataError, match="text column 'text' holds lists"):
        load_dataset(str(p))


def test_corrupt_parquet(capsys, tmp_path):
    p = tmp_path / "corrupt.parquet"
    p.write_bytes(b"this is not parquet at all\n" * 10)
    err = train_error(capsys, tmp_path, f"data.name={p}")
    assert "could not read" in err and "corrupt.parquet" in err and "Parquet" in err


# ------------------------------------------------------------------ 10: messages naming the real problem
def test_conflicting_labels_are_reported_as_such(capsys, tmp_path):
    p = tmp_path / "conflict.csv"
    pd.DataFrame({"text": [f"t {i // 2}" for i in range(40)], "label": ["pos", "neg"] * 20}).to_csv(p, index=False)
    err = train_error(capsys, tmp_path, f"data.name={p}")
    assert "no non-empty texts" not in err
    assert "different labels" in err and "40 rows" in err


def test_some_conflicting_labels_are_dropped_with_a_warning(tmp_path, caplog):
    p = tmp_path / "some.csv"
    rows = [(f"t {i}", "pos" if i % 2 else "neg") for i in range(30)] + [("t 0", "pos")]
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(p, index=False)
    with caplog.at_level(logging.WARNING, logger="datadiet"):
        d = load_dataset(str(p), test_size=5)
    assert len(d.train) + len(d.test) == 29
    assert any("different labels" in r.getMessage() and "2 rows" in r.getMessage() for r in caplog.records)


def test_test_file_without_the_label_column_is_named(capsys, tmp_path):
    te = tmp_path / "te.csv"
    pd.DataFrame({"text": [f"held out {i}" for i in range(20)], "y": ["pos", "neg"] * 10}).to_csv(te, index=False)
    err = train_error(capsys, tmp_path, f"data.name={ok_csv(tmp_path)}", f"data.test_file={te}")
    assert "test file" in err and "te.csv" in err and "no label column 'label'" in err
    assert "Columns found: text, y" in err and "missing values" not in err


def test_test_file_with_missing_labels_is_named(tmp_path):
    te = tmp_path / "te.csv"
    pd.DataFrame({"text": [f"held out {i}" for i in range(20)], "label": ["pos", None] * 10}).to_csv(te, index=False)
    with pytest.raises(DataError, match=r"test file .*te.csv.*10 missing values"):
        load_dataset(ok_csv(tmp_path), test_file=str(te))
