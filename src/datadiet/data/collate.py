"""Tokenized datasets and the dynamic-padding collator (every batch keeps its stable ids)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..core.filter import ID_KEY
from .types import TextSplit

CTX_STRIDE = 1 << 20  # context id = document row id * CTX_STRIDE + chunk index


class TokenizedSplit(torch.utils.data.Dataset):
    """A classification split, tokenized once (no padding), one dict per example."""

    def __init__(self, split: TextSplit, tokenizer: Any, *, max_length: int = 64) -> None:
        if split.labels is None:
            raise ValueError("TokenizedSplit is for classification splits; use lm_contexts() for causal-LM text")
        enc = tokenizer(
            split.texts, split.texts_pair, truncation=True, max_length=max_length, padding=False,
        )
        self.features = []
        keys = [k for k in ("input_ids", "token_type_ids") if k in enc]
        for i in range(len(split)):
            f = {k: enc[k][i] for k in keys}
            f["labels"] = int(split.labels[i])
            f[ID_KEY] = int(split.ids[i])
            self.features.append(f)
        self.ids = np.asarray(split.ids)
        self.labels = np.asarray(split.labels)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.features[i]

    def subset(self, positions: Sequence[int]) -> TokenizedSplit:
        """The rows at ``positions`` (in that order) as a split of their own: ``ids``, ``labels`` and
        (after label noise) ``flipped_ids``, the flipped ids among these rows, stay aligned."""
        p = np.asarray(positions, dtype=np.int64).reshape(-1)
        sub = TokenizedSplit.__new__(TokenizedSplit)
        sub.features = [dict(self.features[i]) for i in p.tolist()]  # own dicts: label noise stays local
        sub.ids = self.ids[p]
        sub.labels = self.labels[p]
        flipped = getattr(self, "flipped_ids", None)
        if flipped is not None:
            sub.flipped_ids = sub.ids[np.isin(sub.ids, flipped)]
        return sub


class LMContexts(torch.utils.data.Dataset):
    """Fixed-length token contexts cut from documents; ``doc_ids`` keep where each came from."""

    def __init__(self, input_ids: np.ndarray, ids: np.ndarray, doc_ids: np.ndarray) -> None:
        self.input_ids = np.asarray(input_ids, dtype=np.int64)
        self.ids = np.asarray(ids, dtype=np.int64)
        self.doc_ids = np.asarray(doc_ids, dtype=np.int64)
        self.labels = None

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.input_ids[i].tolist(), ID_KEY: int(self.ids[i]), "doc_id": int(self.doc_ids[i])}

    def subset(self, positions: Sequence[int]) -> LMContexts:
        """The contexts at ``positions`` (in that order), ``ids`` and ``doc_ids`` aligned."""
        p = np.asarray(positions, dtype=np.int64).reshape(-1)
        return LMContexts(self.input_ids[p], self.ids[p], self.doc_ids[p])


def lm_contexts(split: TextSplit, tokenizer: Any, *, context_length: int = 64, max_contexts: int | None = None,
                seed: int = 0) -> LMContexts:
    """Cut each document into non-overlapping ``context_length``-token windows (tail dropped)."""
    if context_length < 2:
        raise ValueError(f"context_length must be >= 2, got {context_length}")
    enc = tokenizer(split.texts, add_special_tokens=False)["input_ids"]
    rows, ids, docs = [], [], []
    doc_ids = split.doc_ids if split.doc_ids is not None else split.ids
    for doc_row, doc, toks in zip(split.ids, doc_ids, enc):
        for j in range(len(toks) // context_length):
            rows.append(toks[j * context_length : (j + 1) * context_length])
            ids.append(int(doc_row) * CTX_STRIDE + j)
            docs.append(int(doc))
    if not rows:
        raise ValueError(
            f"no document is at least {context_length} tokens long; lower context_length"
        )
    ctx = LMContexts(np.asarray(rows), np.asarray(ids), np.asarray(docs))
    if max_contexts is not None and max_contexts < len(ctx):
        keep = np.sort(np.random.default_rng(seed).permutation(len(ctx))[:max_contexts])
        ctx = ctx.subset(keep)
    return ctx


class Collator:
    """Right-pads a list of feature dicts into tensors (dynamic padding: to the batch's longest)."""

    def __init__(self, *, pad_token_id: int) -> None:
        self.pad_token_id = int(pad_token_id)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        seq_len = max(len(f["input_ids"]) for f in features)
        n = len(features)
        input_ids = torch.full((n, seq_len), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((n, seq_len), dtype=torch.long)
        out: dict[str, torch.Tensor] = {}
        has_tt = "token_type_ids" in features[0]
        tt = torch.zeros((n, seq_len), dtype=torch.long) if has_tt else None
        for i, f in enumerate(features):
            L = len(f["input_ids"])
            input_ids[i, :L] = torch.as_tensor(f["input_ids"])
            mask[i, :L] = 1
            if tt is not None:
                tt[i, :L] = torch.as_tensor(f["token_type_ids"])
        out["input_ids"] = input_ids
        out["attention_mask"] = mask
        if tt is not None:
            out["token_type_ids"] = tt
        for key in ("labels", ID_KEY, "doc_id"):
            if key in features[0]:
                out[key] = torch.as_tensor([f[key] for f in features], dtype=torch.long)
        return out
