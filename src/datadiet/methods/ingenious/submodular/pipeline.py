"""INGENIOUS end to end on embeddings: partition -> kernel per part -> greedy gains -> sampled subset.

:func:`submodular_gains` does the expensive part once (one greedy ordering per part);
:func:`subset_from_gains` draws a subset from those gains and can be called again every R steps with a
new seed (the reference's re-selection: re-sample from the same gains).

Memory: a dense part of ``m`` examples needs ``4 m^2`` bytes per worker (10^4 -> 400 MB); a kNN part
``~16 m k`` bytes (the kernel and its transpose). Time: dense kernels cost ``O(m^2 d)`` per part
(torch matmul), kNN kernels ``O(m^2 d)`` for the exact search too but only ``O(m k)`` memory, and a full
greedy ordering costs a few gain evaluations per pick (``O(m)`` each dense, ``O(k)`` sparse).
"""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...._validate import check_choice, check_float, check_fraction, check_int
from ....errors import ConfigError
from ....core.selection import Selection
from ._checks import BACKENDS, CHUNK, check_embeddings, faiss_or_none
from .functions import OBJECTIVES
from .greedy import OPTIMIZERS, greedy_maximize, stochastic_sample_size
from .kernels import (IVF_STORAGES, KNN_SEARCHES, METRICS, SparseKernel, _csr_from_topk, ann_knn_graph, dense_kernel,
                      knn_kernel)
from .partition import kmeans_partition, part_members, random_partition
from .sampling import sample_subset

log = logging.getLogger(__name__)

KERNELS = ("dense", "knn")
PARTITIONS = ("random", "kmeans")
DEFAULT_MAX_PART = {"dense": 10_000, "knn": 50_000}


@dataclass(frozen=True)
class SubmodularGains:
    """Per-example greedy gains over a partition of the examples.

    ``gains[i]``: the marginal gain of ``i`` when its part's greedy run picked it, or, if the run
    stopped first (``greedy_fraction < 1``), its marginal gain with respect to the final greedy set
    (``picked[i]`` tells which). ``rank[i]``: its position in its part's order (picked elements in
    pick order, then the rest by decreasing gain, ties by position).
    """

    parts: np.ndarray  # int64 [n], part id 0 .. P-1
    gains: np.ndarray  # float64 [n]
    rank: np.ndarray  # int64 [n]
    picked: np.ndarray  # bool [n]
    params: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.gains)

    @property
    def n_parts(self) -> int:
        return int(self.parts.max()) + 1 if self.n else 0


def _part_seeds(seed: int, n: int) -> list[int]:
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(n)]


def _part_subkernel(cols: SparseKernel, members: np.ndarray) -> tuple[SparseKernel, int]:
    """The whole-pool kNN kernel restricted to the columns of one part, as a square CSR over local ids.

    ``cols`` is the transposed whole-pool kernel (row ``j`` = the examples that list ``j`` as a
    neighbour). Local ids: the part's ``m`` members first (ascending), then every other example that
    lists a member as a neighbour (ascending); only the first ``m`` columns hold entries, so the
    greedy picks among the members (``n_candidates=m``) while covering every row. Memory: the
    entries whose column is in the part, ``m k`` on average.
    """
    m = len(members)
    starts, ends = cols.indptr[members], cols.indptr[members + 1]
    lens = ends - starts
    offs = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
    pos = np.arange(int(lens.sum()), dtype=np.int64) + np.repeat(starts - offs, lens)
    rows_g = cols.indices[pos].astype(np.int64)
    col_l = np.repeat(np.arange(m, dtype=np.int64), lens)
    vals = cols.data[pos]
    at = np.minimum(np.searchsorted(members, rows_g), m - 1)
    in_part = members[at] == rows_g
    extra = np.unique(rows_g[~in_part])
    row_l = np.where(in_part, at, m + np.searchsorted(extra, rows_g))
    size = m + len(extra)
    order = np.lexsort((col_l, row_l))
    indptr = np.zeros(size + 1, dtype=np.int64)
    np.cumsum(np.bincount(row_l, minlength=size), out=indptr[1:])
    k = SparseKernel(indptr=indptr, indices=col_l[order].astype(np.int32), data=vals[order].astype(np.float32),
                     n=size)
    return k, m


