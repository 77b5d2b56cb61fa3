"""Models by name: built-in offline models, tiny test models, any Hugging Face name or folder."""

from .embed import embed_texts, mean_pool
from .registry import MODELS, LoadedModel, describe_models, load_model

__all__ = ["MODELS", "LoadedModel", "describe_models", "embed_texts", "load_model", "mean_pool"]
