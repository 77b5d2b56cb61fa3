"""Approximate kNN over the whole pool (FAISS IVF / HNSW) for INGENIOUS's sparse kernel, and its recall."""

from __future__ import annotations

import builtins
import importlib

import numpy as np
import pytest

from datadiet.errors import ConfigError
from datadiet.methods.ingenious.submodular import (
    ann_knn_graph,
    ann_knn_kernel,
    dense_kernel,
    greedy_maximize,
    knn_kernel,
    knn_recall,
    objective_value,
    random_partition,
    submodular_gains,
)
from datadiet.methods.ingenious.submodular.pipeline import _part_subkernel

HAVE_FAISS = importlib.util.find_spec("faiss") is not None
needs_faiss = pytest.mark.skipif(not HAVE_FAISS, reason="faiss not installed (pip install 'datadiet[scale]')")

if HAVE_FAISS:
    import faiss

    faiss.omp_set_num_threads(1)


def planted(n: int = 2000, d: int = 32, clusters: int = 40, noise: float = 0.3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(clusters, d))
    x = c[rng.integers(0, clusters, n)] + noise * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# ------------------------------------------------------------------------------------------- recall
def test_recall_exact_graph_is_one_and_wrong_neighbours_give_known_fraction():
    x = planted(300, 16, clusters=10, noise=0.5)
    exact = knn_kernel(x, k=5, backend="torch")
    assert knn_recall(exact, x) == 1.0
    idx = exact.indices.reshape(300, 5).astype(np.int64)
    assert knn_recall(idx, x, n_queries=50, seed=3) == 1.0
    # replace one true (non-self) neighbour of the first 60 rows by the row's least similar example
    wrong = idx.copy()
    sims = x @ x.T
    for i in range(60):
        col = int(np.flatnonzero(wrong[i] != i)[0])
        wrong[i, col] = int(np.argmin(sims[i]))
    assert knn_recall(wrong, x) == pytest.approx(1.0 - 60 / (300 * 5))
    assert knn_recall(wrong, x, exclude_self=True) == pytest.approx(1.0 - 60 / (300 * 4))
    with pytest.raises(ConfigError, match="rows"):
        knn_recall(wrong[:10], x)


@needs_faiss
@pytest.mark.parametrize("metric", ["cosine", "rbf"])
def test_faiss_ivf_whole_pool_recall_is_high(metric):
    x = planted()
    idx, val = ann_knn_graph(x, k=10, metric=metric, nprobe=32, seed=0)
    assert idx.shape == val.shape == (2000, 10)
    assert (idx[:, 0] == np.arange(2000)).all() and (val[:, 0] == 1.0).all()  # the example itself first
    assert (np.diff(val, axis=1) <= 1e-6).all()
    r = knn_recall(idx, x, n_queries=500, metric=metric, exclude_self=True, seed=1)
    assert r >= 0.9, r
    # the approximate kernel's similarities are the exact ones for the neighbours it found
    k = ann_knn_kernel(x, k=10, metric=metric, nprobe=32)
    assert np.allclose(k.to_dense()[k.to_dense() != 0], dense_kernel(x, metric=metric)[k.to_dense() != 0], atol=1e-5)


@needs_faiss
def test_faiss_hnsw_recall_and_float16_storage():
    x = planted()
    idx, _ = ann_knn_graph(x, k=10, index="hnsw")
    assert knn_recall(idx, x, n_queries=500, exclude_self=True) >= 0.9
    i16, v16 = ann_knn_graph(x.astype(np.float16), k=10, nprobe=32)
    assert v16.dtype == np.float32
    assert knn_recall(i16, x, n_queries=500, exclude_self=True) >= 0.9


@needs_faiss
def test_ann_graph_is_deterministic_and_fills_short_rows():
    x = planted(500)
    a = ann_knn_graph(x, k=8, nprobe=4, seed=7)
    b = ann_knn_graph(x, k=8, nprobe=4, seed=7)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    # nlist = n and nprobe = 1: each probed list holds ~1 point, so rows are completed by an exact search
    idx, _ = ann_knn_graph(x, k=8, nlist=500, nprobe=1)
    assert (idx >= 0).all() and all(len(set(r)) == 8 for r in idx.tolist())