def submodular_gains(
    embeddings: np.ndarray,
    *,
    objective: str = "facility_location",
    kernel: str = "dense",
    metric: str = "cosine",
    gamma: float = 1.0,
    knn: int = 10,
    partition: str = "random",
    max_part_size: int | None = None,
    n_parts: int | None = None,
    optimizer: str = "lazy",
    epsilon: float = 0.01,
    fraction: float = 0.25,
    greedy_fraction: float = 1.0,
    lam: float = 0.4,
    reg: float = 1.0,
    backend: str = "auto",
    workers: int = 1,
    seed: int = 0,
    knn_search: str = "exact_per_part",
    nprobe: int = 32,
    nlist: int | None = None,
    train_per_list: int = 256,
    ivf_storage: str = "flat",
) -> SubmodularGains:
    """Pure: greedy gains of every example, one greedy run per part.

    Parameters (paper defaults in brackets):

    - ``objective``: ``facility_location`` [paper], ``graph_cut`` (``lam``, 0.4) or ``log_determinant``
      (``reg``, 1.0; dense kernels only).
    - ``kernel``: ``dense`` cosine/RBF matrix per part [paper], or ``knn``: a sparse kernel of each
      example's ``knn`` nearest neighbours in its part (FAISS if installed, else exact torch), which lets
      parts grow to ~10^5 and ``n`` to millions.
    - ``partition``: ``random`` [paper] or ``kmeans``; parts hold at most ``max_part_size`` examples
      (default 10,000 dense / 50,000 knn) and there are at least ``n_parts`` of them.
    - ``optimizer``: ``lazy`` (exact) [default], ``stochastic`` (``epsilon``; its random sets are sized
      for a subset of ``fraction`` of each part, not for the full ordering) or ``naive``.
    - ``greedy_fraction``: share of each part the greedy run orders [1.0: the whole part, as the paper];
      a smaller share is cheaper and gives the rest their marginal gain w.r.t. the greedy set.
    - ``workers``: parts run on a thread pool of this size (numpy/torch release the GIL in the heavy
      loops; each worker holds one part's kernel).
    - ``backend``: ``auto`` | ``faiss`` | ``torch`` for the kNN search and k-means.
    - ``knn_search`` (``kernel='knn'`` only): ``exact_per_part`` [default]: an exact kNN graph inside
      each part, so no neighbour crosses parts; ``faiss_ivf`` (``nprobe`` [32], ``nlist`` [``round(4
      sqrt(n))``], ``train_per_list`` [256] k-means rows per list, ``ivf_storage`` [``flat``]) or
      ``faiss_hnsw``: one approximate kNN graph over the whole pool
      (:func:`~.kernels.ann_knn_graph`, needs faiss), so neighbours cross parts and parts only bound
      the greedy's memory: each part's greedy picks among its members and counts the coverage of
      every example in the pool that lists a member as a neighbour.
    - ``ivf_storage`` (``knn_search='faiss_ivf'`` only): what the IVF lists hold, ``flat`` float32
      [default], ``fp16`` (half the index memory) or ``sq8`` (a quarter); with ``fp16`` / ``sq8`` the
      found neighbours are re-scored exactly, so only the recall can change.

    ``embeddings`` may be float16 (storage); rows are converted to float32 part by part (or chunk by
    chunk for the FAISS search).
    """
    x = check_embeddings("embeddings", embeddings, allow_float16=True)
    n = x.shape[0]
    objective = check_choice("objective", objective, OBJECTIVES)
    kernel = check_choice("kernel", kernel, KERNELS)
    metric = check_choice("metric", metric, METRICS)
    gamma = check_float("gamma", gamma, min=0.0, min_open=True)
    knn = check_int("knn", knn, min=1)
    partition = check_choice("partition", partition, PARTITIONS)
    max_part_size = DEFAULT_MAX_PART[kernel] if max_part_size is None else check_int("max_part_size", max_part_size, min=1)
    if n_parts is not None:
        n_parts = check_int("n_parts (at most the number of examples)", n_parts, min=1, max=n)
    optimizer = check_choice("optimizer", optimizer, OPTIMIZERS)
    epsilon = check_float("epsilon", epsilon, min=0.0, max=1.0, min_open=True, max_open=True)
    fraction = check_fraction("fraction", fraction)
    greedy_fraction = check_fraction("greedy_fraction", greedy_fraction)
    lam = check_float("lam", lam, min=0.0)
    reg = check_float("reg", reg, min=0.0, min_open=True)
    backend = check_choice("backend", backend, BACKENDS)
    workers = check_int("workers", workers, min=1)
    seed = check_int("seed", seed, min=0)
    knn_search = check_choice("knn_search", knn_search, KNN_SEARCHES)
    ivf_storage = check_choice("ivf_storage", ivf_storage, IVF_STORAGES)
    nprobe = check_int("nprobe", nprobe, min=1)
    train_per_list = check_int("train_per_list", train_per_list, min=1)
    if nlist is not None:
        nlist = check_int("nlist (at most the number of examples)", nlist, min=1, max=n)
    if knn_search != "exact_per_part" and kernel != "knn":
        raise ConfigError(f"knn_search={knn_search!r} builds a sparse kNN kernel over the whole pool; set kernel='knn' "
                          "or knn_search='exact_per_part'")
    if ivf_storage != "flat" and knn_search != "faiss_ivf":
        raise ConfigError(f"ivf_storage={ivf_storage!r} compresses the lists of the whole-pool IVF index, but "
                          f"knn_search={knn_search!r} builds none; set knn_search='faiss_ivf' or ivf_storage='flat'")
    if objective == "log_determinant" and kernel == "knn":
        raise ConfigError("objective 'log_determinant' needs kernel='dense' (a kNN kernel is not positive semi-definite)")
    params = dict(objective=objective, kernel=kernel, metric=metric, gamma=gamma, knn=knn, partition=partition,
                  max_part_size=max_part_size, n_parts=n_parts, optimizer=optimizer, epsilon=epsilon,
                  fraction=fraction, greedy_fraction=greedy_fraction, lam=lam, reg=reg, backend=backend,
                  workers=workers, seed=seed, knn_search=knn_search)
    if knn_search == "faiss_ivf":
        params.update(nprobe=nprobe, nlist=nlist, train_per_list=train_per_list, ivf_storage=ivf_storage)

    t0 = time.perf_counter()
    p = max(n_parts or 1, math.ceil(n / max_part_size))
    if partition == "random":
        parts = random_partition(n, n_parts=p, seed=seed)
        part_backend = "numpy"
    else:
        # cluster directions for cosine; rows already unit-norm are clustered as they are (no float32
        # copy of the pool: kmeans_partition converts rows chunk by chunk)
        unit = metric != "cosine" or all(
            np.allclose(np.linalg.norm(np.asarray(x[s : s + CHUNK], dtype=np.float32), axis=1), 1.0, atol=1e-3)
            for s in range(0, n, CHUNK))
        parts = kmeans_partition(x, n_parts=p, seed=seed, max_size=max_part_size, backend=backend,
                                 normalize=not unit)
        part_backend = "faiss" if faiss_or_none(backend) is not None else "torch"
    partition_s = time.perf_counter() - t0
    members = part_members(parts)
    seeds = _part_seeds(seed, len(members))
    knn_backend = ("faiss" if faiss_or_none(backend) is not None else "torch") if kernel == "knn" else None
    cols: SparseKernel | None = None
    graph_s, graph_bytes = 0.0, 0
    if knn_search != "exact_per_part":
        t = time.perf_counter()
        ann = (dict(index="ivf", nprobe=nprobe, nlist=nlist, train_per_list=train_per_list, ivf_storage=ivf_storage)
               if knn_search == "faiss_ivf" else dict(index="hnsw"))
        gi, gv = ann_knn_graph(x, k=min(knn, n), metric=metric, gamma=gamma, seed=seed, **ann)
        cols = _csr_from_topk(gi, gv).transpose()  # row j: the examples that list j as a neighbour
        del gi, gv
        graph_s, graph_bytes = time.perf_counter() - t, cols.nbytes
        knn_backend = knn_search

    def run(i: int) -> tuple[np.ndarray, Any, float, float, int]:
        idx = members[i]
        m = len(idx)
        t = time.perf_counter()
        if kernel == "dense":
            k = dense_kernel(x[idx], metric=metric, gamma=gamma)
            nbytes = k.nbytes
        elif cols is None:
            k = knn_kernel(x[idx], k=min(knn, m), metric=metric, gamma=gamma, backend=backend)
            nbytes = 2 * k.nbytes  # the facility-location oracle keeps its transpose
        else:
            k, _ = _part_subkernel(cols, idx)
            nbytes = 2 * k.nbytes
        tk = time.perf_counter() - t
        steps = min(m, max(1, math.ceil(greedy_fraction * m)))
        size = stochastic_sample_size(m, max(1, math.ceil(fraction * m)), epsilon)
        res = greedy_maximize(k, budget=steps, objective=objective, optimizer=optimizer, sample_size=size,
                              seed=seeds[i], lam=lam, reg=reg, with_remaining=steps < m,
                              n_candidates=m if cols is not None else None)
        return idx, res, tk, time.perf_counter() - t - tk, nbytes

    if workers > 1 and len(members) > 1:
        with ThreadPoolExecutor(max_workers=workers) as ex:
            results = list(ex.map(run, range(len(members))))
    else:
        results = [run(i) for i in range(len(members))]

    gains = np.zeros(n, dtype=np.float64)
    rank = np.zeros(n, dtype=np.int64)
    picked = np.zeros(n, dtype=bool)
    kernel_s = greedy_s = 0.0
    evals = peak = 0
    for idx, res, tk, tg, nbytes in results:
        b = len(res.order)
        pos = idx[res.order]
        gains[pos] = res.gains
        rank[pos] = np.arange(b)
        picked[pos] = True
        if len(res.remaining):
            rest = idx[res.remaining]
            o = np.lexsort((res.remaining, -res.remaining_gains))
            gains[rest] = res.remaining_gains
            rank[rest[o]] = b + np.arange(len(o))
        kernel_s += tk
        greedy_s += tg
        evals += res.n_evals
        peak = max(peak, nbytes)
    sizes = np.array([len(m) for m in members])
    info = dict(n=n, n_parts=len(members), part_size_min=int(sizes.min()), part_size_max=int(sizes.max()),
                partition_backend=part_backend, knn_backend=knn_backend, partition_s=round(partition_s, 4),
                kernel_s=round(kernel_s, 4), greedy_s=round(greedy_s, 4), n_evals=int(evals),
                kernel_bytes_per_part_max=int(peak), objective_value=float(gains[picked].sum()))
    if cols is not None:
        info.update(knn_graph_s=round(graph_s, 4), knn_graph_bytes=int(graph_bytes))
    log.info("submodular gains: n=%d parts=%d kernel=%s %.1fs kernel, %.1fs greedy", n, len(members), kernel,
             kernel_s, greedy_s)
    return SubmodularGains(parts=parts, gains=gains, rank=rank, picked=picked, params=params, info=info)


