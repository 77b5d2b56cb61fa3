"""Partitions of the ground set, so each part's similarity kernel fits in memory.

A partition is an int64 array ``parts[n]`` of part ids ``0 .. P-1`` (every id used). ``random``
splits a seeded permutation into ``P`` parts whose sizes differ by at most one (the INGENIOUS
reference); ``kmeans`` groups similar examples (seeded k-means++ seeding on a subsample, then Lloyd's
iterations in FAISS when installed, else in torch), then splits any cluster larger than ``max_size`` at random, so near neighbours share a
part and a per-part kNN kernel loses fewer of them.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from ...._validate import check_choice, check_int
from ._checks import BACKENDS, CHUNK, check_embeddings, f32_rows, faiss_or_none, faiss_seed

log = logging.getLogger(__name__)


def random_partition(n: int, *, n_parts: int, seed: int) -> np.ndarray:
    """Pure: a seeded random partition of ``range(n)`` into ``n_parts`` near-equal parts."""
    n = check_int("n", n, min=1)
    n_parts = check_int("n_parts (at most the number of examples)", n_parts, min=1, max=n)
    seed = check_int("seed", seed, min=0)
    perm = np.random.default_rng(seed).permutation(n)
    parts = np.empty(n, dtype=np.int64)
    parts[perm] = np.arange(n, dtype=np.int64) % n_parts
    return parts


def _kmeans_pp(t: torch.Tensor, n_clusters: int, g: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007) on the rows of ``t``: each new centre is drawn
    with probability proportional to the squared distance to the nearest centre so far."""
    n = t.shape[0]
    sq = (t * t).sum(1)
    cent = torch.empty(n_clusters, t.shape[1], dtype=t.dtype)
    cent[0] = t[torch.randint(0, n, (1,), generator=g)]
    d2 = (sq - 2.0 * (t @ cent[0]) + sq.new_tensor(float(cent[0] @ cent[0]))).clamp_(min=0.0)
    for c in range(1, n_clusters):
        total = float(d2.sum())
        i = int(torch.multinomial(d2 / total, 1, generator=g)) if total > 0 else int(torch.randint(0, n, (1,), generator=g))
        cent[c] = t[i]
        d2 = torch.minimum(d2, (sq - 2.0 * (t @ cent[c]) + float(cent[c] @ cent[c])).clamp_(min=0.0))
    return cent