@needs_faiss
def test_fewer_kmeans_rows_per_list_build_an_index_that_still_finds_the_neighbours():
    from datadiet.methods.ingenious.submodular.kernels import ann_index

    x = planted()  # 2,000 rows, nlist 179: 256 rows per list trains on every row, 4 per list on 716 of them
    few = ann_knn_graph(x, k=10, nprobe=32, seed=0, train_per_list=4)  # 716 of the 2,000 rows
    assert knn_recall(few[0], x, n_queries=500, exclude_self=True, seed=1) >= 0.9
    # the index the graph searches is ann_index's: searching it for some rows gives those rows' lists
    ix = ann_index(x, nprobe=32, seed=0, train_per_list=4)
    unit = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    _, got = ix.search(unit[:50], 10)
    assert all(set(got[r]) == set(few[0][r]) for r in range(50))
    with pytest.raises(ConfigError, match="train_per_list"):
        ann_knn_graph(x, k=10, train_per_list=0)


# ------------------------------------------------------------------- compressed IVF lists (fp16, sq8)
@needs_faiss
@pytest.mark.parametrize("metric,gamma", [("cosine", 1.0), ("rbf", 0.5)])
@pytest.mark.parametrize("storage", ["fp16", "sq8"])
def test_compressed_ivf_lists_keep_recall_and_give_exact_similarities(storage, metric, gamma):
    x = planted()
    n = len(x)
    flat_idx, _ = ann_knn_graph(x, k=10, metric=metric, gamma=gamma, nprobe=32, seed=0)
    idx, val = ann_knn_graph(x, k=10, metric=metric, gamma=gamma, nprobe=32, seed=0, ivf_storage=storage)
    assert idx.shape == val.shape == (n, 10) and idx.dtype == np.int64 and val.dtype == np.float32
    r_flat = knn_recall(flat_idx, x, n_queries=500, metric=metric, exclude_self=True, seed=1)
    r = knn_recall(idx, x, n_queries=500, metric=metric, exclude_self=True, seed=1)
    assert r >= 0.9 and r >= r_flat - 0.05, (r, r_flat)
    # the row itself first (similarity exactly 1), then by decreasing exact similarity
    assert (idx[:, 0] == np.arange(n)).all() and (val[:, 0] == 1.0).all()
    assert (np.diff(val, axis=1) <= 0).all()
    assert all(len(set(row)) == 10 for row in idx.tolist())
    # every value is the exact similarity of the neighbour returned (not the quantized one)
    exact = dense_kernel(x, metric=metric, gamma=gamma)[np.arange(n)[:, None], idx]
    assert np.abs(val - exact).max() <= 1e-5
    # deterministic for a seed
    again = ann_knn_graph(x, k=10, metric=metric, gamma=gamma, nprobe=32, seed=0, ivf_storage=storage)
    assert np.array_equal(again[0], idx) and np.array_equal(again[1], val)


@needs_faiss
@pytest.mark.parametrize("storage", ["fp16", "sq8"])
def test_compressed_ivf_lists_put_the_row_itself_first_among_exact_duplicates(storage):
    x = np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32)
    x[:20] = x[0]  # 20 identical rows, k = 5: the search can return other copies instead of the row itself
    for metric in ("cosine", "rbf"):
        idx, val = ann_knn_graph(x, k=5, metric=metric, nprobe=8, ivf_storage=storage)
        assert (idx[:, 0] == np.arange(300)).all() and (val[:, 0] == 1.0).all()
        assert (np.diff(val, axis=1) <= 0).all()
        assert np.allclose(val[:20], 1.0, atol=1e-6) and (idx[:20] < 20).all()


