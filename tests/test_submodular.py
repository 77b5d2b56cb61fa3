"""INGENIOUS submodular selection: objectives, greedy, kernels, partitions, sampling (offline, fast)."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys

import numpy as np
import pytest

from datadiet.errors import ConfigError
from datadiet.core.selection import Selection
from datadiet.methods.ingenious.submodular import (
    SparseKernel,
    dense_kernel,
    greedy_maximize,
    kmeans_partition,
    knn_kernel,
    objective_value,
    part_budgets,
    part_members,
    random_partition,
    sample_subset,
    sparse_from_dense,
    split_parts,
    stochastic_sample_size,
    submodular_gains,
    subset_from_gains,
    taylor_softmax,
)

try:
    import faiss

    faiss.omp_set_num_threads(1)
    HAVE_FAISS = True
except ImportError:  # pragma: no cover - depends on the extra
    HAVE_FAISS = False


def gaussian(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def planted(n_clusters: int = 6, per: int = 5, d: int = 32, noise: float = 0.01, seed: int = 0):
    """Clusters of near-duplicates around nearly orthogonal centres; returns (x, cluster label)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, d))
    labels = np.repeat(np.arange(n_clusters), per)
    x = centres[labels] + noise * rng.normal(size=(len(labels), d))
    perm = rng.permutation(len(labels))  # clusters are not contiguous
    return x[perm].astype(np.float32), labels[perm]


# --- brute force references ---------------------------------------------------------------------

def f_brute(k: np.ndarray, s, objective: str, lam: float = 0.4, reg: float = 1.0) -> float:
    s = list(s)
    if not s:
        return 0.0
    k = k.astype(np.float64)
    if objective == "facility_location":
        return sum(max(0.0, max(k[i, j] for j in s)) for i in range(len(k)))
    if objective == "graph_cut":
        kp = np.maximum(k, 0.0)
        return sum(kp[i, j] for i in range(len(k)) for j in s) - lam * sum(kp[i, j] for i in s for j in s)
    return float(np.linalg.slogdet(k[np.ix_(s, s)] + reg * np.eye(len(s)))[1])


