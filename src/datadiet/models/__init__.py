"""Models by name: built-in offline models, tiny test models, any Hugging Face name or folder."""

from .registry import MODELS, LoadedModel, describe_models, load_model

__all__ = ["MODELS", "LoadedModel", "describe_models", "load_model"]
