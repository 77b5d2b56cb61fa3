"""Random subset: a uniform random ``fraction`` of the training set, fixed before training.

Saves forward + backward of every example left out; costs nothing. The baseline every offline
selector must beat at the same subset size.
"""

from __future__ import annotations

import numpy as np

from .._validate import check_fraction, check_int
from ..core.method import Method, Plan
from ..core.params import Param, int_at_least, optional
from ..core.selection import Selection


def random_subset(ids: np.ndarray, *, fraction: float, seed: int) -> Selection:
    """Pure selector: a seeded uniform sample of ``round(fraction * n)`` positions (at least 1)."""
    fraction = check_fraction("fraction", fraction)
    seed = check_int("seed", seed, min=0)
    n = len(ids)
    k = max(1, int(round(fraction * n)))
    pos = np.sort(np.random.default_rng(seed).permutation(n)[:k])
    return Selection(method="random_subset", indices=pos, ids=np.asarray(ids)[pos], n_total=n,
                     params={"fraction": fraction, "seed": seed})


class RandomSubset(Method):
    """Method ``random_subset``: train on a seeded uniform ``fraction`` of the training set.

    Mechanism: prune (offline). Saves forward + backward of the examples left out. Default
    fraction 0.5. The subset is drawn from ``seed`` (the run's training seed unless given).
    """

    name = "random_subset"
    mechanism = "prune"
    saves = "forward + backward of every example left out"

    fraction = Param(0.5, check_fraction, "share of the training set kept")
    seed = Param(None, optional(int_at_least(0)), "RNG seed; None: the run's training seed")

    def plan(self, ctx) -> Plan:
        sel = random_subset(ctx.ids, fraction=self.fraction, seed=ctx.seed if self.seed is None else self.seed)
        return Plan(selection=sel)
