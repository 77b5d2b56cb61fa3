"""datadiet: data-efficient fine-tuning of language models.

Train on the examples that matter; skip or prune the rest. The top-level package imports only
torch-free-of-extras modules; Hugging Face pieces live in :mod:`datadiet.integrations.hf`,
:mod:`datadiet.models` and :mod:`datadiet.data`, which import ``transformers`` when used.
"""

import logging

from .config import RunConfig, load_config
from .core.engine import Counts, StepEngine, StepResult
from .errors import ConfigError, DataDietError, DataError, RunExistsError
from .core.method import Method, Plan, PlanContext
from .online import BatchView, Decision, OnlineFilter, RandomSkip
from .methods.registry import METHODS, build_method
from .core.selection import Selection
from .methods.random_subset import random_subset

__version__ = "0.1.0"
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "BatchView", "ConfigError", "Counts", "DataDietError", "DataError", "Decision", "METHODS", "Method",
    "OnlineFilter", "Plan", "PlanContext", "RandomSkip", "RunConfig", "RunExistsError", "Selection",
    "StepEngine", "StepResult", "build_method", "load_config", "random_subset",
]
