"""De-duplication, stable ids and deterministic stratified splits (pure functions)."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..errors import DataError

log = logging.getLogger(__name__)
_NOT_SCALAR = (list, tuple, dict, set, np.ndarray)


def normalise_text(s: str) -> str:
    return " ".join(str(s).split())


def check_scalar_column(values: pd.Series, *, where: str, column: str, role: str) -> None:
    """Refuse a text or label column that holds lists or mappings (e.g. multi-label JSON, Parquet lists)."""
    bad = values.map(lambda v: isinstance(v, _NOT_SCALAR)).to_numpy(dtype=bool)
    if not bad.any():
        return
    example = values[bad].iloc[0]
    example = example.tolist() if isinstance(example, np.ndarray) else example
    kind = "mappings" if isinstance(example, dict) else "lists"
    fix = ("a classification label must be one value (multi-label data is not supported): keep one label per "
           "row, or name another column with data.label_column=..." if role == "label" else
           "each row needs one string: join the pieces into one text, or name another column with "
           f"data.{role}_column=...")
    raise DataError(f"{where}: {role} column {column!r} holds {kind}, not single values "
                    f"({int(bad.sum())} of {len(values)} rows, e.g. {str(example)[:80]}); {fix}")


def dedup_frame(df: pd.DataFrame, text_cols: list[str], *, name: str,
                columns: list[str] | None = None) -> tuple[pd.DataFrame, dict]:
    """Drop rows with an empty text and rows whose (normalised) text repeats an earlier one.

    Rows whose text appears with *different* labels are all dropped (their label is ambiguous; a
    warning says how many). ``columns``: the user's names of ``text_cols``, for messages.
    """
    n0 = len(df)
    shown = ", ".join(repr(c) for c in (columns or text_cols))
    df = df.copy()
    for c in text_cols:
        df[c] = df[c].map(lambda x: normalise_text(x) if isinstance(x, str) else x)
    empty = np.zeros(len(df), dtype=bool)
    for c in text_cols:
        empty |= df[c].isna().to_numpy() | (df[c].astype(str).str.len() == 0).to_numpy()
    df = df[~empty]
    if len(df) == 0:
        raise DataError(f"dataset {name!r}: all {n0} rows have an empty text in column {shown}; check that "
                        "data.text_column (and data.text_pair_column) name the columns that hold the text")
    key = df[text_cols].astype(str).agg("\x1f".join, axis=1)
    conflicting = 0
    if "label" in df.columns:
        n_labels = df.groupby(key)["label"].transform("nunique")
        conflicting = int((n_labels > 1).sum())
        df = df[(n_labels <= 1).to_numpy()]
        key = key[(n_labels <= 1).to_numpy()]
        if conflicting and len(df) == 0:
            raise DataError(
                f"dataset {name!r}: every text appears with different labels ({conflicting} rows), so all of "
                "them were dropped as ambiguous and none is left; check that data.label_column names the label "
                "column, or give each text a single label")
        if conflicting:
            log.warning("dataset %r: dropped %d rows whose text appears with different labels (ambiguous)",
                        name, conflicting)
    dup = key.duplicated(keep="first").to_numpy()
    df = df[~dup].reset_index(drop=True)
    return df, {"rows_read": n0, "empty_dropped": int(empty.sum()), "duplicates_dropped": int(dup.sum()),
                "conflicting_label_dropped": conflicting, "rows": len(df)}


def stratified_split(
    labels: np.ndarray, *, test_size: float | int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Positions of train and test rows; each class split in the same proportion.

    ``test_size``: a fraction in (0, 1) or a count. Deterministic for a given seed.
    """
    from .._validate import check_size

    test_size = check_size("test_size", test_size)  # 1.5 is neither a fraction nor a count
    n = len(labels)
    n_test = int(round(test_size * n)) if isinstance(test_size, float) else int(test_size)
    if not 0 < n_test < n:
        raise DataError(
            f"test_size={test_size!r} leaves {n_test} test and {n - n_test} train examples out of {n}; "
            "choose a test size between 1 and the dataset size minus 1"
        )
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    # Largest-remainder allocation of the test count across classes.
    exact = counts * n_test / n
    alloc = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - alloc), kind="stable")[: n_test - alloc.sum()]:
        alloc[i] += 1
    test = []
    for c, k in zip(classes, alloc):
        pos = np.flatnonzero(labels == c)
        test.append(rng.permutation(pos)[:k])
    test_pos = np.sort(np.concatenate(test))
    mask = np.ones(n, dtype=bool)
    mask[test_pos] = False
    return np.flatnonzero(mask), test_pos


def group_split(groups: np.ndarray, *, test_size: float | int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split rows so that no group (document) has rows on both sides."""
    uniq = np.unique(groups)
    from .._validate import check_size

    test_size = check_size("test_size", test_size)
    n_test = int(round(test_size * len(uniq))) if isinstance(test_size, float) else int(test_size)
    if not 0 < n_test < len(uniq):
        raise DataError(
            f"test_size={test_size!r} must leave at least one document on each side "
            f"({len(uniq)} documents); choose a smaller test size"
        )
    rng = np.random.default_rng(seed)
    test_groups = set(rng.permutation(uniq)[:n_test].tolist())
    is_test = np.array([g in test_groups for g in groups])
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def stratified_subsample(labels: np.ndarray | None, k: int, *, seed: int, n: int | None = None) -> np.ndarray:
    """Sorted positions of a class-proportional random subsample of size ``k``.

    Without labels (causal-LM text) the sample is uniform over ``n`` rows, so ``n`` is required.
    """
    if labels is None and n is None:
        raise ValueError("stratified_subsample: pass n (the number of rows) when labels is None")
    n = len(labels) if labels is not None else int(n)
    if k >= n:
        return np.arange(n)
    if labels is None:
        return np.sort(np.random.default_rng(seed).permutation(n)[:k])
    _, test = stratified_split(labels, test_size=k, seed=seed)
    return test


def encode_labels(values: pd.Series, *, name: str, column: str) -> tuple[np.ndarray, list[str]]:
    """Map label values to 0..K-1 (sorted by their string form); refuse a single class."""
    if values.isna().any():
        raise DataError(
            f"dataset {name!r}: label column {column!r} has {int(values.isna().sum())} missing values; "
            "drop those rows or fill them"
        )
    as_str = values.astype(str)
    names = sorted(as_str.unique())
    if len(names) < 2:
        raise DataError(
            f"dataset {name!r}: label column {column!r} has only one class ({names[0]!r}); "
            "a classifier needs at least two. Check that you named the right column."
        )
    index = {n: i for i, n in enumerate(names)}
    return as_str.map(index).to_numpy(dtype=np.int64), names


def flip_labels(labels: np.ndarray, *, fraction: float, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pure: flip ``round(fraction * n)`` labels, chosen uniformly, each to a different class drawn uniformly.

    Returns ``(new_labels, flipped_positions)`` (positions sorted). For planted-noise experiments:
    the flipped examples are the planted truth a scorer should rank as hard.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"label noise fraction must be in [0, 1], got {fraction}")
    if num_classes < 2:
        raise ValueError(f"label noise needs at least 2 classes, got {num_classes}")
    rng = np.random.default_rng(seed)
    k = int(round(fraction * len(labels)))
    pos = np.sort(rng.permutation(len(labels))[:k])
    shift = rng.integers(1, num_classes, size=k)  # 1 .. C-1: never the original class
    out = labels.copy()
    out[pos] = (labels[pos] + shift) % num_classes
    return out, pos
