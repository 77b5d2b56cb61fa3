"""Input checks shared by the submodular modules (errors are :class:`~datadiet.errors.ConfigError`)."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from ....errors import ConfigError, missing_extra

BACKENDS = ("auto", "faiss", "torch")


def check_embeddings(name: str, x: Any, *, allow_float16: bool = False) -> np.ndarray:
    """A finite float32 matrix [n, d] with n >= 1 and d >= 1 (C-contiguous); with ``allow_float16``
    a float16 matrix is kept as float16 (storage: the caller converts rows to float32 as it goes)."""
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    try:
        a = np.asarray(x)
    except Exception as e:  # noqa: BLE001 - ragged lists and the like
        raise ConfigError(f"{name} must be a 2-D array of numbers [n, d], got {type(x).__name__} ({e})") from None
    if a.ndim != 2:
        raise ConfigError(f"{name} must be a 2-D array [n, d] (one row per example), got shape {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ConfigError(f"{name} must have at least one row and one column, got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ConfigError(f"{name} must hold numbers, got dtype {a.dtype}")
    keep16 = allow_float16 and a.dtype == np.float16
    a = np.ascontiguousarray(a, dtype=np.float16 if keep16 else np.float32)
    # checked CHUNK rows at a time: no n x d temporary for a pool of millions
    if not all(np.isfinite(a[s : s + CHUNK]).all() for s in range(0, a.shape[0], CHUNK)):
        bad = sum(int((~np.isfinite(a[s : s + CHUNK])).any(axis=1).sum()) for s in range(0, a.shape[0], CHUNK))
        raise ConfigError(f"{name} must be finite; {bad} row(s) hold NaN or inf (drop or re-embed those examples)")
    return a


#: rows converted to float32 (and normalised) at a time, so a pool of millions is never copied whole
CHUNK = 65_536


def f32_rows(x: np.ndarray, rows: np.ndarray | slice, *, normalize: bool) -> np.ndarray:
    """Rows of ``x`` (float16 or float32) as a new C-contiguous float32 array, unit-norm with ``normalize``."""
    c = np.array(x[rows], dtype=np.float32, order="C")  # always a copy: normalised in place
    if normalize:
        c /= np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
    return c


def check_square_kernel(name: str, k: Any) -> np.ndarray:
    """A finite float32 square matrix [n, n]."""
    a = np.asarray(k)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] < 1:
        raise ConfigError(f"{name} must be a square 2-D similarity matrix [n, n], got shape {a.shape}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise ConfigError(f"{name} must be finite; it holds NaN or inf")
    return a


def faiss_or_none(backend: str) -> Any:
    """The faiss module if ``backend`` allows it and it is installed; ImportError if it was required."""
    if backend == "torch":
        return None
    try:
        return importlib.import_module("faiss")
    except ImportError:
        if backend == "faiss":
            raise missing_extra("faiss-cpu", "scale") from None
        return None


def faiss_seed(seed: int) -> int:
    """``seed`` in the range of FAISS's C ``int`` seeds (``seed mod 2^31``): the same for seeds below
    ``2^31``; larger ones (the method's derived 32-bit seeds) would otherwise raise an OverflowError."""
    return int(seed) % (1 << 31)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return bool(value)
