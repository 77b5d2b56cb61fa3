"""Similarity kernels: dense ``[n, n]`` matrices for one part, sparse k-nearest-neighbour CSR kernels at scale.

Both kinds use the same similarity, so a sparse kernel that keeps every neighbour equals the dense one:

- ``cosine``: ``<x_i, x_j> / (|x_i| |x_j|)`` (a zero row has similarity 0 to everything);
- ``rbf``: ``exp(-gamma * |x_i - x_j|^2)`` (``gamma = 1`` suits L2-normalised embeddings, where
  ``|x_i - x_j|^2 = 2 - 2 cos``).

The diagonal is exactly 1 (an example is fully similar to itself), and every row of a kNN kernel
holds the example itself, so facility location always counts an example as covering itself.

Matrix products run in torch (so ``torch.set_num_threads`` controls them); the kNN search uses FAISS
when it is installed (``pip install 'datadiet[scale]'``) and an exact blocked torch top-k otherwise.
:func:`ann_knn_graph` is the approximate search over a whole pool (FAISS IVF or HNSW; faiss
required; its IVF lists may be stored compressed, ``ivf_storage='fp16'`` / ``'sq8'``, with the
found neighbours re-scored exactly), and :func:`knn_recall` measures any graph against the exact kNN
on sampled queries.
Memory: a dense kernel is ``4 n^2`` bytes; a kNN kernel is ``8 n k`` bytes (int32 column + float32
value per entry) plus ``8 (n + 1)`` for the row pointers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from ...._validate import check_choice, check_float, check_int
from ....errors import ConfigError
from ._checks import BACKENDS, CHUNK, check_embeddings, check_square_kernel, f32_rows, faiss_or_none, faiss_seed

log = logging.getLogger(__name__)

METRICS = ("cosine", "rbf")


@dataclass(frozen=True)
class SparseKernel:
    """A square sparse similarity matrix in CSR form.

    Row ``i`` holds the examples ``indices[indptr[i]:indptr[i + 1]]`` with similarities
    ``data[indptr[i]:indptr[i + 1]]``: for a kNN kernel, the ``k`` nearest neighbours of ``i``
    (itself included). Entries not stored are 0. ``K[i, j]`` is read as "how well ``j`` represents
    ``i``"; the kernel need not be symmetric.
    """

    indptr: np.ndarray  # int64 [n + 1]
    indices: np.ndarray  # int32 [nnz], column of each entry
    data: np.ndarray  # float32 [nnz], similarity of each entry
    n: int

    def __post_init__(self) -> None:
        if self.indptr.shape != (self.n + 1,) or self.indices.shape != self.data.shape:
            raise ConfigError(
                f"SparseKernel: indptr must have n + 1 = {self.n + 1} entries and indices/data the same length; "
                f"got {self.indptr.shape}, {self.indices.shape}, {self.data.shape}"
            )

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.indptr.nbytes + self.indices.nbytes + self.data.nbytes)

    def transpose(self) -> SparseKernel:
        """``K.T`` in CSR (a counting sort of the entries by column; memory O(nnz))."""
        rows = np.repeat(np.arange(self.n, dtype=self.indices.dtype), np.diff(self.indptr))
        order = np.argsort(self.indices, kind="stable")  # stable: rows stay ascending within a column
        counts = np.bincount(self.indices, minlength=self.n)
        indptr = np.zeros(self.n + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return SparseKernel(indptr=indptr, indices=rows[order], data=self.data[order], n=self.n)

    def to_dense(self) -> np.ndarray:
        """The dense ``[n, n]`` matrix (tests and small parts only)."""
        out = np.zeros((self.n, self.n), dtype=np.float32)
        rows = np.repeat(np.arange(self.n), np.diff(self.indptr))
        out[rows, self.indices] = self.data
        return out


def _prepare(x: np.ndarray, metric: str) -> torch.Tensor:
    t = torch.from_numpy(x)
    if metric == "cosine":
        t = torch.nn.functional.normalize(t, dim=1, eps=1e-12)
    return t


def _similarity_block(q: torch.Tensor, ref: torch.Tensor, ref_sq: torch.Tensor | None, metric: str, gamma: float) -> torch.Tensor:
    """Similarities of the rows of ``q`` to every row of ``ref`` ([b, n] float32)."""
    s = q @ ref.T
    if metric == "cosine":
        return s
    d2 = s.mul_(-2.0).add_((q * q).sum(1, keepdim=True)).add_(ref_sq[None, :])  # in place: one [b, n] buffer
    return d2.clamp_(min=0.0).mul_(-gamma).exp_()


def dense_kernel(embeddings: np.ndarray, *, metric: str = "cosine", gamma: float = 1.0) -> np.ndarray:
    """Pure: the dense similarity matrix ``[n, n]`` (float32, symmetric, diagonal exactly 1).

    ``metric``: ``cosine`` (default, the INGENIOUS paper's) or ``rbf`` with ``gamma``.
    Memory ``4 n^2`` bytes: use it for one part of at most ~10^4-2*10^4 examples.
    """
    x = check_embeddings("embeddings", embeddings)
    metric = check_choice("metric", metric, METRICS)
    gamma = check_float("gamma", gamma, min=0.0, min_open=True)
    t = _prepare(x, metric)
    sq = (t * t).sum(1) if metric == "rbf" else None
    k = _similarity_block(t, t, sq, metric, gamma).numpy()
    if metric == "cosine":
        k = np.clip(k, -1.0, 1.0, out=k)
    _symmetrize_(k)
    np.fill_diagonal(k, 1.0)
    return np.ascontiguousarray(k, dtype=np.float32)


def _symmetrize_(k: np.ndarray, block: int = 1024) -> None:
    """In place: copy the upper triangle onto the lower one (a BLAS product ``X X^T`` need not be
    bit-symmetric, and the greedy oracles read columns as rows only when it is)."""
    n = k.shape[0]
    for s in range(block, n, block):
        e = min(n, s + block)
        k[s:e, :s] = k[:s, s:e].T
    for s in range(0, n, block):  # inside each diagonal block
        e = min(n, s + block)
        blk = k[s:e, s:e]
        low = np.tril_indices(e - s, -1)
        blk[low] = blk.T[low]


def _csr_from_topk(idx: np.ndarray, val: np.ndarray) -> SparseKernel:
    """CSR from per-row neighbour lists ``[n, k]``, columns sorted within each row."""
    n, k = idx.shape
    order = np.argsort(idx, axis=1, kind="stable")
    idx = np.take_along_axis(idx, order, axis=1)
    val = np.take_along_axis(val, order, axis=1)
    indptr = np.arange(0, n * k + 1, k, dtype=np.int64)
    return SparseKernel(indptr=indptr, indices=np.ascontiguousarray(idx, dtype=np.int32).ravel(),
                        data=np.ascontiguousarray(val, dtype=np.float32).ravel(), n=n)


def _force_self(idx: np.ndarray, val: np.ndarray, row0: int) -> None:
    """In place: make each row ``r`` hold its own example (``row0 + r``) with similarity 1.

    If the search returned the example itself its value is set to 1; otherwise (exact duplicates
    can outrank it) the least similar neighbour is replaced by it.
    """
    rows = np.arange(idx.shape[0]) + row0
    is_self = idx == rows[:, None]
    has = is_self.any(axis=1)
    val[is_self] = 1.0
    miss = np.flatnonzero(~has)
    if len(miss):
        last = np.argmin(val[miss], axis=1)
        idx[miss, last] = rows[miss]
        val[miss, last] = 1.0


def sparse_from_dense(kernel: np.ndarray, *, k: int) -> SparseKernel:
    """Pure: keep each row's ``k`` largest similarities (the row's own entry always kept, set to 1)."""
    km = check_square_kernel("kernel", kernel)
    n = km.shape[0]
    k = check_int("k", k, min=1, max=n)
    t = torch.from_numpy(km).clone()
    t.fill_diagonal_(float("inf"))  # the example itself is always among its neighbours
    val, idx = torch.topk(t, k, dim=1)
    val, idx = val.numpy().copy(), idx.numpy().astype(np.int64)
    _force_self(idx, val, 0)
    return _csr_from_topk(idx, val)


def knn_kernel(
    embeddings: np.ndarray,
    *,
    k: int,
    metric: str = "cosine",
    gamma: float = 1.0,
    backend: str = "auto",
    block_size: int = 2048,
) -> SparseKernel:
    """Pure: the sparse kNN similarity kernel, row ``i`` = the ``k`` most similar examples to ``i``
    (``i`` itself included), in CSR form. Memory ``8 n k`` bytes.

    The search is exact: FAISS ``IndexFlatIP`` / ``IndexFlatL2`` when ``backend`` is ``auto`` or
    ``faiss`` and faiss is installed, else a blocked torch top-k (at most ``block_size`` rows at a
    time, and at most ~128 MB of scratch). Exact search costs ``O(n^2 d)``: at scale, partition
    first (k-means parts act like an inverted-file index) and build one kernel per part.
    """
    x = check_embeddings("embeddings", embeddings)
    n = x.shape[0]
    k = check_int("k (neighbours per example, at most the number of examples)", k, min=1, max=n)
    metric = check_choice("metric", metric, METRICS)
    gamma = check_float("gamma", gamma, min=0.0, min_open=True)
    backend = check_choice("backend", backend, BACKENDS)
    block_size = check_int("block_size", block_size, min=1)
    faiss = faiss_or_none(backend)
    t = _prepare(x, metric)
    if faiss is not None:
        ref = np.ascontiguousarray(t.numpy(), dtype=np.float32)
        index = faiss.IndexFlatIP(ref.shape[1]) if metric == "cosine" else faiss.IndexFlatL2(ref.shape[1])
        index.add(ref)
        val, idx = index.search(ref, k)
        idx = idx.astype(np.int64)
        if metric == "rbf":
            val = np.exp(-gamma * np.maximum(val, 0.0)).astype(np.float32)
        else:
            val = np.clip(val, -1.0, 1.0).astype(np.float32)
        if (idx < 0).any():  # cannot happen for k <= n with a flat index; guard anyway
            raise ConfigError("faiss returned fewer neighbours than asked; lower k")
        _force_self(idx, val, 0)
        log.debug("knn_kernel: faiss exact search n=%d k=%d", n, k)
        return _csr_from_topk(idx, val)
    sq = (t * t).sum(1) if metric == "rbf" else None
    idx_all = np.empty((n, k), dtype=np.int64)
    val_all = np.empty((n, k), dtype=np.float32)
    rows = max(1, min(block_size, (1 << 25) // n))  # scratch at most ~128 MB of similarities
    for s in range(0, n, rows):
        e = min(n, s + rows)
        sims = _similarity_block(t[s:e], t, sq, metric, gamma)
        r = torch.arange(e - s)
        sims[r, r + s] = float("inf")  # the example itself first
        val, idx = torch.topk(sims, k, dim=1)
        idx_all[s:e] = idx.numpy()
        val_all[s:e] = val.numpy()
    if metric == "cosine":
        np.clip(val_all, -1.0, 1.0, out=val_all)
    _force_self(idx_all, val_all, 0)
    log.debug("knn_kernel: torch exact search n=%d k=%d", n, k)
    return _csr_from_topk(idx_all, val_all)


# ------------------------------------------------------------------ approximate kNN over the whole pool
KNN_SEARCHES = ("exact_per_part", "faiss_ivf", "faiss_hnsw")
IVF_STORAGES = ("flat", "fp16", "sq8")
_ANN_INDEXES = ("ivf", "hnsw")
_CHUNK = CHUNK


def _require_faiss() -> object:
    """The faiss module, or the one-line ImportError naming ``pip install 'datadiet[scale]'``."""
    import importlib

    from ....errors import missing_extra

    try:
        return importlib.import_module("faiss")
    except ImportError:
        raise missing_extra("faiss-cpu", "scale") from None


def _f32_rows(x: np.ndarray, s: int, e: int, metric: str) -> np.ndarray:
    """Rows ``s:e`` of ``x`` (float16 or float32) as C-contiguous float32, unit-norm for cosine."""
    return f32_rows(x, slice(s, e), normalize=metric == "cosine")


def check_ivf_storage(ivf_storage: object, index: str) -> str:
    """``ivf_storage`` validated against :data:`IVF_STORAGES`; a compressed storage needs ``index='ivf'``."""
    ivf_storage = check_choice("ivf_storage", ivf_storage, IVF_STORAGES)
    if ivf_storage != "flat" and index != "ivf":
        raise ConfigError(f"ivf_storage={ivf_storage!r} compresses the lists of an IVF index, but index={index!r} "
                          "(HNSW stores full float32 vectors); set index='ivf' (knn_search='faiss_ivf') or "
                          "ivf_storage='flat'")
    return ivf_storage


def _rescore_(x: np.ndarray, idx: np.ndarray, val: np.ndarray, metric: str, gamma: float) -> None:
    """In place: ``val[i, j]`` = the exact similarity of row ``i`` to row ``idx[i, j]`` of ``x``.

    The same similarity as the exact kernels (cosine of the normalised float32 rows, or
    ``exp(-gamma |x_i - x_j|^2)`` with the squared distance expanded as :func:`_similarity_block`
    does; before ``_force_self``). Neighbour rows are gathered ``_CHUNK`` at a time (about
    ``_CHUNK * d * 4`` bytes of scratch, ~100 MB at ``d = 384``), so no float32 copy of the pool is made.
    """
    n, k = idx.shape
    rows = max(1, _CHUNK // k)
    for s in range(0, n, rows):
        e = min(n, s + rows)
        q = torch.from_numpy(np.require(_f32_rows(x, s, e, metric), requirements="W"))  # [b, d]
        nb = torch.from_numpy(np.asarray(x[idx[s:e].ravel()], dtype=np.float32))  # a fresh [b k, d] gather
        if metric == "cosine":
            nb.div_(torch.linalg.vector_norm(nb, dim=1, keepdim=True).clamp_(min=1e-12))
        nb = nb.view(e - s, k, -1)
        dot = torch.bmm(nb, q.unsqueeze(2)).squeeze(2)  # [b, k]
        if metric == "cosine":
            val[s:e] = dot.clamp_(-1.0, 1.0).numpy()
        else:
            d2 = dot.mul_(-2.0).add_((q * q).sum(1, keepdim=True)).add_((nb * nb).sum(2))
            val[s:e] = d2.clamp_(min=0.0).mul_(-gamma).exp_().numpy()


def default_nlist(n: int) -> int:
    """``round(4 sqrt(n))`` inverted lists, at least 1 and at most ``n``."""
    return int(max(1, min(n, round(4.0 * np.sqrt(n)))))


def ann_knn_graph(
    embeddings: np.ndarray,
    *,
    k: int,
    metric: str = "cosine",
    gamma: float = 1.0,
    index: str = "ivf",
    nlist: int | None = None,
    nprobe: int = 32,
    hnsw_m: int = 32,
    ef_search: int = 128,
    seed: int = 0,
    train_per_list: int = 256,
    ivf_storage: str = "flat",
) -> tuple[np.ndarray, np.ndarray]:
    """Pure: an *approximate* kNN graph over the whole pool with FAISS, ``(idx, sim)``, both ``[n, k]``.

    Row ``i`` holds ``i`` itself (similarity exactly 1, as :func:`knn_kernel`) and its ``k - 1``
    (approximately) most similar examples, in decreasing similarity; ``sim`` is the same similarity
    as the exact kernels (``cosine`` or ``rbf`` with ``gamma``). ``index``:

    - ``ivf`` (default): ``IndexIVFFlat`` (inner product on unit-norm rows for cosine, L2 for rbf) with
      ``nlist`` lists (default ``round(4 sqrt(n))``), k-means trained with ``seed``; a query scans
      ``nprobe`` lists (more: higher recall, slower). The k-means is trained on at most
      ``train_per_list * nlist`` rows (a seeded sample; FAISS's own ceiling is 256 per list, its
      floor 39): at a million rows that training is most of the index's cost, so fewer rows per list
      build it faster for a small loss of recall (measure with :func:`knn_recall`). Deterministic for a seed.
      ``ivf_storage`` sets what the lists hold: ``flat`` (default) a float32 copy of every row
      (``4 d`` bytes per point, 1,536 at ``d = 384``); ``fp16`` (``IndexIVFScalarQuantizer``,
      ``QT_fp16``) half that; ``sq8`` (``QT_8bit``, one byte per dimension, trained on the same
      k-means sample) a quarter. With compressed lists FAISS ranks by approximate similarities, so
      each row's ``k`` found neighbours are re-scored exactly from ``embeddings`` (in chunks, no
      float32 copy of the pool) and re-sorted: ``sim`` is exact whatever the storage, and only
      which neighbours are found (the recall) can change.
    - ``hnsw``: ``IndexHNSWFlat`` with ``hnsw_m`` links and ``ef_search``; no training, but
      multi-threaded construction is not bit-reproducible.

    ``embeddings`` may be float16 (half the storage): rows are converted to float32 (and normalised)
    ``65,536`` at a time, so no float32 copy of the pool is made besides the index's own. A row for
    which the index returns fewer than ``k`` neighbours (too few points in its probed lists) is
    searched exactly. Needs faiss (``pip install 'datadiet[scale]'``); cost ~``O(n d (nlist +
    nprobe n / nlist))`` for ``ivf`` against ``O(n^2 d)`` for an exact search. Measure the result with
    :func:`knn_recall`.
    """
    x = check_embeddings("embeddings", embeddings, allow_float16=True)
    n, d = x.shape
    k = check_int("k (neighbours per example, at most the number of examples)", k, min=1, max=n)
    gamma = check_float("gamma", gamma, min=0.0, min_open=True)
    t0 = time.perf_counter()
    ef_search = check_int("ef_search", ef_search, min=1)
    ivf_storage = check_ivf_storage(ivf_storage, check_choice("index", index, _ANN_INDEXES))
    ix = ann_index(x, metric=metric, index=index, nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m,
                   ef_search=max(ef_search, k), seed=seed, train_per_list=train_per_list, ivf_storage=ivf_storage)
    t1 = time.perf_counter()
    idx = np.empty((n, k), dtype=np.int64)
    val = np.empty((n, k), dtype=np.float32)
    for s in range(0, n, _CHUNK):
        e = min(n, s + _CHUNK)
        v, i = ix.search(_f32_rows(x, s, e, metric), k)
        idx[s:e], val[s:e] = i, v
    short = np.flatnonzero((idx < 0).any(axis=1))
    if len(short):  # rows whose probed lists held fewer than k points: search them exactly
        ref = torch.from_numpy(np.concatenate([_f32_rows(x, s, min(n, s + _CHUNK), metric)
                                               for s in range(0, n, _CHUNK)]))
        q = ref[torch.from_numpy(short)]
        s_ = q @ ref.T if metric == "cosine" else -((q * q).sum(1, keepdim=True) - 2.0 * (q @ ref.T)
                                                    + (ref * ref).sum(1)[None, :]).clamp_(min=0.0)
        v, i = torch.topk(s_, k, dim=1)
        idx[short], val[short] = i.numpy(), (v.numpy() if metric == "cosine" else -v.numpy())
        log.debug("ann_knn_graph: %d row(s) searched exactly (fewer than k=%d points probed)", len(short), k)
    if ivf_storage != "flat":  # approximate similarities from compressed lists: re-score exactly, re-sort
        _rescore_(x, idx, val, metric, gamma)
        _force_self(idx, val, 0)
        own = idx == np.arange(n)[:, None]
        order = np.lexsort((-val, ~own), axis=1)  # the row itself first, then by decreasing exact similarity
    else:
        if metric == "rbf":
            val = np.exp(-gamma * np.maximum(val, 0.0)).astype(np.float32)
        else:
            np.clip(val, -1.0, 1.0, out=val)
        _force_self(idx, val, 0)
        order = np.argsort(-val, axis=1, kind="stable")  # the forced self (1.0) first, then by similarity
    idx, val = np.take_along_axis(idx, order, axis=1), np.take_along_axis(val, order, axis=1)
    log.info("ann_knn_graph: faiss %s over %d points, k=%d: index built in %.1f s, searched in %.1f s",
             f"ivf ({ivf_storage} lists)" if index == "ivf" else index, n, k, t1 - t0, time.perf_counter() - t1)
    return idx, val


def ann_index(
    embeddings: np.ndarray,
    *,
    metric: str = "cosine",
    index: str = "ivf",
    nlist: int | None = None,
    nprobe: int = 32,
    hnsw_m: int = 32,
    ef_search: int = 128,
    seed: int = 0,
    train_per_list: int = 256,
    ivf_storage: str = "flat",
):
    """The FAISS index :func:`ann_knn_graph` searches (same arguments, same index for a seed), with
    every row of ``embeddings`` added; search it for a sample of rows to measure its recall without
    searching the whole pool. ``ivf_storage``: ``flat`` (``IndexIVFFlat``), ``fp16`` or ``sq8``
    (``IndexIVFScalarQuantizer`` with ``QT_fp16`` / ``QT_8bit``; ``index='ivf'`` only). The
    distances it returns are the index's own (approximate for compressed lists; :func:`ann_knn_graph`
    re-scores them). Needs faiss."""
    x = check_embeddings("embeddings", embeddings, allow_float16=True)
    n, d = x.shape
    metric = check_choice("metric", metric, METRICS)
    index = check_choice("index", index, _ANN_INDEXES)
    ivf_storage = check_ivf_storage(ivf_storage, index)
    nlist = default_nlist(n) if nlist is None else check_int("nlist (at most the number of examples)", nlist,
                                                             min=1, max=n)
    nprobe = check_int("nprobe", nprobe, min=1)
    hnsw_m = check_int("hnsw_m", hnsw_m, min=2)
    ef_search = check_int("ef_search", ef_search, min=1)
    seed = check_int("seed", seed, min=0)
    train_per_list = check_int("train_per_list", train_per_list, min=1)
    faiss = _require_faiss()
    mt = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    if index == "ivf":
        quantizer = faiss.IndexFlatIP(d) if metric == "cosine" else faiss.IndexFlatL2(d)
        if ivf_storage == "flat":
            ix = faiss.IndexIVFFlat(quantizer, d, nlist, mt)
        else:
            qtype = faiss.ScalarQuantizer.QT_fp16 if ivf_storage == "fp16" else faiss.ScalarQuantizer.QT_8bit
            ix = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, qtype, mt)
        ix.cp.seed = faiss_seed(seed)
        ix.cp.min_points_per_centroid = 1  # no "too few training points" warning on stderr
        ntrain = min(n, train_per_list * nlist)
        pick = np.sort(np.random.default_rng(seed).permutation(n)[:ntrain]) if ntrain < n else np.arange(n)
        ix.train(np.concatenate([_f32_rows(x[pick], s, min(len(pick), s + _CHUNK), metric)
                                 for s in range(0, len(pick), _CHUNK)]))
        ix.nprobe = min(nprobe, nlist)
    else:
        ix = faiss.IndexHNSWFlat(d, hnsw_m, mt)
        ix.hnsw.efSearch = ef_search
    for s in range(0, n, _CHUNK):
        ix.add(_f32_rows(x, s, min(n, s + _CHUNK), metric))
    return ix


def ann_knn_kernel(embeddings: np.ndarray, *, k: int, **kwargs: object) -> SparseKernel:
    """Pure: :func:`ann_knn_graph` as a :class:`SparseKernel` (CSR, columns sorted in each row)."""
    idx, val = ann_knn_graph(embeddings, k=k, **kwargs)
    return _csr_from_topk(idx, val)


def _graph_rows(graph: object, name: str) -> list[np.ndarray] | np.ndarray:
    if isinstance(graph, SparseKernel):
        return [graph.indices[graph.indptr[i]:graph.indptr[i + 1]] for i in range(graph.n)]
    a = np.asarray(graph)
    if a.ndim != 2 or not np.issubdtype(a.dtype, np.integer):
        raise ConfigError(f"{name} must be a SparseKernel or an integer neighbour array [n, k], got "
                          f"{type(graph).__name__} of shape {getattr(a, 'shape', None)}")
    return a


def knn_recall(
    graph: object,
    embeddings: np.ndarray,
    *,
    n_queries: int = 1000,
    metric: str = "cosine",
    exclude_self: bool = False,
    seed: int = 0,
) -> float:
    """Pure: the recall of a kNN graph against the exact kNN, on a seeded sample of query rows.

    ``graph``: neighbour lists, an int array ``[n, k]`` (as :func:`ann_knn_graph` returns) or a
    :class:`SparseKernel`. For each of ``min(n_queries, n)`` rows ``i`` (drawn without replacement
    with ``numpy.random.default_rng(seed)``; every row when ``n_queries >= n``) the exact ``k_i``
    most similar examples are found by brute force (``metric`` as the kernels; ``i`` itself first,
    as the kernels hold it) and the recall is ``sum_i |graph_i & exact_i| / sum_i k_i``, where
    ``k_i`` is the length of row ``i``. ``exclude_self``: drop ``i`` from both lists (the recall of
    the true neighbours only). An exact graph has recall 1 (up to ties in similarity).
    """
    x = check_embeddings("embeddings", embeddings, allow_float16=True)
    n = x.shape[0]
    rows = _graph_rows(graph, "graph")
    if len(rows) != n:
        raise ConfigError(f"graph has {len(rows)} rows but there are {n} embeddings")
    n_queries = check_int("n_queries", n_queries, min=1)
    metric = check_choice("metric", metric, METRICS)
    seed = check_int("seed", seed, min=0)
    from ._checks import check_bool

    exclude_self = check_bool("exclude_self", exclude_self)
    q = np.arange(n) if n_queries >= n else np.sort(np.random.default_rng(seed).choice(n, n_queries, replace=False))
    ref = torch.from_numpy(np.concatenate([_f32_rows(x, s, min(n, s + _CHUNK), metric)
                                           for s in range(0, n, _CHUNK)]))
    sq = (ref * ref).sum(1) if metric == "rbf" else None
    hit = total = 0
    kmax = max(len(rows[i]) for i in q)
    for s in range(0, len(q), 1024):
        qi = torch.from_numpy(q[s:s + 1024].astype(np.int64))
        sims = _similarity_block(ref[qi], ref, sq, metric, 1.0)
        sims[torch.arange(len(qi)), qi] = float("inf")
        top = torch.topk(sims, min(kmax + 1, n), dim=1).indices.numpy()  # i itself first
        for r, i in enumerate(q[s:s + 1024].tolist()):
            got = np.asarray(rows[i], dtype=np.int64)
            if exclude_self:
                got = got[got != i]
                exact = top[r, 1:1 + len(got)]
            else:
                exact = top[r, :len(got)]
            hit += len(np.intersect1d(got, exact))
            total += len(got)
    return float(hit / total) if total else 1.0
