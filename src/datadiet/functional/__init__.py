"""Pure math on tensors and arrays: no state, no models, no I/O."""

from .losses import per_example_ce, per_example_lm_loss, weighted_mean
from .schedule import linear_warmup_decay

__all__ = ["per_example_ce", "per_example_lm_loss", "weighted_mean", "linear_warmup_decay"]