def subset_from_gains(
    result: SubmodularGains,
    *,
    fraction: float = 0.25,
    ids: np.ndarray | None = None,
    sampling: str = "taylor_softmax",
    temperature: float = 1.0,
    normalize: str = "none",
    seed: int = 0,
    method: str = "ingenious",
) -> Selection:
    """Pure: a :class:`Selection` of ``round(fraction * n)`` examples (at least 1) drawn from ``result``.

    ``sampling``: ``taylor_softmax`` [paper, temperature 1.0, reference fraction 0.25], ``top_k`` or
    ``uniform`` (ablations); see :mod:`.sampling`. ``ids``: stable ids (default ``0 .. n-1``).
    Re-selection every R steps: call again with another ``seed``.
    """
    fraction = check_fraction("fraction", fraction)
    n = result.n
    ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids)
    if ids.shape != (n,):
        raise ConfigError(f"ids must have one entry per example ({n}), got shape {ids.shape}")
    budget = max(1, int(round(fraction * n)))
    pos = sample_subset(result.gains, result.parts, result.rank, budget=budget, sampling=sampling,
                        temperature=temperature, normalize=normalize, seed=seed)
    params = dict(result.params, fraction=fraction, sampling=sampling, temperature=temperature,
                  normalize=normalize, sample_seed=seed)
    return Selection(method=method, indices=pos, ids=ids[pos], n_total=n, params=params,
                     gains=result.gains[pos], info=dict(result.info))
