"""The in-memory dataset types: plain columns, no framework."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

Task = Literal["classification", "causal_lm"]


@dataclass(frozen=True)
class TextSplit:
    """One split of a text dataset.

    ``ids`` are stable example ids (int64): assigned once, after de-duplication, in source order,
    so they survive shuffling, subsetting and the Trainer's column removal. For causal-LM data the
    rows are documents and ``doc_ids`` carries their document id.
    """

    ids: np.ndarray
    texts: list[str]
    labels: np.ndarray | None = None
    texts_pair: list[str] | None = None
    doc_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.texts)
        for name in ("ids", "labels", "texts_pair", "doc_ids"):
            v = getattr(self, name)
            if v is not None and len(v) != n:
                raise ValueError(f"{name} has {len(v)} rows but texts has {n}")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, positions: np.ndarray | list[int]) -> TextSplit:
        """The rows at ``positions`` (0..len-1), in that order."""
        pos = np.asarray(positions, dtype=np.int64)
        return TextSplit(
            ids=self.ids[pos],
            texts=[self.texts[i] for i in pos],
            labels=None if self.labels is None else self.labels[pos],
            texts_pair=None if self.texts_pair is None else [self.texts_pair[i] for i in pos],
            doc_ids=None if self.doc_ids is None else self.doc_ids[pos],
        )

    def select_ids(self, ids: np.ndarray | list[int]) -> TextSplit:
        """The rows whose stable id is in ``ids`` (in ``ids`` order)."""
        where = {int(i): p for p, i in enumerate(self.ids)}
        missing = [int(i) for i in ids if int(i) not in where]
        if missing:
            raise KeyError(f"{len(missing)} ids are not in this split, e.g. {missing[:5]}")
        return self.subset([where[int(i)] for i in ids])


@dataclass(frozen=True)
class TextDataset:
    """A named dataset with a train and a test split."""

    name: str
    task: Task
    train: TextSplit
    test: TextSplit
    label_names: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def with_train(self, train: TextSplit, **info: Any) -> TextDataset:
        return replace(self, train=train, info={**self.info, **info})
