"""Mixed precision: the one autocast helper every forward in the library goes through."""

from __future__ import annotations

import contextlib

import torch


def autocast(dtype: torch.dtype | None, device: torch.device | str):
    """``torch.autocast`` to ``dtype`` on ``device`` (a device or its type), or nothing when ``dtype`` is ``None``."""
    if dtype is None:
        return contextlib.nullcontext()
    device_type = device if isinstance(device, str) else device.type
    return torch.autocast(device_type=device_type, dtype=dtype)
