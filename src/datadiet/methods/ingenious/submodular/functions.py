"""Submodular objectives over a similarity kernel: their values, and the gain oracles greedy uses.

With ``K[i, j]`` = how well ``j`` represents ``i`` (dense ``[n, n]`` or a :class:`SparseKernel`),
``K+ = max(K, 0)`` and ``S`` the selected set (``f(empty) = 0`` for all three):

- ``facility_location`` (default): ``f(S) = sum_i max(0, max_{j in S} K[i, j])``. Negative
  similarities count as 0 (each example starts uncovered), which keeps ``f`` monotone submodular.
- ``graph_cut`` with ``lam``: ``f(S) = sum_{i in V, j in S} K+[i, j] - lam * sum_{i, j in S} K+[i, j]``;
  monotone for ``lam <= 0.5``, submodular for every ``lam >= 0``.
- ``log_determinant`` with ``reg > 0``: ``f(S) = log det(K[S, S] + reg * I)``; needs a symmetric
  positive semi-definite kernel (cosine and RBF kernels are), dense only. Submodular but not monotone:
  gains fall below 0 once ``K[S, S]`` has no new direction left (``log reg`` for exact duplicates).

Gain oracles keep ``O(n)`` state (log-determinant: ``O(n * |S|)``, an incremental Cholesky factor),
so one marginal gain costs ``O(n)`` for dense facility location, ``O(nnz of the column)`` for sparse,
``O(1)`` for graph cut and log-determinant (whose ``add`` costs ``O(n * |S|)``).
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np

from ...._validate import check_choice, check_float
from ....errors import ConfigError
from .kernels import SparseKernel

log = logging.getLogger(__name__)

OBJECTIVES = ("facility_location", "graph_cut", "log_determinant")
Kernel = np.ndarray | SparseKernel


class GainOracle(Protocol):
    n: int

    def gains(self, cand: np.ndarray) -> np.ndarray:
        """Marginal gains ``f(S + j) - f(S)`` of the candidates ``cand`` (int64), float64."""

    def add(self, j: int) -> None:
        """Add ``j`` to ``S``."""


def _is_symmetric(k: np.ndarray, block: int = 1024) -> bool:
    n = k.shape[0]
    for s in range(0, n, block):
        e = min(n, s + block)
        if not np.array_equal(k[s:e, s:], k[s:, s:e].T):
            return False
    return True


def _columns_as_rows(k: np.ndarray) -> np.ndarray:
    """``K.T`` as a C-contiguous array: ``K`` itself when symmetric (no copy)."""
    if _is_symmetric(k):
        return k
    log.debug("kernel is not symmetric: keeping a transposed copy (%d MB)", k.nbytes >> 20)
    return np.ascontiguousarray(k.T)


def _segments(indptr: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat positions of the CSR rows ``cand`` and each row's start offset / length in that flat list."""
    starts = indptr[cand]
    lens = indptr[cand + 1] - starts
    offs = np.zeros(len(cand), dtype=np.int64)
    np.cumsum(lens[:-1], out=offs[1:])
    total = int(lens.sum())
    pos = np.arange(total, dtype=np.int64) + np.repeat(starts - offs, lens)
    return pos, offs, lens


def _segment_sum(vals: np.ndarray, offs: np.ndarray, lens: np.ndarray) -> np.ndarray:
    out = np.zeros(len(lens), dtype=np.float64)
    nz = lens > 0
    if vals.size:
        out[nz] = np.add.reduceat(vals, offs[nz])
    return out


class FacilityLocationDense:
    def __init__(self, kernel: np.ndarray) -> None:
        self.n = kernel.shape[0]
        self.cols = _columns_as_rows(kernel)  # cols[j] = K[:, j]
        self.cur = np.zeros(self.n, dtype=np.float32)  # max_{s in S} K[i, s], starting at 0

    def gains(self, cand: np.ndarray) -> np.ndarray:
        t = self.cols[cand]
        t -= self.cur
        np.maximum(t, 0.0, out=t)
        return t.sum(axis=1).astype(np.float64)

    def add(self, j: int) -> None:
        np.maximum(self.cur, self.cols[j], out=self.cur)