@needs_faiss
def test_compressed_ivf_index_stores_fp16_or_8bit_codes():
    from datadiet.methods.ingenious.submodular.kernels import ann_index

    x = planted(500)
    d = x.shape[1]
    flat = ann_index(x, nprobe=8, seed=0)
    assert isinstance(flat, faiss.IndexIVFFlat) and flat.code_size == 4 * d
    for storage, qtype, code in (("fp16", faiss.ScalarQuantizer.QT_fp16, 2 * d),
                                 ("sq8", faiss.ScalarQuantizer.QT_8bit, d)):
        ix = ann_index(x, nprobe=8, seed=0, ivf_storage=storage)
        assert isinstance(ix, faiss.IndexIVFScalarQuantizer) and ix.sq.qtype == qtype
        assert ix.code_size == code and ix.ntotal == 500 and ix.nlist == flat.nlist
        assert ix.metric_type == faiss.METRIC_INNER_PRODUCT
    assert ann_index(x, metric="rbf", ivf_storage="sq8").metric_type == faiss.METRIC_L2


@needs_faiss
def test_flat_ivf_storage_is_unchanged_and_float16_input_works_compressed():
    from datadiet.methods.ingenious.submodular.kernels import _f32_rows, _force_self, ann_index

    x = planted()
    n = len(x)
    for metric in ("cosine", "rbf"):
        a = ann_knn_graph(x, k=10, metric=metric, nprobe=8, seed=3)
        b = ann_knn_graph(x, k=10, metric=metric, nprobe=8, seed=3, ivf_storage="flat")
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    # "flat" is the earlier result: FAISS's own IndexIVFFlat similarities, the self forced, sorted (stable)
    ix = ann_index(x, nprobe=8, seed=3)
    v, i = ix.search(_f32_rows(x, 0, n, "cosine"), 10)
    v = np.clip(v, -1.0, 1.0)
    _force_self(i, v, 0)
    order = np.argsort(-v, axis=1, kind="stable")
    idx, val = ann_knn_graph(x, k=10, nprobe=8, seed=3)
    assert np.array_equal(idx, np.take_along_axis(i, order, axis=1))
    assert np.array_equal(val, np.take_along_axis(v, order, axis=1))
    # float16 storage of the embeddings with 8-bit lists: values exact for the float16 rows
    x16 = x.astype(np.float16)
    i16, v16 = ann_knn_graph(x16, k=10, nprobe=32, ivf_storage="sq8")
    assert v16.dtype == np.float32 and (i16[:, 0] == np.arange(n)).all() and (v16[:, 0] == 1.0).all()
    assert knn_recall(i16, x, n_queries=500, exclude_self=True) >= 0.9
    exact = dense_kernel(x16.astype(np.float32))[np.arange(n)[:, None], i16]
    assert np.abs(v16 - exact).max() <= 1e-5
    # rows whose probed lists hold fewer than k points are completed exactly, compressed too
    idx, val = ann_knn_graph(x[:500], k=8, nlist=500, nprobe=1, ivf_storage="fp16")
    assert (idx >= 0).all() and all(len(set(r)) == 8 for r in idx.tolist())
    assert np.abs(val - dense_kernel(x[:500])[np.arange(500)[:, None], idx]).max() <= 1e-5


@needs_faiss
def test_seeds_above_faiss_int_range_work():
    # the method derives 32-bit seeds (derive_seed); FAISS seeds are C ints: seeds are taken mod 2^31
    from datadiet.methods.ingenious.submodular import kmeans_partition

    x = planted(400)
    big = 2**32 - 1
    a = ann_knn_graph(x, k=5, nprobe=4, seed=big)
    b = ann_knn_graph(x, k=5, nprobe=4, seed=big - 2**31)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert np.array_equal(kmeans_partition(x, n_parts=3, seed=big, backend="faiss"),
                          kmeans_partition(x, n_parts=3, seed=big, backend="faiss"))


