"""Online filters: decide per example, during training, which ones get compute."""

from .base import BatchView, Decision, OnlineFilter
from .random_skip import RandomSkip

__all__ = ["BatchView", "Decision", "OnlineFilter", "RandomSkip"]