@pytest.mark.parametrize("objective", ["facility_location", "graph_cut", "log_determinant"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_greedy_matches_brute_force(objective, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 11))
    k = dense_kernel(gaussian(n, d=4, seed=seed))
    budget = 3
    res = greedy_maximize(k, budget=budget, objective=objective)
    # each pick is the brute-force argmax of the marginal gain, and its recorded gain is that gain
    chosen: list[int] = []
    for t in range(budget):
        base = f_brute(k, chosen, objective)
        marg = {j: f_brute(k, chosen + [j], objective) - base for j in range(n) if j not in chosen}
        best = max(marg.values())
        assert marg[int(res.order[t])] == pytest.approx(best, rel=1e-5, abs=1e-5)
        assert res.gains[t] == pytest.approx(marg[int(res.order[t])], rel=1e-5, abs=1e-5)
        chosen.append(int(res.order[t]))
    # the value from the definition agrees, and greedy is within (1 - 1/e) of the best k-subset
    value = f_brute(k, chosen, objective)
    assert objective_value(k, res.order, objective=objective) == pytest.approx(value, rel=1e-5, abs=1e-5)
    assert res.value == pytest.approx(value, rel=1e-5, abs=1e-5)
    opt = max(f_brute(k, s, objective) for s in itertools.combinations(range(n), budget))
    if objective != "log_determinant":  # monotone objectives carry the classic guarantee
        assert value >= (1 - 1 / math.e) * opt - 1e-6
    opt1 = max(f_brute(k, [j], objective) for j in range(n))
    assert res.gains[0] == pytest.approx(opt1, rel=1e-5)  # budget 1 is exact


def test_facility_location_gains_non_increasing():
    k = dense_kernel(gaussian(200, d=16))
    for kern in (k, knn_kernel(gaussian(200, d=16), k=8, backend="torch")):
        res = greedy_maximize(kern, budget=200)
        assert np.all(np.diff(res.gains) <= 1e-6)
        assert res.gains.min() >= 0.0
        assert sorted(res.order.tolist()) == list(range(200))  # a full ordering


@pytest.mark.parametrize("objective,sparse", [("facility_location", False), ("facility_location", True),
                                              ("graph_cut", False), ("graph_cut", True), ("log_determinant", False)])
def test_lazy_greedy_equals_naive_greedy_exactly(objective, sparse):
    x = gaussian(120, d=6, seed=3)
    k = knn_kernel(x, k=12, backend="torch") if sparse else dense_kernel(x)
    lazy = greedy_maximize(k, budget=120, objective=objective, optimizer="lazy")
    naive = greedy_maximize(k, budget=120, objective=objective, optimizer="naive")
    np.testing.assert_array_equal(lazy.order, naive.order)
    np.testing.assert_array_equal(lazy.gains, naive.gains)
    assert lazy.n_evals < naive.n_evals


def test_lazy_breaks_ties_like_naive():
    # exact duplicates give exactly tied gains; both optimizers take the smaller index
    x = np.repeat(gaussian(4, d=5), 3, axis=0)
    k = dense_kernel(x)
    lazy = greedy_maximize(k, budget=12, optimizer="lazy")
    naive = greedy_maximize(k, budget=12, optimizer="naive")
    np.testing.assert_array_equal(lazy.order, naive.order)


def test_sparse_knn_equals_dense_when_k_covers_everyone():
    x = gaussian(60, d=5, seed=4)
    dense = dense_kernel(x)
    for sk in (knn_kernel(x, k=60, backend="torch"), sparse_from_dense(dense, k=60)):
        np.testing.assert_allclose(sk.to_dense(), dense, atol=1e-6)
        for objective in ("facility_location", "graph_cut"):
            a = greedy_maximize(sk, budget=60, objective=objective)
            b = greedy_maximize(dense, budget=60, objective=objective)
            np.testing.assert_array_equal(a.order, b.order)
            np.testing.assert_allclose(a.gains, b.gains, rtol=1e-5, atol=1e-5)
            assert objective_value(sk, a.order[:7], objective=objective) == pytest.approx(
                objective_value(dense, a.order[:7], objective=objective), rel=1e-5)


def test_sparse_kernel_is_csr_linear_in_n_k():
    x = gaussian(500, d=8)
    sk = knn_kernel(x, k=7, backend="torch")
    assert isinstance(sk, SparseKernel)
    assert sk.nnz == 500 * 7 and sk.indptr.shape == (501,)
    assert sk.indices.dtype == np.int32 and sk.data.dtype == np.float32
    assert sk.nbytes <= 500 * 7 * 8 + 501 * 8
    rows = np.repeat(np.arange(500), 7)
    assert np.all(sk.data[sk.indices == rows] == 1.0)  # each row holds its own example, similarity 1
    assert (sk.indices == rows).sum() == 500
    # exact neighbours: the kept similarities are each row's 7 largest
    d = dense_kernel(x)
    np.testing.assert_allclose(np.sort(sk.data.reshape(500, 7), axis=1), np.sort(d, axis=1)[:, -7:], atol=1e-5)
    t = sk.transpose()
    np.testing.assert_array_equal(t.to_dense(), sk.to_dense().T)


@pytest.mark.skipif(not HAVE_FAISS, reason="faiss not installed")
@pytest.mark.parametrize("metric", ["cosine", "rbf"])
def test_faiss_and_torch_knn_agree(metric):
    x = gaussian(300, d=16, seed=5)
    a = knn_kernel(x, k=6, metric=metric, backend="faiss")
    b = knn_kernel(x, k=6, metric=metric, backend="torch")
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.data, b.data, atol=1e-5)


def test_dense_kernels():
    x = gaussian(30, d=4)
    k = dense_kernel(x)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(k, xn @ xn.T, atol=1e-6)
    np.testing.assert_array_equal(k, k.T)
    assert np.all(np.diagonal(k) == 1.0)
    r = dense_kernel(x, metric="rbf", gamma=0.5)
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(r, np.exp(-0.5 * d2), atol=1e-5)


