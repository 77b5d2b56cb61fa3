"""Offline selection: decide before training (or every R steps) which examples to train on."""

from .random_subset import random_subset
from .selection import Selection

__all__ = ["Selection", "random_subset"]
