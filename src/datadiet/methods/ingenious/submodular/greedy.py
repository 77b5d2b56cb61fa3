"""Greedy maximisation of a submodular objective: exact lazy greedy (default), stochastic greedy, naive greedy.

All three record the greedy order and each element's marginal gain at the moment it was picked.

- ``lazy`` (Minoux 1978): a max-heap of upper bounds on the gains; the top is re-evaluated until it is
  fresh (evaluated against the current set), and a fresh top is the exact argmax because gains only
  shrink as the set grows (submodularity). Stale tops are re-evaluated in growing batches (1, 2, 4, ...)
  to cut Python overhead; re-evaluating more than needed never changes the result. Ties go to the
  smaller index, so ``lazy`` returns exactly what ``naive`` returns.
- ``stochastic`` (Mirzasoleiman et al., AAAI 2015): each step takes the best of a seeded uniform
  sample of ``s = ceil(n / b * ln(1 / epsilon))`` remaining candidates; ``(1 - 1/e - epsilon)`` of the
  optimum in expectation for a budget of ``b``. ``b`` should be the *selection* budget: sizing ``s``
  from a full ordering (``b = n - 1``) leaves ~``ln(1/epsilon)`` candidates per step, an almost
  random order (the INGENIOUS reference's flaw); pass ``sample_size`` when ordering more than you select.
- ``naive``: evaluates every remaining candidate each step, ``O(n)`` gain evaluations per pick; the
  reference the other two are tested against.
"""

from __future__ import annotations

import heapq
import logging
import math
from dataclasses import dataclass

import numpy as np

from ...._validate import check_choice, check_float, check_int
from ._checks import check_bool
from .functions import OBJECTIVES, GainOracle, Kernel, check_kernel, make_oracle
from .kernels import SparseKernel

log = logging.getLogger(__name__)

OPTIMIZERS = ("lazy", "stochastic", "naive")


@dataclass(frozen=True)
class GreedyResult:
    """The greedy order, each element's marginal gain when picked, and what it cost.

    ``remaining`` / ``remaining_gains``: the elements never picked (ascending) and their marginal gains
    with respect to the final set; empty arrays unless ``with_remaining=True`` was asked.
    """

    order: np.ndarray  # int64 [b], indices into the kernel's rows in pick order
    gains: np.ndarray  # float64 [b], f(S_t + order[t]) - f(S_t)
    objective: str
    optimizer: str
    n_evals: int  # single-element gain evaluations
    remaining: np.ndarray  # int64
    remaining_gains: np.ndarray  # float64

    @property
    def value(self) -> float:
        """``f(order)`` (the sum of the gains, since ``f(empty) = 0``)."""
        return float(self.gains.sum())