def test_ivf_storage_is_validated_early_with_the_fix_named():
    from datadiet.methods.ingenious.method import Ingenious
    from datadiet.methods.ingenious.submodular.kernels import ann_index

    x = planted(100, 8, clusters=4)
    # no faiss needed: these fail before any index is built
    with pytest.raises(ConfigError, match="ivf_storage must be one of 'flat', 'fp16', 'sq8', got 'pq'"):
        ann_knn_graph(x, k=5, ivf_storage="pq")
    with pytest.raises(ConfigError, match="ivf_storage must be one of"):
        ann_index(x, ivf_storage="int8")
    for call in (lambda: ann_knn_graph(x, k=5, index="hnsw", ivf_storage="sq8"),
                 lambda: ann_index(x, index="hnsw", ivf_storage="fp16")):
        with pytest.raises(ConfigError, match=r"set index='ivf' \(knn_search='faiss_ivf'\) or ivf_storage='flat'"):
            call()
    for search in ("exact_per_part", "faiss_hnsw"):
        with pytest.raises(ConfigError, match="set knn_search='faiss_ivf' or ivf_storage='flat'"):
            submodular_gains(x, kernel="knn", knn=5, knn_search=search, ivf_storage="sq8")
    with pytest.raises(ConfigError, match="ivf_storage must be one of"):
        submodular_gains(x, kernel="knn", knn=5, knn_search="faiss_ivf", ivf_storage="SQ8")
    assert Ingenious().ivf_storage == "flat"
    with pytest.raises(ConfigError, match="knn_search=faiss_ivf"):
        Ingenious(kernel="knn", ivf_storage="sq8")
    with pytest.raises(ConfigError, match="ivf_storage"):
        Ingenious(kernel="knn", knn_search="faiss_ivf", ivf_storage="sq4")


@needs_faiss
def test_ivf_storage_reaches_the_graph_builder_from_the_pipeline_and_the_method(monkeypatch):
    from datadiet.methods.ingenious.method import Ingenious
    from datadiet.methods.ingenious.submodular import pipeline

    seen = []
    real = pipeline.ann_knn_graph

    def spy(*a, **kw):
        seen.append(kw.get("ivf_storage"))
        return real(*a, **kw)

    monkeypatch.setattr(pipeline, "ann_knn_graph", spy)
    x = planted(600)
    g = submodular_gains(x, kernel="knn", knn=8, n_parts=2, knn_search="faiss_ivf", nprobe=16, seed=1,
                         ivf_storage="sq8")
    assert seen == ["sq8"] and g.params["ivf_storage"] == "sq8" and g.params["nprobe"] == 16
    flat = submodular_gains(x, kernel="knn", knn=8, n_parts=2, knn_search="faiss_ivf", nprobe=16, seed=1)
    assert seen[-1] == "flat" and flat.params["ivf_storage"] == "flat"
    assert g.picked.sum() == flat.picked.sum()  # same greedy budget per part whatever the lists hold
    m = Ingenious(kernel="knn", knn=8, knn_search="faiss_ivf", ivf_storage="fp16")
    assert m._gains_kwargs()["ivf_storage"] == "fp16" and m.params()["ivf_storage"] == "fp16"
    got = m.gains(x, seed=0)
    assert seen[-1] == "fp16" and got.params["ivf_storage"] == "fp16"


# --------------------------------------------------------------------------------- crossing parts
@needs_faiss
def test_neighbours_cross_parts_with_faiss_and_never_exact_per_part():
    x = planted(1000, 32, clusters=100, noise=0.1)  # ~10 near-duplicates per cluster, spread over 4 random parts
    parts = random_partition(1000, n_parts=4, seed=5)
    exact = knn_kernel(x, k=6, backend="torch").indices.reshape(1000, 6)
    assert (parts[exact] != parts[:, None]).any(axis=1).mean() > 0.5  # true neighbours lie in other parts
    from datadiet.methods.ingenious.submodular.pipeline import part_members

    members = part_members(parts)
    # old path: the exact per-part kernels only ever link members of one part
    for m in members:
        k = knn_kernel(x[m], k=6, backend="torch")
        assert (parts[m[k.indices]] == parts[m[np.repeat(np.arange(len(m)), np.diff(k.indptr))]]).all()
    # new path: the whole-pool graph links across parts; each part's sub-kernel covers outside rows
    idx, val = ann_knn_graph(x, k=6, nprobe=64)
    assert (parts[idx] != parts[:, None]).any(axis=1).mean() > 0.5
    cols = knn_kernel(x, k=6, backend="torch")  # exact graph, so the sub-kernels can be checked by hand
    t = cols.transpose()
    for m in members:
        sub, nc = _part_subkernel(t, m)
        assert nc == len(m) and sub.n > len(m)  # rows outside the part are covered
        assert sub.indices.max() < len(m)  # only members are candidates
        s = np.arange(0, len(m), 7)
        assert objective_value(sub, s) == pytest.approx(objective_value(cols, m[s]), rel=1e-6)


