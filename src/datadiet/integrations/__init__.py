"""Front ends for other training frameworks.

:mod:`datadiet.integrations.hf` holds the Hugging Face ``Trainer`` front end (``DataDietMixin``,
``DataDietTrainer``, ``DataDietCallback``). This package stays import-light: ``transformers`` is
imported only when one of those names is first used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DataDietCallback", "DataDietMixin", "DataDietTrainer"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import hf

        return getattr(hf, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
