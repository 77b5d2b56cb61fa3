"""Turning greedy gains into a subset: Taylor-softmax importance sampling, top-k, uniform.

Per part ``p`` of size ``m_p`` the budget is ``k_p``, proportional to ``m_p`` (largest-remainder
rounding: the ``k_p`` sum to the budget exactly, ties go to the lower part id). Then, in each part:

- ``taylor_softmax`` (INGENIOUS): sample ``k_p`` members without replacement with probabilities
  ``p_j ∝ 1 + x_j + x_j^2 / 2``, ``x_j = gain_j / temperature`` (second-order Taylor softmax,
  temperature 1.0 by default). ``1 + x + x^2/2`` is positive everywhere but grows again below its
  minimum at ``x = -1``, so ``x`` is clipped at ``-1``: a more negative gain never weighs more.
  (Facility location, graph cut with ``lam <= 0.5`` and log-determinant with ``reg >= 1`` only have
  gains >= 0.) ``normalize='max'`` divides each part's gains by its largest ``|gain|`` first, which
  makes the weights independent of the part size (our option; off by default, as in the paper).
- ``top_k``: the first ``k_p`` of the part's greedy order (deterministic; an ablation).
- ``uniform``: ``k_p`` members uniformly at random (an ablation; stratified by part).

Sampling without replacement uses exponential keys (``E_j / w_j`` smallest ``k_p``, ``E_j ~ Exp(1)``),
which draws exactly like successive weighted draws. Part ``p`` draws from its own generator spawned
from ``numpy.random.SeedSequence(seed)``, so the subset depends on the seed alone, not on the order
in which parts are processed.
"""

from __future__ import annotations

import numpy as np

from ...._validate import check_choice, check_float, check_int
from ....errors import ConfigError

SAMPLINGS = ("taylor_softmax", "top_k", "uniform")
NORMALIZE = ("none", "max")


def taylor_softmax(gains: np.ndarray, *, temperature: float = 1.0) -> np.ndarray:
    """Pure: probabilities ``∝ 1 + x + x^2 / 2`` with ``x = max(gains / temperature, -1)``."""
    temperature = check_float("temperature", temperature, min=0.0, min_open=True)
    g = np.asarray(gains, dtype=np.float64)
    if g.ndim != 1 or g.size == 0:
        raise ConfigError(f"gains must be a non-empty 1-D array, got shape {g.shape}")
    if not np.isfinite(g).all():
        raise ConfigError("gains must be finite")
    x = np.maximum(g / temperature, -1.0)
    w = 1.0 + x + 0.5 * x * x
    return w / w.sum()


def part_budgets(sizes: np.ndarray, *, budget: int) -> np.ndarray:
    """Pure: split ``budget`` over parts in proportion to ``sizes`` (largest remainder, exact integers)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if sizes.ndim != 1 or sizes.size == 0 or (sizes < 0).any():
        raise ConfigError(f"sizes must be a non-empty 1-D array of part sizes >= 0, got {sizes!r}")
    n = int(sizes.sum())
    budget = check_int("budget (at most the number of examples)", budget, min=0, max=n)
    if n == 0:
        return np.zeros_like(sizes)
    base, rem = np.divmod(budget * sizes, n)
    short = budget - int(base.sum())
    if short:
        extra = np.lexsort((np.arange(len(sizes)), -rem))[:short]  # largest remainder, then lower id
        base[extra] += 1
    return base


def _normalise(g: np.ndarray, normalize: str) -> np.ndarray:
    if normalize == "max":
        top = np.abs(g).max()
        return g / top if top > 0 else np.zeros_like(g)
    return g


def sample_subset(
    gains: np.ndarray,
    parts: np.ndarray,
    rank: np.ndarray,
    *,
    budget: int,
    sampling: str = "taylor_softmax",
    temperature: float = 1.0,
    normalize: str = "none",
    seed: int = 0,
) -> np.ndarray:
    """Pure: ``budget`` positions (ascending) drawn part by part from per-example ``gains``.

    ``parts``: part id per example (``0 .. P-1``); ``rank``: each example's position in its part's
    greedy order (used by ``top_k``). Budgets per part are :func:`part_budgets` of the part sizes.
    """
    g = np.asarray(gains, dtype=np.float64)
    parts = np.asarray(parts, dtype=np.int64)
    rank = np.asarray(rank, dtype=np.int64)
    if g.ndim != 1 or parts.shape != g.shape or rank.shape != g.shape:
        raise ConfigError(f"gains, parts and rank must be 1-D arrays of the same length, got {g.shape}, {parts.shape}, {rank.shape}")
    if not np.isfinite(g).all():
        raise ConfigError("gains must be finite")
    sampling = check_choice("sampling", sampling, SAMPLINGS)
    normalize = check_choice("normalize", normalize, NORMALIZE)
    temperature = check_float("temperature", temperature, min=0.0, min_open=True)
    seed = check_int("seed", seed, min=0)
    n = len(g)
    budget = check_int("budget (at most the number of examples)", budget, min=0, max=n)
    if parts.size and (parts.min() < 0):
        raise ConfigError("parts must be ids >= 0")
    n_parts = int(parts.max()) + 1 if n else 0
    sizes = np.bincount(parts, minlength=n_parts)
    ks = part_budgets(sizes, budget=budget)
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n_parts)]
    order = np.argsort(parts, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    out = []
    for p in range(n_parts):
        k = int(ks[p])
        if k == 0:
            continue
        members = order[starts[p] : starts[p + 1]]
        if k == len(members):
            out.append(members)
        elif sampling == "top_k":
            out.append(members[np.argsort(rank[members], kind="stable")[:k]])
        elif sampling == "uniform":
            out.append(rngs[p].choice(members, size=k, replace=False))
        else:
            w = taylor_softmax(_normalise(g[members], normalize), temperature=temperature)
            keys = rngs[p].exponential(size=len(members)) / w
            out.append(members[np.argpartition(keys, k - 1)[:k]])
    if not out:
        return np.zeros(0, dtype=np.int64)
    return np.sort(np.concatenate(out)).astype(np.int64)
