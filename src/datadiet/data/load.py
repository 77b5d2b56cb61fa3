"""One entry point for every dataset source: built-in name, local file, or Hugging Face hub name."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataDietError, DataError, missing_extra, suggest
from .builtin import BUILTIN
from .split import dedup_frame, encode_labels, group_split, stratified_split, stratified_subsample
from .types import TextDataset, TextSplit

log = logging.getLogger(__name__)
FILE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


def read_table(path: Path) -> pd.DataFrame:
    suf = path.suffix.lower()
    if suf in (".csv", ".tsv"):
        try:
            return pd.read_csv(path, sep="\t" if suf == ".tsv" else ",")
        except pd.errors.EmptyDataError:
            raise DataError(f"data file {str(path)!r} is empty (no header row); give it a header and some rows") from None
        except (pd.errors.ParserError, UnicodeDecodeError) as e:
            raise DataError(f"could not read {str(path)!r} as {suf[1:].upper()}: {str(e).strip()[:300]}. "
                            "Check the quoting and the separator, and that the file is UTF-8.") from None
    if suf in (".jsonl", ".json"):
        try:
            return pd.read_json(path, lines=suf == ".jsonl")
        except ValueError as e:
            raise DataError(f"could not read {path} as {'JSON lines' if suf == '.jsonl' else 'JSON'}: {e}") from None
    if suf == ".parquet":
        try:
            return pd.read_parquet(path)
        except ImportError:
            raise missing_extra("pyarrow", "hf") from None
    raise DataError(f"unsupported file type {suf!r} for {path}; use one of {', '.join(FILE_SUFFIXES)}")


def _hub_frames(name: str) -> dict[str, pd.DataFrame]:
    try:
        import datasets
    except ImportError:
        raise missing_extra("datasets", "hf") from None
    try:
        dd = datasets.load_dataset(name)
    except Exception as e:  # noqa: BLE001 - offline or unknown: one clear message
        raise DataDietError(
            f"unknown dataset {name!r}: it is not built in ({', '.join(sorted(BUILTIN))}), not a local "
            f"file, and loading it from the Hugging Face hub failed ({type(e).__name__}: {str(e)[:200]}). "
            f"Check the name, or pass a path to a CSV/TSV/JSONL/Parquet file.{suggest(name, BUILTIN)}"
        ) from None
    return {k: v.to_pandas() for k, v in dd.items()}


def _require(df: pd.DataFrame, col: str | None, role: str, source: str) -> None:
    if col is not None and col not in df.columns:
        raise DataError(
            f"{source}: no {role} column {col!r}. Columns found: {', '.join(map(str, df.columns))}. "
            f"Name the right one with data.{role}_column=...{suggest(col, map(str, df.columns))}"
        )


def load_dataset(
    name: str,
    *,
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str = "label",
    task: str | None = None,
    test_size: float | int | None = None,
    test_file: str | None = None,
    seed: int = 0,
    max_train: int | None = None,
    max_test: int | None = None,
) -> TextDataset:
    """Load a dataset by built-in name, local file path or hub name; de-duplicate and split.

    Splits are deterministic for a given ``seed``, stratified by label for classification and
    disjoint by document for causal-LM text, and train and test never share a text. Stable ids
    are assigned after de-duplication in source order, before any split or subsample.
    """
    source = name
    split_given: tuple[pd.DataFrame, pd.DataFrame] | None = None
    if name in BUILTIN:
        spec = BUILTIN[name]
        df = spec.loader()
        task = task or spec.task
        test_size = spec.test_size if test_size is None else test_size
        text_column, label_column, text_pair_column = "text", "label", None
    elif Path(name).suffix.lower() in FILE_SUFFIXES or Path(name).exists():
        path = Path(name)
        if not path.exists():
            raise DataError(f"data file {name!r} does not exist; check the path")
        df = read_table(path)
        if test_file:
            tp = Path(test_file)
            if not tp.exists():
                raise DataError(f"test file {test_file!r} does not exist; check the path")
            split_given = (df, read_table(tp))
    else:
        frames = _hub_frames(name)
        if "train" not in frames:
            raise DataError(f"hub dataset {name!r} has no 'train' split (splits: {', '.join(frames)})")
        df = frames["train"]
        test_key = next((k for k in ("test", "validation") if k in frames), None)
        if test_key:
            split_given = (frames["train"], frames[test_key])
    task = task or ("classification" if label_column in df.columns else "causal_lm")
    if task not in ("classification", "causal_lm"):
        raise DataError(f"task must be 'classification' or 'causal_lm', got {task!r}")
    test_size = 0.2 if test_size is None else test_size
    if len(df) == 0:
        raise DataError(f"dataset {source!r} is empty (0 rows); check the file or the name")

    if split_given is not None:
        parts = []
        for part, frame in zip(("train", "test"), split_given):
            if len(frame) == 0:
                raise DataError(f"dataset {source!r}: the {part} split is empty; give it some rows")
            frame = frame.copy()
            frame["__split"] = part
            parts.append(frame)
        df = pd.concat(parts, ignore_index=True)

    _require(df, text_column, "text", source)
    _require(df, text_pair_column, "text_pair", source)
    if task == "classification":
        _require(df, label_column, "label", source)
    cols = {"text": df[text_column]}
    if text_pair_column:
        cols["text_pair"] = df[text_pair_column]
    if task == "classification":
        cols["label"] = df[label_column]
    if "doc" in df.columns and task == "causal_lm":
        cols["doc"] = df["doc"]
    if "__split" in df.columns:
        cols["__split"] = df["__split"]
    raw = pd.DataFrame(cols)
    text_cols = ["text"] + (["text_pair"] if text_pair_column else [])
    # A text that occurs in both given splits is kept in the test split only.
    if "__split" in raw.columns:
        raw = raw.sort_values("__split", kind="stable", key=lambda s: s.map({"test": 0, "train": 1}))
    raw, stats = dedup_frame(raw, text_cols, name=source)
    if "__split" in raw.columns:
        raw = raw.sort_index()
    ids = np.arange(len(raw), dtype=np.int64)

    labels: np.ndarray | None = None
    label_names: list[str] = []
    if task == "classification":
        labels, label_names = encode_labels(raw["label"], name=source, column=label_column)
    if "__split" in raw.columns:
        is_test = (raw["__split"] == "test").to_numpy()
        train_pos, test_pos = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    elif task == "classification":
        train_pos, test_pos = stratified_split(labels, test_size=test_size, seed=seed)
    else:
        groups = raw["doc"].astype(str).to_numpy() if "doc" in raw.columns else ids.astype(str)
        train_pos, test_pos = group_split(groups, test_size=test_size, seed=seed)

    texts = raw["text"].astype(str).tolist()
    pairs = raw["text_pair"].astype(str).tolist() if text_pair_column else None
    doc_codes = None
    if task == "causal_lm":
        docs = raw["doc"].astype(str) if "doc" in raw.columns else pd.Series(ids.astype(str))
        doc_codes = pd.factorize(docs)[0].astype(np.int64)
    full = TextSplit(ids=ids, texts=texts, labels=labels, texts_pair=pairs, doc_ids=doc_codes)
    train, test = full.subset(train_pos), full.subset(test_pos)
    if max_train is not None and max_train < len(train):
        train = train.subset(stratified_subsample(train.labels, int(max_train), seed=seed, n=len(train)))
    if max_test is not None and max_test < len(test):
        test = test.subset(stratified_subsample(test.labels, int(max_test), seed=seed + 1, n=len(test)))
    for part, split in (("train", train), ("test", test)):
        if len(split) == 0:
            raise DataError(f"dataset {source!r}: the {part} split is empty after de-duplication; add data or lower test_size")
    if task == "classification" and len(np.unique(train.labels)) < 2:
        raise DataError(f"dataset {source!r}: the train split has only one class; use more data or another split")
    info = {"source": source, "task": task, "seed": seed, **stats, "train": len(train), "test": len(test)}
    log.info("loaded %s: %d train / %d test (%s)", source, len(train), len(test), task)
    return TextDataset(name=source, task=task, train=train, test=test, label_names=label_names, info=info)


def describe_builtin() -> list[dict[str, str]]:
    return [{"name": s.name, "task": s.task, "description": s.description, "source": s.source} for s in BUILTIN.values()]