@pytest.mark.parametrize("kind", ["dense", "knn", "stochastic"])
def test_planted_near_duplicates_one_representative_per_cluster_first(kind):
    x, labels = planted(n_clusters=6, per=5)
    if kind == "knn":
        res = greedy_maximize(knn_kernel(x, k=5, backend="torch"), budget=12)
    elif kind == "stochastic":  # epsilon small enough that each step sees every candidate
        res = greedy_maximize(dense_kernel(x), budget=12, optimizer="stochastic", epsilon=1e-9, seed=0)
    else:
        res = greedy_maximize(dense_kernel(x), budget=12)
    first = labels[res.order[:6]]
    assert sorted(first.tolist()) == list(range(6))  # one per cluster before any second member
    assert res.gains[5] > 10 * res.gains[6]  # then the gains collapse


def test_stochastic_greedy_is_seeded_and_close_to_lazy():
    k = dense_kernel(gaussian(400, d=8, seed=6))
    a = greedy_maximize(k, budget=40, optimizer="stochastic", epsilon=0.01, seed=3)
    b = greedy_maximize(k, budget=40, optimizer="stochastic", epsilon=0.01, seed=3)
    c = greedy_maximize(k, budget=40, optimizer="stochastic", epsilon=0.01, seed=4)
    np.testing.assert_array_equal(a.order, b.order)
    assert not np.array_equal(a.order, c.order)
    lazy = greedy_maximize(k, budget=40)
    assert a.value >= 0.9 * lazy.value
    assert a.n_evals == 40 * stochastic_sample_size(400, 40, 0.01)
    assert stochastic_sample_size(400, 40, 0.01) == math.ceil(10 * math.log(100))
    # sized for the full ordering the sample is tiny (the reference's flaw): ~ln(1/eps) candidates
    assert stochastic_sample_size(400, 399, 0.01) == 5


def test_remaining_gains_are_marginal_gains_wrt_final_set():
    k = dense_kernel(gaussian(50, d=4))
    res = greedy_maximize(k, budget=10, with_remaining=True)
    assert len(res.remaining) == 40 and not set(res.remaining) & set(res.order)
    base = objective_value(k, res.order)
    for j, g in zip(res.remaining[:5], res.remaining_gains[:5]):
        assert g == pytest.approx(objective_value(k, np.append(res.order, j)) - base, rel=1e-4, abs=1e-5)
    assert res.remaining_gains.max() <= res.gains[-1] + 1e-6


# --- partitions ---------------------------------------------------------------------------------

def test_random_partition_is_balanced_and_seeded():
    p = random_partition(103, n_parts=10, seed=1)
    sizes = np.bincount(p)
    assert len(sizes) == 10 and sizes.max() - sizes.min() <= 1
    np.testing.assert_array_equal(p, random_partition(103, n_parts=10, seed=1))
    assert not np.array_equal(p, random_partition(103, n_parts=10, seed=2))
    members = part_members(p)
    assert sorted(np.concatenate(members).tolist()) == list(range(103))


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_kmeans_partition_recovers_planted_clusters(backend):
    if backend == "faiss" and not HAVE_FAISS:
        pytest.skip("faiss not installed")
    x, labels = planted(n_clusters=4, per=50, d=16, noise=0.05, seed=2)
    p = kmeans_partition(x, n_parts=4, seed=0, backend=backend)
    # each part is one planted cluster (up to relabelling)
    for part in range(p.max() + 1):
        assert len(set(labels[p == part].tolist())) == 1
    split = kmeans_partition(x, n_parts=4, seed=0, max_size=20, backend=backend)
    assert np.bincount(split).max() <= 20


def test_split_parts_caps_sizes_and_relabels():
    parts = np.array([5] * 25 + [9] * 3)
    out = split_parts(parts, max_size=10, seed=0)
    sizes = np.bincount(out)
    assert sizes.max() <= 10 and sizes.sum() == 28 and len(sizes) == 4
    assert set(out[25:].tolist()) == {3}