class FacilityLocationSparse:
    def __init__(self, kernel: SparseKernel) -> None:
        self.n = kernel.n
        self.cols = kernel.transpose()  # row j of cols = the examples j represents
        self.cur = np.zeros(self.n, dtype=np.float32)

    def gains(self, cand: np.ndarray) -> np.ndarray:
        c = self.cols
        pos, offs, lens = _segments(c.indptr, cand)
        v = c.data[pos] - self.cur[c.indices[pos]]
        np.maximum(v, 0.0, out=v)
        return _segment_sum(v, offs, lens)

    def add(self, j: int) -> None:
        c = self.cols
        s, e = c.indptr[j], c.indptr[j + 1]
        rows = c.indices[s:e]
        self.cur[rows] = np.maximum(self.cur[rows], c.data[s:e])


class GraphCutDense:
    def __init__(self, kernel: np.ndarray, lam: float) -> None:
        self.n, self.lam, self.k = kernel.shape[0], lam, kernel
        self.cols = _columns_as_rows(kernel)
        self.modular = np.zeros(self.n, dtype=np.float64)  # sum_i K+[i, j]
        for s in range(0, self.n, 1024):
            self.modular += np.maximum(kernel[s : s + 1024], 0.0).sum(axis=0, dtype=np.float64)
        self.diag = np.maximum(np.diagonal(kernel), 0.0).astype(np.float64)
        self.in_col = np.zeros(self.n, dtype=np.float64)  # sum_{s in S} K+[s, j]
        self.in_row = np.zeros(self.n, dtype=np.float64)  # sum_{s in S} K+[j, s]

    def gains(self, cand: np.ndarray) -> np.ndarray:
        return self.modular[cand] - self.lam * (self.in_col[cand] + self.in_row[cand] + self.diag[cand])

    def add(self, j: int) -> None:
        self.in_col += np.maximum(self.k[j], 0.0)
        self.in_row += np.maximum(self.cols[j], 0.0)


class GraphCutSparse:
    def __init__(self, kernel: SparseKernel, lam: float) -> None:
        self.n, self.lam, self.k = kernel.n, lam, kernel
        self.cols = kernel.transpose()
        pos = np.maximum(kernel.data, 0.0).astype(np.float64)
        self.modular = np.bincount(kernel.indices, weights=pos, minlength=self.n)
        rows = np.repeat(np.arange(self.n), np.diff(kernel.indptr))
        on_diag = kernel.indices == rows
        self.diag = np.zeros(self.n, dtype=np.float64)
        self.diag[rows[on_diag]] = pos[on_diag]
        self.in_col = np.zeros(self.n, dtype=np.float64)
        self.in_row = np.zeros(self.n, dtype=np.float64)

    def gains(self, cand: np.ndarray) -> np.ndarray:
        return self.modular[cand] - self.lam * (self.in_col[cand] + self.in_row[cand] + self.diag[cand])

    def add(self, j: int) -> None:
        for m, acc in ((self.k, self.in_col), (self.cols, self.in_row)):
            s, e = m.indptr[j], m.indptr[j + 1]
            acc[m.indices[s:e]] += np.maximum(m.data[s:e], 0.0)


class LogDeterminantDense:
    """Incremental Cholesky of ``K[S, S] + reg I``: ``d2[j]`` is the Schur complement of ``j`` given ``S``
    and ``f(S + j) - f(S) = log d2[j]``."""

    def __init__(self, kernel: np.ndarray, reg: float) -> None:
        if not _is_symmetric(kernel):
            raise ConfigError("log_determinant needs a symmetric positive semi-definite kernel (cosine or rbf); "
                              "the given kernel is not symmetric")
        self.n, self.k, self.reg = kernel.shape[0], kernel, reg
        self.d2 = np.diagonal(kernel).astype(np.float64) + reg
        self.v = np.zeros((self.n, 16), dtype=np.float64)  # rows of the Cholesky factor, one column per pick
        self.t = 0

    def gains(self, cand: np.ndarray) -> np.ndarray:
        return np.log(np.maximum(self.d2[cand], np.finfo(np.float64).tiny))

    def add(self, j: int) -> None:
        if self.t == self.v.shape[1]:
            self.v = np.concatenate([self.v, np.zeros_like(self.v)], axis=1)
        t = self.t
        col = self.k[j].astype(np.float64)
        col[j] += self.reg
        if t:
            col -= self.v[:, :t] @ self.v[j, :t]
        e = col / np.sqrt(max(self.d2[j], np.finfo(np.float64).tiny))
        self.v[:, t] = e
        self.d2 -= e * e
        self.t += 1


