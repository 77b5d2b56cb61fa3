"""INGENIOUS submodular subset selection (Renduchintala et al., EMNLP Findings 2023), as pure functions.

Mechanism: prune (offline, before training and optionally every R steps). Saves forward + backward of
every example left out. Extra cost: one embedding forward per example, plus ``O(m^2 d)`` kernel work
and a greedy ordering per part of ``m`` examples (seconds per 10^4 examples on a CPU). Break-even:
training on a fraction ``k`` of the data saves ``(1 - k)`` of the training compute, so selection pays
off whenever its cost (embedding + kernels + greedy) is below ``(1 - k)`` times full training; at the
reference ``k = 0.25`` that is 75% of a full run, so in practice it always pays. Paper defaults: facility location over cosine
similarity, random partitions (P = 1500 for ~40M sequences), greedy over each whole part, Taylor-softmax
sampling with temperature 1.0, subset fraction 0.25.

Layers (each usable alone):

- :mod:`.kernels`: ``dense_kernel`` (cosine / RBF), ``knn_kernel`` -> :class:`SparseKernel` (CSR),
  ``sparse_from_dense``; ``ann_knn_graph`` / ``ann_knn_kernel`` (approximate kNN over the whole pool,
  FAISS IVF, lists flat or compressed, or HNSW) and ``knn_recall`` (its recall against exact kNN on sampled queries).
- :mod:`.functions`: facility location, graph cut, log-determinant; ``objective_value``.
- :mod:`.greedy`: ``greedy_maximize`` -> :class:`GreedyResult` (order + marginal gains); lazy (exact,
  default), stochastic, naive.
- :mod:`.partition`: ``random_partition``, ``kmeans_partition``, ``split_parts``.
- :mod:`.sampling`: ``taylor_softmax``, ``part_budgets``, ``sample_subset`` (taylor_softmax / top_k /
  uniform).
- :mod:`.pipeline`: ``submodular_gains`` -> :class:`SubmodularGains`; ``subset_from_gains`` ->
  :class:`~datadiet.core.selection.Selection`.

FAISS (``pip install 'datadiet[scale]'``) is optional and imported only when a kNN kernel or k-means
partition is built.
"""

from .functions import OBJECTIVES, objective_value
from .greedy import OPTIMIZERS, GreedyResult, greedy_maximize, stochastic_sample_size
from .kernels import (IVF_STORAGES, KNN_SEARCHES, METRICS, SparseKernel, ann_knn_graph, ann_knn_kernel, dense_kernel,
                      knn_kernel, knn_recall, sparse_from_dense)
from .partition import kmeans_partition, part_members, random_partition, split_parts
from .pipeline import SubmodularGains, submodular_gains, subset_from_gains
from .sampling import SAMPLINGS, part_budgets, sample_subset, taylor_softmax

__all__ = [
    "OBJECTIVES", "OPTIMIZERS", "METRICS", "SAMPLINGS",
    "SparseKernel", "dense_kernel", "knn_kernel", "sparse_from_dense",
    "KNN_SEARCHES", "IVF_STORAGES", "ann_knn_graph", "ann_knn_kernel", "knn_recall",
    "objective_value", "GreedyResult", "greedy_maximize", "stochastic_sample_size",
    "random_partition", "kmeans_partition", "split_parts", "part_members",
    "taylor_softmax", "part_budgets", "sample_subset",
    "SubmodularGains", "submodular_gains", "subset_from_gains",
]