# --- sampling -----------------------------------------------------------------------------------

def test_taylor_softmax_formula():
    g = np.array([0.0, 1.0, 2.0, -3.0])
    p = taylor_softmax(g, temperature=1.0)
    w = np.array([1.0, 2.5, 5.0, 0.5])  # x clipped at -1, where 1 + x + x^2/2 is smallest
    np.testing.assert_allclose(p, w / w.sum())
    np.testing.assert_allclose(taylor_softmax(g, temperature=2.0)[:3], np.array([1, 1.625, 2.5]) / (1 + 1.625 + 2.5 + 0.5))


def test_part_budgets_proportional_exact_and_capped():
    b = part_budgets(np.array([10, 20, 30, 41]), budget=25)
    assert b.sum() == 25 and np.all(b <= [10, 20, 30, 41])
    np.testing.assert_array_equal(b, [3, 5, 7, 10])  # quotas 2.48, 4.95, 7.43, 10.15: +1 to parts 1, 0
    np.testing.assert_array_equal(part_budgets(np.array([3, 3, 3]), budget=9), [3, 3, 3])
    np.testing.assert_array_equal(part_budgets(np.array([3, 3, 3]), budget=1), [1, 0, 0])


@pytest.fixture(scope="module")
def gains_result():
    x = gaussian(600, d=8, seed=7)
    return submodular_gains(x, max_part_size=150, seed=0)


@pytest.mark.parametrize("sampling", ["taylor_softmax", "top_k", "uniform"])
def test_sampling_is_reproducible_and_respects_budgets(gains_result, sampling):
    r = gains_result
    pick = sample_subset(r.gains, r.parts, r.rank, budget=150, sampling=sampling, seed=11)
    again = sample_subset(r.gains, r.parts, r.rank, budget=150, sampling=sampling, seed=11)
    np.testing.assert_array_equal(pick, again)
    assert len(pick) == 150 and len(np.unique(pick)) == 150
    np.testing.assert_array_equal(np.bincount(r.parts[pick], minlength=4),
                                  part_budgets(np.bincount(r.parts), budget=150))
    other = sample_subset(r.gains, r.parts, r.rank, budget=150, sampling=sampling, seed=12)
    if sampling == "top_k":
        np.testing.assert_array_equal(pick, other)
        assert r.rank[pick].max() < 38  # the first 37-38 of each part's greedy order
    else:
        assert not np.array_equal(pick, other)


@pytest.mark.parametrize("normalize,factor", [("none", 3.0), ("max", 1.1)])  # max: weights in [1, 2.5]
def test_taylor_sampling_prefers_high_gains(gains_result, normalize, factor):
    r = gains_result
    counts = np.zeros(r.n)
    for s in range(30):
        counts[sample_subset(r.gains, r.parts, r.rank, budget=60, normalize=normalize, seed=s)] += 1
    top = r.rank < 15  # the 15 largest gains in each part
    assert counts[top].mean() > factor * counts[~top].mean()


def test_submodular_gains_full_ordering(gains_result):
    r = gains_result
    assert r.n_parts == 4 and np.bincount(r.parts).tolist() == [150] * 4
    assert r.picked.all()  # greedy_fraction 1.0 orders every part completely
    for m in part_members(r.parts):
        assert sorted(r.rank[m].tolist()) == list(range(150))
        assert np.all(np.diff(r.gains[m][np.argsort(r.rank[m])]) <= 1e-6)
    assert r.info["objective_value"] == pytest.approx(600.0, rel=1e-5)  # each example covers itself