def make_oracle(kernel: Kernel, *, objective: str, lam: float, reg: float) -> GainOracle:
    """The gain oracle for ``objective`` over ``kernel`` (dense matrix or :class:`SparseKernel`)."""
    objective = check_choice("objective", objective, OBJECTIVES)
    sparse = isinstance(kernel, SparseKernel)
    if objective == "facility_location":
        return FacilityLocationSparse(kernel) if sparse else FacilityLocationDense(kernel)
    if objective == "graph_cut":
        return GraphCutSparse(kernel, lam) if sparse else GraphCutDense(kernel, lam)
    if sparse:
        raise ConfigError("log_determinant needs a dense kernel (kernel='dense'); a kNN kernel is not positive semi-definite")
    return LogDeterminantDense(kernel, reg)


def check_kernel(name: str, kernel: object) -> Kernel:
    """A :class:`SparseKernel` as is, or a finite float32 square dense matrix."""
    if isinstance(kernel, SparseKernel):
        return kernel
    from ._checks import check_square_kernel

    return check_square_kernel(name, kernel)


def _check_subset(subset: object, n: int) -> np.ndarray:
    s = np.asarray(subset, dtype=np.int64).ravel()
    if s.size and (s.min() < 0 or s.max() >= n):
        raise ConfigError(f"subset indices must lie in [0, {n}), got min {s.min()} max {s.max()}")
    if len(np.unique(s)) != len(s):
        raise ConfigError("subset must not repeat an index")
    return s


def objective_value(kernel: Kernel, subset: np.ndarray, *, objective: str = "facility_location",
                    lam: float = 0.4, reg: float = 1.0) -> float:
    """Pure: ``f(subset)`` straight from the definition (no oracle), for checks and benchmarks."""
    kernel = check_kernel("kernel", kernel)
    objective = check_choice("objective", objective, OBJECTIVES)
    lam = check_float("lam", lam, min=0.0)
    reg = check_float("reg", reg, min=0.0, min_open=True)
    n = kernel.n if isinstance(kernel, SparseKernel) else kernel.shape[0]
    s = _check_subset(subset, n)
    if s.size == 0:
        return 0.0
    if isinstance(kernel, SparseKernel):
        if objective == "log_determinant":
            raise ConfigError("log_determinant needs a dense kernel")
        in_s = np.zeros(n, dtype=bool)
        in_s[s] = True
        keep = in_s[kernel.indices]
        vals = np.where(keep, np.maximum(kernel.data, 0.0), 0.0).astype(np.float64)
        lens = np.diff(kernel.indptr)
        if objective == "facility_location":
            out = np.zeros(n)
            nz = lens > 0
            out[nz] = np.maximum.reduceat(vals, kernel.indptr[:-1][nz])
            return float(out.sum())
        rows = np.repeat(np.arange(n), lens)
        return float(vals.sum() - lam * vals[in_s[rows]].sum())
    if objective == "facility_location":
        return float(np.maximum(kernel[:, s].max(axis=1), 0.0).sum(dtype=np.float64))
    if objective == "graph_cut":
        kp = np.maximum(kernel[:, s], 0.0).astype(np.float64)
        return float(kp.sum() - lam * kp[s].sum())
    sub = kernel[np.ix_(s, s)].astype(np.float64) + reg * np.eye(len(s))
    sign, logdet = np.linalg.slogdet(sub)
    if sign <= 0:
        raise ConfigError("log_determinant: K[S, S] + reg I is not positive definite; is the kernel PSD?")
    return float(logdet)