def _kmeans_init(x: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """k-means++ centres from a seeded subsample of at most ``max(20000, 50 * n_clusters)`` rows."""
    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    m = min(n, max(20_000, 50 * n_clusters))
    sub = torch.from_numpy(x)
    if m < n:
        sub = sub[torch.randperm(n, generator=g)[:m]]
    return _kmeans_pp(sub, n_clusters, g).numpy()


def _torch_kmeans(x: np.ndarray, init: np.ndarray, n_iter: int, block: int = 65536) -> np.ndarray:
    """Lloyd's iterations from ``init``; an emptied cluster keeps its centre."""
    t = torch.from_numpy(x)
    cent = torch.from_numpy(init.copy())
    n, n_clusters = t.shape[0], cent.shape[0]
    assign = torch.zeros(n, dtype=torch.int64)
    for it in range(n_iter):
        c2 = (cent * cent).sum(1)
        prev = assign.clone()
        for s in range(0, n, block):
            d = c2[None, :] - 2.0 * (t[s : s + block] @ cent.T)  # |x|^2 is the same for every centre
            assign[s : s + block] = d.argmin(1)
        if it and torch.equal(prev, assign):
            log.debug("torch k-means converged after %d iterations", it)
            break
        sums = torch.zeros_like(cent).index_add_(0, assign, t)
        counts = torch.bincount(assign, minlength=n_clusters)
        nz = counts > 0
        cent[nz] = sums[nz] / counts[nz, None].to(sums.dtype)
    return assign.numpy().astype(np.int64)


#: FAISS k-means trains on at most this many rows per centroid (its own default, 256); above that we
#: draw the training rows ourselves so that the pool is never converted to float32 as a whole.
POINTS_PER_CENTROID = 256


def kmeans_partition(embeddings: np.ndarray, *, n_parts: int, seed: int, max_size: int | None = None,
                     n_iter: int = 20, backend: str = "auto", normalize: bool = False) -> np.ndarray:
    """Pure: k-means clusters of the rows of ``embeddings`` as parts, clusters over ``max_size`` split.

    ``backend``: ``auto`` (FAISS if installed, else torch), ``faiss`` or ``torch``; the two give
    different (equally valid) partitions, so a run records which one it used. ``embeddings`` may be
    float16 (storage) and ``normalize`` clusters the unit-norm rows (directions, for cosine). With
    FAISS no float32 copy of the pool is made: above ``POINTS_PER_CENTROID * n_parts`` rows, k-means
    trains on a seeded sample of that many rows (FAISS would subsample to the same size itself) and
    every row is assigned to its nearest centre ``65,536`` rows at a time.
    """
    x = check_embeddings("embeddings", embeddings, allow_float16=True)
    n = x.shape[0]
    n_parts = check_int("n_parts (at most the number of examples)", n_parts, min=1, max=n)
    seed = check_int("seed", seed, min=0)
    n_iter = check_int("n_iter", n_iter, min=1)
    backend = check_choice("backend", backend, BACKENDS)
    if max_size is not None:
        max_size = check_int("max_size", max_size, min=1)
    if n_parts == 1:
        labels = np.zeros(n, dtype=np.int64)
    else:
        faiss = faiss_or_none(backend)
        big = faiss is not None and n > POINTS_PER_CENTROID * n_parts
        rows = (np.sort(np.random.default_rng(seed).choice(n, size=POINTS_PER_CENTROID * n_parts, replace=False))
                if big else slice(None))
        as_is = not big and x.dtype == np.float32 and not normalize  # the rows need no conversion
        train = x if as_is else f32_rows(x, rows, normalize=normalize)
        init = _kmeans_init(train, n_parts, seed)
        if faiss is None:
            labels = _torch_kmeans(train, init, n_iter)
        else:
            km = faiss.Kmeans(x.shape[1], n_parts, niter=n_iter, seed=faiss_seed(seed), verbose=False,
                              min_points_per_centroid=1,  # no "too few points" warning on stderr
                              max_points_per_centroid=POINTS_PER_CENTROID)
            km.train(train, init_centroids=init)
            del train
            labels = np.empty(n, dtype=np.int64)  # assigned CHUNK rows at a time
            for s in range(0, n, CHUNK):  # each converted chunk is freed before the next is made
                labels[s : s + CHUNK] = km.index.search(
                    x[s : s + CHUNK] if as_is else f32_rows(x, slice(s, s + CHUNK), normalize=normalize), 1)[1][:, 0]
    return split_parts(labels, max_size=max_size, seed=seed)


def split_parts(parts: np.ndarray, *, max_size: int | None, seed: int) -> np.ndarray:
    """Pure: relabel ``parts`` to ``0 .. P-1`` (in increasing id order) and split, at random, every part
    larger than ``max_size`` into near-equal pieces of at most ``max_size``."""
    parts = np.asarray(parts, dtype=np.int64)
    seed = check_int("seed", seed, min=0)
    _, labels = np.unique(parts, return_inverse=True)
    if max_size is None:
        return labels.astype(np.int64)
    max_size = check_int("max_size", max_size, min=1)
    rng = np.random.default_rng(seed)
    out = np.empty_like(labels)
    next_id = 0
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    for members in np.split(order, bounds):
        pieces = -(-len(members) // max_size)
        if pieces == 1:
            out[members] = next_id
        else:
            out[rng.permutation(members)] = next_id + np.arange(len(members)) % pieces
        next_id += pieces
    return out


def part_members(parts: np.ndarray) -> list[np.ndarray]:
    """The (ascending) member positions of each part ``0 .. P-1``."""
    order = np.argsort(parts, kind="stable")
    bounds = np.flatnonzero(np.diff(parts[order])) + 1
    return [m.astype(np.int64) for m in np.split(order, bounds)]
