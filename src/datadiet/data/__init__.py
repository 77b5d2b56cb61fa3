"""Datasets: built-in offline corpora, local files, hub names; stable ids; deterministic splits."""

from .builtin import BUILTIN
from .collate import Collator, LMContexts, TokenizedSplit, lm_contexts
from .load import describe_builtin, load_dataset
from .types import TextDataset, TextSplit

__all__ = [
    "BUILTIN", "Collator", "LMContexts", "TokenizedSplit", "TextDataset", "TextSplit",
    "describe_builtin", "lm_contexts", "load_dataset",
]