def _gains_chunked(oracle: GainOracle, cand: np.ndarray, dense_width: int) -> np.ndarray:
    """Gains of many candidates, ``chunk`` at a time so a dense oracle's scratch stays ~64 MB."""
    chunk = max(1, (1 << 24) // max(1, dense_width))
    if len(cand) <= chunk:
        return oracle.gains(cand)
    return np.concatenate([oracle.gains(cand[s : s + chunk]) for s in range(0, len(cand), chunk)])


def _lazy(oracle: GainOracle, n: int, budget: int, width: int) -> tuple[list[int], list[float], int]:
    allc = np.arange(n, dtype=np.int64)
    g0 = _gains_chunked(oracle, allc, width)
    heap = list(zip((-g0).tolist(), range(n)))
    heapq.heapify(heap)
    fresh = np.zeros(n, dtype=np.int64)  # step at which each bound was last evaluated
    order, gains, evals = [], [], n
    for t in range(budget):
        batch = 1
        while True:
            negg, j = heap[0]
            if fresh[j] == t:
                heapq.heappop(heap)
                break
            popped = [heapq.heappop(heap) for _ in range(min(batch, len(heap)))]
            idx = np.fromiter((p[1] for p in popped), dtype=np.int64, count=len(popped))
            stale = fresh[idx] != t
            new = np.fromiter((p[0] for p in popped), dtype=np.float64, count=len(popped))
            if stale.any():
                new[stale] = -oracle.gains(idx[stale])
                evals += int(stale.sum())
            fresh[idx] = t
            for v, i in zip(new.tolist(), idx.tolist()):
                heapq.heappush(heap, (v, i))
            batch = min(2 * batch, 64)
        order.append(j)
        gains.append(-negg)
        oracle.add(j)
    return order, gains, evals


def _naive(oracle: GainOracle, n: int, budget: int, width: int) -> tuple[list[int], list[float], int]:
    left = np.ones(n, dtype=bool)
    order, gains, evals = [], [], 0
    for _ in range(budget):
        cand = np.flatnonzero(left)
        g = _gains_chunked(oracle, cand, width)
        evals += len(cand)
        a = int(np.argmax(g))  # first maximum: the smallest index among ties
        j = int(cand[a])
        order.append(j)
        gains.append(float(g[a]))
        left[j] = False
        oracle.add(j)
    return order, gains, evals


def _stochastic(oracle: GainOracle, n: int, budget: int, size: int, rng: np.random.Generator) -> tuple[list[int], list[float], int]:
    rem = np.arange(n, dtype=np.int64)  # remaining candidates in rem[:m]
    m = n
    order, gains, evals = [], [], 0
    for _ in range(budget):
        s = min(size, m)
        pick = rng.choice(m, size=s, replace=False) if s < m else np.arange(m)
        cand = rem[pick]
        g = oracle.gains(cand)
        evals += s
        a = int(np.argmax(g))
        j = int(cand[a])
        order.append(j)
        gains.append(float(g[a]))
        p = int(pick[a])
        rem[p], rem[m - 1] = rem[m - 1], rem[p]
        m -= 1
        oracle.add(j)
    return order, gains, evals


def stochastic_sample_size(n: int, budget: int, epsilon: float) -> int:
    """``ceil(n / budget * ln(1 / epsilon))``, at least 1 and at most ``n``."""
    return int(min(n, max(1, math.ceil(n / budget * math.log(1.0 / epsilon)))))


def greedy_maximize(
    kernel: Kernel,
    *,
    budget: int,
    objective: str = "facility_location",
    optimizer: str = "lazy",
    epsilon: float = 0.01,
    sample_size: int | None = None,
    seed: int = 0,
    lam: float = 0.4,
    reg: float = 1.0,
    with_remaining: bool = False,
    n_candidates: int | None = None,
) -> GreedyResult:
    """Pure: greedily pick ``budget`` elements maximising ``objective`` over ``kernel``.

    ``kernel``: a dense ``[n, n]`` similarity matrix or a :class:`SparseKernel` (``K[i, j]`` = how well
    ``j`` represents ``i``). ``budget`` may be ``n`` (a full greedy ordering). ``epsilon`` /
    ``sample_size`` / ``seed`` only matter for ``optimizer='stochastic'`` (the sample size defaults to
    ``ceil(n / budget * ln(1 / epsilon))``; the generator is ``numpy.random.default_rng(seed)``).
    ``lam``: graph cut's redundancy weight (default 0.4). ``reg``: log-determinant's ridge (default 1.0).
    ``n_candidates``: only elements ``0 .. n_candidates - 1`` may be picked (default: all ``n``); the
    objective still sums over every row, so a part's candidates can cover examples outside the part
    (the whole-pool kNN path of :func:`~.pipeline.submodular_gains`). ``budget`` is then at most
    ``n_candidates`` and ``remaining`` lists unpicked candidates only.
    """
    kernel = check_kernel("kernel", kernel)
    n = kernel.n if isinstance(kernel, SparseKernel) else kernel.shape[0]
    rows = n
    if n_candidates is not None:
        n = check_int("n_candidates (at most the number of kernel rows)", n_candidates, min=1, max=rows)
    budget = check_int("budget (number of elements to pick, at most the number of candidates)", budget, min=1, max=n)
    objective = check_choice("objective", objective, OBJECTIVES)
    optimizer = check_choice("optimizer", optimizer, OPTIMIZERS)
    epsilon = check_float("epsilon", epsilon, min=0.0, max=1.0, min_open=True, max_open=True)
    if sample_size is not None:
        sample_size = check_int("sample_size", sample_size, min=1)
    seed = check_int("seed", seed, min=0)
    lam = check_float("lam", lam, min=0.0)
    reg = check_float("reg", reg, min=0.0, min_open=True)
    with_remaining = check_bool("with_remaining", with_remaining)
    oracle = make_oracle(kernel, objective=objective, lam=lam, reg=reg)
    width = rows if (not isinstance(kernel, SparseKernel) and objective == "facility_location") else 1
    if optimizer == "lazy":
        order, gains, evals = _lazy(oracle, n, budget, width)
    elif optimizer == "naive":
        order, gains, evals = _naive(oracle, n, budget, width)
    else:
        size = sample_size if sample_size is not None else stochastic_sample_size(n, budget, epsilon)
        order, gains, evals = _stochastic(oracle, n, budget, size, np.random.default_rng(seed))
    order_a = np.asarray(order, dtype=np.int64)
    if with_remaining:
        left = np.ones(n, dtype=bool)
        left[order_a] = False
        remaining = np.flatnonzero(left).astype(np.int64)
        rem_gains = _gains_chunked(oracle, remaining, width) if len(remaining) else np.zeros(0)
    else:
        remaining, rem_gains = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    log.debug("greedy %s/%s: n=%d budget=%d evals=%d", objective, optimizer, n, budget, evals)
    return GreedyResult(order=order_a, gains=np.asarray(gains, dtype=np.float64), objective=objective,
                        optimizer=optimizer, n_evals=evals, remaining=remaining,
                        remaining_gains=np.asarray(rem_gains, dtype=np.float64))
