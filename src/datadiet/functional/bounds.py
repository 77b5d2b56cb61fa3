"""Exact one-sided confidence bounds on a binomial proportion (Clopper-Pearson), pure math.

Given ``k`` successes in ``n`` independent trials, :func:`binomial_upper_bound` is the largest
proportion ``p`` that the data do not reject at level ``1 - confidence``:
``P(X <= k; n, p) = 1 - confidence`` (and 1 when ``k = n``); :func:`binomial_lower_bound` is the
mirror image, ``1 - binomial_upper_bound(n - k, n)``. These are the Clopper-Pearson bounds: whatever
the true ``p``, the upper bound is ``>= p`` with probability at least ``confidence`` (exact coverage,
never below nominal, unlike the normal or Wilson approximations at small ``n`` or extreme ``p``).
With no trials (``n = 0``) nothing is known: the bounds are 1 and 0.

The bound is found by bisection on the binomial CDF (computed in log space from ``lgamma``, in
float64), which is decreasing in ``p``; closed forms where they exist (``k = 0``:
``1 - (1 - confidence) ** (1 / n)``). Results are cached: callers ask for the same few ``(k, n)``
pairs over and over.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from .._validate import check_float, check_int


def _log_binomial_cdf(log_coef: np.ndarray, n: int, p: float) -> float:
    """``log P(X <= k)`` for ``X ~ Binomial(n, p)``, ``0 < p < 1``; ``log_coef[i] = log C(n, i)``, i <= k."""
    i = np.arange(len(log_coef), dtype=np.float64)
    terms = log_coef + i * math.log(p) + (n - i) * math.log1p(-p)
    top = float(terms.max())
    return top + math.log(float(np.exp(terms - top).sum()))


@lru_cache(maxsize=4096)
def _upper(k: int, n: int, confidence: float) -> float:
    if n == 0 or k >= n:
        return 1.0
    alpha = 1.0 - confidence
    if k == 0:
        return 1.0 - alpha ** (1.0 / n)
    log_alpha = math.log(alpha)
    log_coef = math.lgamma(n + 1) - np.array([math.lgamma(j + 1) + math.lgamma(n - j + 1) for j in range(k + 1)])
    lo, hi = k / n, 1.0  # CDF(k; n, k/n) >= ~1/2 > alpha; CDF(k; n, 1) = 0 < alpha
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        if _log_binomial_cdf(log_coef, n, mid) > log_alpha:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return hi  # the side that the data reject: the bound never undercovers through rounding


def _check(k: int, n: int, confidence: float) -> tuple[int, int, float]:
    n = check_int("n", n, min=0)
    k = check_int("k", k, min=0, max=n)
    confidence = check_float("confidence", confidence, min=0.0, max=1.0, min_open=True, max_open=True)
    return k, n, confidence


def binomial_upper_bound(k: int, n: int, *, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound on a proportion: ``k`` successes in ``n`` trials.

    ``n = 0`` or ``k = n`` gives 1. ``confidence`` in (0, 1).
    """
    k, n, confidence = _check(k, n, confidence)
    return _upper(k, n, confidence)


def binomial_lower_bound(k: int, n: int, *, confidence: float = 0.95) -> float:
    """One-sided Clopper-Pearson lower bound on a proportion: ``k`` successes in ``n`` trials.

    ``n = 0`` or ``k = 0`` gives 0. ``confidence`` in (0, 1).
    """
    k, n, confidence = _check(k, n, confidence)
    return 0.0 if n == 0 else 1.0 - _upper(n - k, n, confidence)
