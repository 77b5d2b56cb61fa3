"""One entry point for every dataset source: built-in name, local file, or Hugging Face hub name."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataDietError, DataError, missing_extra, suggest
from .builtin import BUILTIN
from .split import (check_scalar_column, dedup_frame, encode_labels, group_split, stratified_split,
                    stratified_subsample)
from .types import TextDataset, TextSplit

log = logging.getLogger(__name__)
FILE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
DEFAULT_LABEL_COLUMN = "label"  # data.label_column's default: a file without it is causal-LM text


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
        except Exception as e:  # noqa: BLE001 - pyarrow's errors (ArrowInvalid, OSError ...): one clear message
            raise DataError(f"could not read {str(path)!r} as Parquet ({type(e).__name__}: {str(e).strip()[:200]}). "
                            "Check that it is a complete Parquet file (not truncated, not another format "
                            "renamed to .parquet).") from None
    raise DataError(f"unsupported file type {suf!r} for {path}; use one of {', '.join(FILE_SUFFIXES)}")


def _hub_frames(name: str) -> dict[str, pd.DataFrame]:
    try:
        import datasets
    except ImportError:
        raise missing_extra("datasets", "hf") from None
    from .._hub import offline_if_unreachable

    with offline_if_unreachable() as offline:  # no network: the local cache only, at once (not 27 s of retries)
        try:
            dd = datasets.load_dataset(name)
        except Exception as e:  # noqa: BLE001 - offline or unknown: one clear message
            raise DataDietError(
                f"unknown dataset {name!r}: it is not built in ({', '.join(sorted(BUILTIN))}), not a local "
                f"file, and loading it from the Hugging Face hub failed ({type(e).__name__}: {str(e)[:200]}"
                + (f"; {offline}" if offline else "") + "). "
                f"Check the name, or pass a path to a CSV/TSV/JSONL/Parquet file.{suggest(name, BUILTIN)}"
            ) from None
    return {k: v.to_pandas() for k, v in dd.items()}


def _require(df: pd.DataFrame, col: str | None, role: str, source: str, hint: str = "") -> None:
    if col is not None and col not in df.columns:
        raise DataError(
            f"{source}: no {role} column {col!r}. Columns found: {', '.join(map(str, df.columns))}. "
            f"Name the right one with data.{role}_column=...{suggest(col, map(str, df.columns))}{hint}"
        )


def _read_test_file(test_file: str) -> pd.DataFrame:
    if not Path(test_file).exists():
        raise DataError(f"test file {test_file!r} (data.test_file) does not exist; check the path")
    return read_table(Path(test_file))


def _check_test_labels(labels: np.ndarray, names: list[str], is_test: np.ndarray, *, source: str,
                       test_where: str) -> None:
    """Refuse a given test split that shares no label with training; warn on classes training never saw."""
    train_set, test_set = set(np.unique(labels[~is_test]).tolist()), set(np.unique(labels[is_test]).tolist())

    def show(codes: set[int]) -> str:
        shown = [repr(names[i]) for i in sorted(codes)]
        return ", ".join(shown[:10]) + (f", ... ({len(shown)} in all)" if len(shown) > 10 else "")

    if not train_set & test_set:
        raise DataError(
            f"{test_where} shares no label with the training data ({source!r}): training labels {show(train_set)}; "
            f"test labels {show(test_set)}. Every test example would count as wrong. Check that both name the "
            "classes the same way (e.g. 'pos' and not 1) in the same label column, or give another data.test_file"
        )
    unseen = test_set - train_set
    if unseen:
        n = int(np.isin(labels[is_test], sorted(unseen)).sum())
        log.warning("%s: %d test examples have labels that are not in the training data (%s); the model never "
                    "learns those classes, so they count as errors", test_where, n, show(unseen))


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
    test_where = f"test file {test_file!r}" if test_file else ""
    split_given: tuple[pd.DataFrame, pd.DataFrame] | None = None
    if name in BUILTIN:
        spec = BUILTIN[name]
        task = task or spec.task
        test_size = spec.test_size if test_size is None else test_size
        test_df = None
        if test_file:
            # A built-in dataset has columns 'text' (and 'label'); the test file's are data.text_column
            # and data.label_column (by default the same names).
            test_df = _read_test_file(test_file)
            _require(test_df, text_column, "text", test_where)
            cols = {"text": test_df[text_column]}
            if task == "classification":
                _require(test_df, label_column, "label", test_where)
                cols["label"] = test_df[label_column]
            test_df = pd.DataFrame(cols)
        df = spec.loader()
        if test_df is not None:
            split_given = (df, test_df)
        text_column, label_column, text_pair_column = "text", "label", None
    elif Path(name).suffix.lower() in FILE_SUFFIXES or Path(name).exists():
        path = Path(name)
        if not path.exists():
            raise DataError(f"data file {name!r} does not exist; check the path")
        df = read_table(path)
        if test_file:
            split_given = (df, _read_test_file(test_file))
    else:
        frames = _hub_frames(name)
        if "train" not in frames:
            raise DataError(f"hub dataset {name!r} has no 'train' split (splits: {', '.join(frames)})")
        df = frames["train"]
        test_key = next((k for k in ("test", "validation") if k in frames), None)
        if test_file:
            split_given = (df, _read_test_file(test_file))
        elif test_key:
            split_given = (frames["train"], frames[test_key])
            test_where = f"dataset {name!r} ({test_key!r} split)"
    if task is None:
        # Inferred only when no label column was named: a named one that is not there is an error.
        if label_column in df.columns:
            task = "classification"
        elif label_column != DEFAULT_LABEL_COLUMN:
            _require(df, label_column, "label", source,
                     hint=" (or set data.task=causal_lm to train a language model on the text alone)")
        else:
            task = "causal_lm"
            log.info("%s has no %r column: treating it as causal-LM text (name the label column with "
                     "data.label_column=... for classification)", source, label_column)
    if task not in ("classification", "causal_lm"):
        raise DataError(f"task must be 'classification' or 'causal_lm', got {task!r}")
    test_size = 0.2 if test_size is None else test_size
    if len(df) == 0:
        raise DataError(f"dataset {source!r} is empty (0 rows); check the file or the name")

    given = [("train", df, source)] + ([("test", split_given[1], test_where)] if split_given is not None else [])
    both = " (data.label_column names the label column of the data and of the test file alike)"
    parts = []
    for part, frame, where in given:
        if len(frame) == 0:
            raise DataError(f"{where} is empty (0 rows); give it some rows")
        _require(frame, text_column, "text", where)
        _require(frame, text_pair_column, "text_pair", where)
        check_scalar_column(frame[text_column], where=where, column=text_column, role="text")
        cols = {"text": frame[text_column]}
        if text_pair_column:
            check_scalar_column(frame[text_pair_column], where=where, column=text_pair_column, role="text_pair")
            cols["text_pair"] = frame[text_pair_column]
        if task == "classification":
            _require(frame, label_column, "label", where, hint=both if part == "test" else "")
            check_scalar_column(frame[label_column], where=where, column=label_column, role="label")
            cols["label"] = frame[label_column]
        if "doc" in frame.columns and task == "causal_lm":
            cols["doc"] = frame["doc"]
        part_frame = pd.DataFrame(cols)
        if split_given is not None:
            part_frame["__split"] = part
        parts.append(part_frame)
    raw = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
    text_cols = ["text"] + (["text_pair"] if text_pair_column else [])
    # A text that occurs in both given splits is kept in the test split only.
    if "__split" in raw.columns:
        raw = raw.sort_values("__split", kind="stable", key=lambda s: s.map({"test": 0, "train": 1}))
    raw, stats = dedup_frame(raw, text_cols, name=source,
                             columns=[text_column] + ([text_pair_column] if text_pair_column else []))
    if "__split" in raw.columns:
        raw = raw.sort_index()
        is_test = (raw["__split"] == "test").to_numpy()
        if not is_test.any():
            raise DataError(f"{test_where}: no row is left after dropping empty texts and texts with conflicting "
                            "labels; check its text and label columns")
        if is_test.all():
            raise DataError(f"dataset {source!r}: no training row is left after de-duplication (empty texts, "
                            f"conflicting labels, or texts that are also in {test_where}, which keeps them for "
                            "testing); give a test file that does not repeat the training data")
    if task == "classification":
        missing = raw["label"].isna().to_numpy()
        for part, where in (("train", f"dataset {source!r}"), ("test", test_where)):
            in_part = missing if "__split" not in raw.columns else missing & ((raw["__split"] == part).to_numpy())
            if in_part.any():
                raise DataError(f"{where}: label column {label_column!r} has {int(in_part.sum())} missing values; "
                                "drop those rows or fill them")
    ids = np.arange(len(raw), dtype=np.int64)

    labels: np.ndarray | None = None
    label_names: list[str] = []
    if task == "classification":
        labels, label_names = encode_labels(raw["label"], name=source, column=label_column)
        if "__split" in raw.columns:
            _check_test_labels(labels, label_names, is_test, source=source, test_where=test_where)
    if "__split" in raw.columns:
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
