"""Paired significance tests for benchmark figures (pure functions, no SciPy needed).

``wilcoxon_signed_rank``: the exact Wilcoxon signed-rank test on paired differences (zeros dropped,
tied absolute differences get their average rank), with the null distribution of ``W+`` counted
exactly by dynamic programming over the ranks — exact for any n, ties included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WilcoxonResult:
    n: int  # non-zero differences
    w_plus: float  # sum of the ranks of the positive differences
    p_less: float  # P(W+ <= observed): evidence that a < b
    p_greater: float  # P(W+ >= observed): evidence that a > b
    p_two_sided: float


def _avg_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    xs = x[order]
    i = 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def wilcoxon_signed_rank(a: Sequence[float], b: Sequence[float]) -> WilcoxonResult:
    """Exact signed-rank test of the paired differences ``a - b``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"a and b must be 1-D and paired (same length), got shapes {a.shape} and {b.shape}")
    d = a - b
    d = d[d != 0]
    n = len(d)
    if n == 0:
        return WilcoxonResult(0, 0.0, 1.0, 1.0, 1.0)
    r2 = np.rint(2 * _avg_ranks(np.abs(d))).astype(np.int64)  # doubled ranks are integers
    w2 = int(r2[d > 0].sum())
    total = int(r2.sum())
    counts = np.zeros(total + 1, dtype=np.float64)
    counts[0] = 1.0
    for r in r2:
        counts[r:] = counts[r:] + counts[: total + 1 - r]  # the right side is built before assignment
    probs = counts / counts.sum()
    p_less = float(probs[: w2 + 1].sum())
    p_greater = float(probs[w2:].sum())
    return WilcoxonResult(n=n, w_plus=w2 / 2, p_less=min(1.0, p_less), p_greater=min(1.0, p_greater),
                          p_two_sided=min(1.0, 2 * min(p_less, p_greater)))
