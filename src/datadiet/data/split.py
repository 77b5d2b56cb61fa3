"""De-duplication, stable ids and deterministic stratified splits (pure functions)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import DataError


def normalise_text(s: str) -> str:
    return " ".join(str(s).split())


def dedup_frame(df: pd.DataFrame, text_cols: list[str], *, name: str) -> tuple[pd.DataFrame, dict]:
    """Drop rows with an empty text and rows whose (normalised) text repeats an earlier one.

    Rows whose text appears with *different* labels are all dropped (their label is ambiguous).
    """
    n0 = len(df)
    df = df.copy()
    for c in text_cols:
        df[c] = df[c].map(lambda x: normalise_text(x) if isinstance(x, str) else x)
    empty = np.zeros(len(df), dtype=bool)
    for c in text_cols:
        empty |= df[c].isna().to_numpy() | (df[c].astype(str).str.len() == 0).to_numpy()
    df = df[~empty]
    key = df[text_cols].astype(str).agg("\x1f".join, axis=1)
    conflicting = 0
    if "label" in df.columns:
        n_labels = df.groupby(key)["label"].transform("nunique")
        conflicting = int((n_labels > 1).sum())
        df = df[(n_labels <= 1).to_numpy()]
        key = key[(n_labels <= 1).to_numpy()]
    dup = key.duplicated(keep="first").to_numpy()
    df = df[~dup].reset_index(drop=True)
    if len(df) == 0:
        raise DataError(f"dataset {name!r} has no non-empty texts; check the text column(s) {text_cols}")
    return df, {"rows_read": n0, "empty_dropped": int(empty.sum()), "duplicates_dropped": int(dup.sum()),
                "conflicting_label_dropped": conflicting, "rows": len(df)}


def stratified_split(
    labels: np.ndarray, *, test_size: float | int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Positions of train and test rows; each class split in the same proportion.

    ``test_size``: a fraction in (0, 1) or a count. Deterministic for a given seed.
    """
    n = len(labels)
    n_test = int(round(test_size * n)) if isinstance(test_size, float) and test_size < 1 else int(test_size)
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
    n_test = int(round(test_size * len(uniq))) if isinstance(test_size, float) and test_size < 1 else int(test_size)
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