def test_subset_from_gains_gives_a_selection():
    x, labels = planted(n_clusters=8, per=20, d=16, seed=8)
    r = submodular_gains(x, kernel="knn", knn=10, partition="kmeans", n_parts=2, greedy_fraction=0.5,
                         backend="torch", seed=0)
    assert not r.picked.all() and r.picked.sum() >= 80
    sel = subset_from_gains(r, fraction=0.05, ids=np.arange(1000, 1160), sampling="top_k")
    assert isinstance(sel, Selection) and len(sel) == 8
    assert sorted(labels[sel.indices].tolist()) == list(range(8))  # one per planted cluster
    np.testing.assert_array_equal(sel.ids, 1000 + sel.indices)
    assert sel.params["kernel"] == "knn" and sel.params["sampling"] == "top_k"
    assert sel.info["knn_backend"] == "torch"
    resel = subset_from_gains(r, fraction=0.25, seed=1)
    assert len(resel) == 40 and not np.array_equal(resel.indices, subset_from_gains(r, fraction=0.25, seed=2).indices)


def test_pipeline_threads_and_objectives_are_deterministic():
    x = gaussian(300, d=8, seed=9)
    a = submodular_gains(x, max_part_size=100, seed=3, backend="torch")
    b = submodular_gains(x, max_part_size=100, seed=3, backend="torch", workers=2)
    np.testing.assert_array_equal(a.gains, b.gains)
    np.testing.assert_array_equal(a.rank, b.rank)
    for objective in ("graph_cut", "log_determinant"):
        r = submodular_gains(x, objective=objective, max_part_size=100, greedy_fraction=0.3, seed=3)
        assert np.isfinite(r.gains).all()
        assert len(subset_from_gains(r, fraction=0.1)) == 30
    s = submodular_gains(x, optimizer="stochastic", max_part_size=100, seed=3)
    np.testing.assert_array_equal(s.gains, submodular_gains(x, optimizer="stochastic", max_part_size=100, seed=3).gains)


# --- errors -------------------------------------------------------------------------------------

def test_clear_errors_on_bad_input():
    x = gaussian(10, d=3)
    with pytest.raises(ConfigError, match="k .*<= 10"):
        knn_kernel(x, k=11)
    with pytest.raises(ConfigError, match="budget.*<= 10"):
        greedy_maximize(dense_kernel(x), budget=11)
    with pytest.raises(ConfigError, match="2-D"):
        dense_kernel(np.zeros(5))
    with pytest.raises(ConfigError, match="2-D"):
        submodular_gains(np.zeros((2, 3, 4)))
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ConfigError, match="finite; 1 row"):
        submodular_gains(bad)
    with pytest.raises(ConfigError, match="objective must be one of"):
        greedy_maximize(dense_kernel(x), budget=2, objective="facility")
    with pytest.raises(ConfigError, match="optimizer must be one of"):
        greedy_maximize(dense_kernel(x), budget=2, optimizer="lazier")
    with pytest.raises(ConfigError, match="epsilon"):
        greedy_maximize(dense_kernel(x), budget=2, optimizer="stochastic", epsilon=0.0)
    with pytest.raises(ConfigError, match="log_determinant needs"):
        greedy_maximize(knn_kernel(x, k=3), budget=2, objective="log_determinant")
    with pytest.raises(ConfigError, match="log_determinant"):
        submodular_gains(x, objective="log_determinant", kernel="knn")
    with pytest.raises(ConfigError, match="square"):
        greedy_maximize(np.zeros((3, 4)), budget=1)
    with pytest.raises(ConfigError, match="sampling must be one of"):
        sample_subset(np.zeros(4), np.zeros(4), np.arange(4), budget=2, sampling="softmax")
    with pytest.raises(ConfigError, match="budget"):
        sample_subset(np.zeros(4), np.zeros(4), np.arange(4), budget=5)
    with pytest.raises(ConfigError, match="fraction"):
        subset_from_gains(submodular_gains(x), fraction=0.0)
    with pytest.raises(ConfigError, match="kernel must be one of"):
        submodular_gains(x, kernel="sparse")


def test_core_import_does_not_import_faiss():
    code = ("import sys, datadiet.methods.ingenious.submodular as s; "
            "assert not any(m in sys.modules for m in ('faiss', 'submodlib', 'apricot', 'scipy', 'transformers'))")
    subprocess.run([sys.executable, "-c", code], check=True)