@needs_faiss
def test_submodular_gains_option_default_unchanged_and_validated():
    x = planted(800)
    a = submodular_gains(x, kernel="knn", knn=8, n_parts=3, seed=2)
    b = submodular_gains(x, kernel="knn", knn=8, n_parts=3, seed=2, knn_search="exact_per_part")
    assert np.array_equal(a.gains, b.gains) and a.info["knn_backend"] == "faiss"
    c = submodular_gains(x, kernel="knn", knn=8, n_parts=3, seed=2, knn_search="faiss_ivf", nprobe=16)
    assert c.info["knn_backend"] == "faiss_ivf" and c.params["nprobe"] == 16 and c.picked.all()
    with pytest.raises(ConfigError, match="kernel='knn'"):
        submodular_gains(x, kernel="dense", knn_search="faiss_ivf")
    with pytest.raises(ConfigError, match="knn_search"):
        submodular_gains(x, kernel="knn", knn_search="annoy")


# ------------------------------------------------------------------------------ objective quality
@needs_faiss
def test_greedy_objective_with_approximate_graph_close_to_dense_and_deterministic():
    x = planted(1000, 32, clusters=40, noise=0.4, seed=1)
    dense = dense_kernel(x)
    budget = 100
    ref = greedy_maximize(dense, budget=budget)
    f_dense = objective_value(dense, ref.order)
    gi, gv = ann_knn_graph(x, k=20, nprobe=32, seed=0)
    from datadiet.methods.ingenious.submodular.kernels import _csr_from_topk

    approx = greedy_maximize(_csr_from_topk(gi, gv), budget=budget)
    f_approx = objective_value(dense, approx.order)
    assert f_approx >= 0.97 * f_dense, (f_approx, f_dense)
    # through the pipeline, one part: the greedy order's prefix is the same selection, run to run
    g1 = submodular_gains(x, kernel="knn", knn=20, n_parts=1, knn_search="faiss_ivf", seed=4, greedy_fraction=0.1)
    g2 = submodular_gains(x, kernel="knn", knn=20, n_parts=1, knn_search="faiss_ivf", seed=4, greedy_fraction=0.1)
    assert np.array_equal(g1.gains, g2.gains) and np.array_equal(g1.rank, g2.rank)
    sel = np.flatnonzero(g1.picked)
    assert objective_value(dense, sel) >= 0.97 * f_dense
    # several parts: each part picks among its members but covers the whole pool
    x = planted(2000, 32, clusters=40, noise=0.4, seed=1)
    dense = dense_kernel(x)
    f_dense = objective_value(dense, greedy_maximize(dense, budget=200).order)
    g3 = submodular_gains(x, kernel="knn", knn=20, n_parts=4, knn_search="faiss_ivf", seed=4, greedy_fraction=0.1)
    g4 = submodular_gains(x, kernel="knn", knn=20, n_parts=4, knn_search="faiss_ivf", seed=4, greedy_fraction=0.1)
    assert np.array_equal(g3.gains, g4.gains) and np.array_equal(g3.picked, g4.picked)
    assert objective_value(dense, np.flatnonzero(g3.picked)) >= 0.97 * f_dense


def test_greedy_n_candidates_restricts_picks():
    x = planted(200, 8, clusters=5)
    k = knn_kernel(x, k=5, backend="torch")
    r = greedy_maximize(k, budget=30, n_candidates=50, with_remaining=True)
    assert r.order.max() < 50 and len(r.remaining) == 20
    naive = greedy_maximize(k, budget=30, n_candidates=50, optimizer="naive")
    assert np.array_equal(r.order, naive.order)
    with pytest.raises(ConfigError, match="budget"):
        greedy_maximize(k, budget=51, n_candidates=50)


# ------------------------------------------------------------------------------------ missing faiss
def test_missing_faiss_gives_one_line_install_message(monkeypatch):
    real = builtins.__import__
    real_import_module = importlib.import_module

    def no_faiss(name, *a, **kw):
        if name == "faiss" or name.startswith("faiss."):
            raise ImportError("No module named 'faiss'")
        return real(name, *a, **kw)

    def no_faiss_module(name, *a, **kw):
        if name == "faiss" or name.startswith("faiss."):
            raise ImportError("No module named 'faiss'")
        return real_import_module(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_faiss)
    monkeypatch.setattr(importlib, "import_module", no_faiss_module)
    x = planted(100, 8, clusters=4)
    for call in (lambda: ann_knn_graph(x, k=5),
                 lambda: submodular_gains(x, kernel="knn", knn=5, knn_search="faiss_ivf")):
        with pytest.raises(ImportError) as e:
            call()
        msg = str(e.value)
        assert "\n" not in msg and "pip install 'datadiet[scale]'" in msg
    # the default path still works without faiss (exact torch search)
    assert submodular_gains(x, kernel="knn", knn=5).info["knn_backend"] == "torch"


def test_method_parameter_default_and_validation():
    from datadiet.methods.ingenious.method import Ingenious

    assert Ingenious().knn_search == "exact_per_part"
    assert Ingenious(kernel="knn", knn_search="faiss_ivf")._gains_kwargs()["knn_search"] == "faiss_ivf"
    with pytest.raises(ConfigError, match="kernel=knn"):
        Ingenious(knn_search="faiss_ivf")


# ------------------------------------------------- k-means partition of a big pool, no float32 copy
def _blobs(n: int, d: int, centres: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated unit-norm clusters (planted truth: each row's cluster)."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, d))
    truth = rng.integers(0, centres, n)
    x = c[truth] + 0.02 * rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), truth


def _same_grouping(a: np.ndarray, b: np.ndarray) -> bool:
    """The two labelings group the rows identically (up to the names of the groups)."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@needs_faiss
def test_kmeans_partition_above_faiss_sample_size_finds_the_planted_clusters():
    from datadiet.methods.ingenious.submodular.partition import POINTS_PER_CENTROID, kmeans_partition

    x, truth = _blobs(4 * POINTS_PER_CENTROID * 3, 16, 3)  # 4x the rows k-means trains on
    p32 = kmeans_partition(x, n_parts=3, seed=0, backend="faiss")
    assert _same_grouping(p32, truth)
    # float16 storage, and the same rows scaled (normalize=True clusters their directions)
    assert _same_grouping(kmeans_partition(x.astype(np.float16), n_parts=3, seed=0, backend="faiss"), truth)
    scaled = x * np.random.default_rng(1).uniform(0.5, 3.0, size=(len(x), 1)).astype(np.float32)
    assert _same_grouping(kmeans_partition(scaled, n_parts=3, seed=0, backend="faiss", normalize=True), truth)
    assert np.array_equal(p32, kmeans_partition(x, n_parts=3, seed=0, backend="faiss"))  # seeded


@needs_faiss
def test_kmeans_partition_of_a_float16_pool_makes_no_float32_copy_of_it():
    import tracemalloc

    from datadiet.methods.ingenious.submodular.partition import kmeans_partition

    x16 = _blobs(600_000, 64, 4)[0].astype(np.float16)
    f32_copy = x16.size * 4  # 154 MB: what converting the pool at once would allocate
    tracemalloc.start()
    try:
        parts = kmeans_partition(x16, n_parts=4, seed=0, backend="faiss", normalize=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert parts.shape == (600_000,) and len(np.unique(parts)) == 4
    assert peak < f32_copy / 3, (peak, f32_copy)  # chunks of 65,536 rows and int64 labels only


def test_non_finite_rows_are_counted_across_chunks():
    from datadiet.methods.ingenious.submodular._checks import check_embeddings

    x = np.zeros((70_000, 2), dtype=np.float16)
    x[5, 0], x[69_999, 1] = np.nan, np.inf  # one row in each 65,536-row chunk
    with pytest.raises(ConfigError, match=r"2 row\(s\) hold NaN or inf"):
        check_embeddings("embeddings", x, allow_float16=True)
