"""Facility location speed and quality: datadiet against submodlib and apricot, and the sparse path at scale.

Two sections, each run in its own process (so peak memory is per section):

``compare`` - the same embeddings (``--n`` points, ``--d`` dims, a synthetic mixture of Gaussian
clusters, L2-normalised) and the same cosine kernel for every library; each selects ``--fraction`` of
the points with lazy greedy facility location. Reported: wall-clock per stage, the objective value of
each library's subset (evaluated by one function, ``objective_value``), and the ratios to datadiet,
all measured in this one run with the thread count fixed. The libraries get the kernel clipped at 0
(apricot requires non-negative similarities; facility location with datadiet's definition is the
same on both). apricot builds and compiles its numba gain functions inside every ``fit`` (no cache),
so its time includes that compilation; ``tiny_fit_s`` (a 64-point fit) estimates that fixed cost.

``sparse`` - INGENIOUS on ``--sparse-n`` points: k-means partition into parts of at most
``--part-size``, an exact kNN kernel (``--knn`` neighbours, FAISS if installed) per part, greedy
facility location over the sparse CSR kernel (``--greedy-fraction`` of each part ordered), then
Taylor-softmax sampling of ``--sparse-fraction``. Reported: time per stage and peak resident memory
(``ru_maxrss``, which includes the embeddings themselves, also reported).

    .venv/bin/python benchmarks/submodular_speed.py                    # full size: 20k compare, 1M sparse
    .venv/bin/python benchmarks/submodular_speed.py --n 2000 --sparse-n 20000 --part-size 5000 \\
        --out /tmp/submodular_smoke.json                               # smoke test (seconds)
    .venv/bin/python benchmarks/submodular_speed.py --texts health_tweets --sections compare \\
        --out benchmarks/results/submodular_speed_text.json            # real text embeddings
    .venv/bin/python benchmarks/submodular_speed.py --sections sparse --knn-search faiss_ivf --float16 \\
        --coverage-sample 10000 --recall-queries 1000 --out ...        # whole-pool approximate kNN
    .venv/bin/python benchmarks/submodular_speed.py --sections sparse --knn-search faiss_ivf --float16 \\
        --ivf-storage sq8 --recall-queries 1000 --out ...              # the same, 8-bit IVF lists
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _set_threads(threads: int) -> None:
    """Fix every thread pool before numpy / torch / numba / faiss start theirs."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(threads)


def _mixture(n: int, d: int, n_clusters: int, spread: float, seed: int, chunk: int = 100_000, dtype: str = "float32"):
    """L2-normalised points around ``n_clusters`` random centres (built in float32 chunks and stored as
    ``dtype``: with float16 the same values as converting the float32 pool, without ever holding it)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, d), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.empty((n, d), dtype=dtype)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        lab = rng.integers(0, n_clusters, e - s)
        blk = centres[lab] + (spread / np.sqrt(d)) * rng.standard_normal((e - s, d), dtype=np.float32)
        blk /= np.linalg.norm(blk, axis=1, keepdims=True)
        x[s:e] = blk
    return x


def _text_embeddings(dataset: str, n: int, threads: int):
    """The first ``n`` training texts of ``dataset`` embedded with the frozen MiniLM sentence encoder
    (mean-pooled, unit rows; cached on disk like every datadiet embedding)."""
    from datadiet.config import RunConfig
    from datadiet.runner import load_data
    from datadiet.methods.ingenious.embeddings import EmbeddingCache, example_embeddings

    cfg = RunConfig.from_dict({"model": {"name": "minilm"}, "data": {"name": dataset, "max_train": n},
                               "train": {"threads": threads}})
    split = load_data(cfg).train
    if len(split) < n:
        raise SystemExit(f"{dataset} has only {len(split)} training texts; lower --n")
    e = example_embeddings(ids=split.ids, encoder="minilm", texts=list(split.texts), max_length=64, batch_size=128,
                           cache=EmbeddingCache())
    return e.vectors, {"source": f"{dataset} training texts, all-MiniLM-L6-v2 (max_length 64)",
                       "embedding_s": e.cost_s, "cached": e.cached}


def _versions() -> dict:
    import numpy
    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
           "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "machine": platform.machine()}
    for mod, attr in (("faiss", "__version__"), ("submodlib", "__version__"), ("apricot", "__version__"),
                      ("numba", "__version__")):
        try:
            out[mod] = getattr(__import__(mod), attr, "unknown")
        except ImportError:
            out[mod] = None
    return out


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def section_compare(args) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from datadiet.methods.ingenious.submodular import dense_kernel, greedy_maximize, objective_value

    if args.texts:
        x, emb_info = _text_embeddings(args.texts, args.n, args.threads)
    else:
        x, emb_info = _mixture(args.n, args.d, args.clusters, args.spread, args.seed), {"source": "synthetic mixture"}
    budget = max(1, int(round(args.fraction * len(x))))
    res: dict = {"n": len(x), "d": int(x.shape[1]), "budget": budget, "threads": args.threads, "embeddings": emb_info}
    if not args.texts:
        res["clusters"] = args.clusters
    t = time.perf_counter()
    k = dense_kernel(x)
    res["datadiet_kernel_s"] = time.perf_counter() - t
    runs: dict[str, dict] = {}

    t = time.perf_counter()
    g = greedy_maximize(k, budget=budget, optimizer="lazy")
    runs["datadiet_lazy"] = {"greedy_s": time.perf_counter() - t, "order": g.order, "n_evals": g.n_evals}
    if args.stochastic:
        t = time.perf_counter()
        g = greedy_maximize(k, budget=budget, optimizer="stochastic", epsilon=0.01, seed=args.seed)
        runs["datadiet_stochastic"] = {"greedy_s": time.perf_counter() - t, "order": g.order, "n_evals": g.n_evals}

    kc = np.maximum(k, 0.0)  # what the libraries get: apricot needs similarities >= 0
    try:
        from submodlib import FacilityLocationFunction

        t = time.perf_counter()
        fl = FacilityLocationFunction(n=len(x), mode="dense", sijs=kc, separate_rep=False)
        setup = time.perf_counter() - t
        t = time.perf_counter()
        out = fl.maximize(budget=budget, optimizer="LazyGreedy", stopIfZeroGain=False, stopIfNegativeGain=False,
                          show_progress=False)
        runs["submodlib_lazy"] = {"setup_s": setup, "greedy_s": time.perf_counter() - t,
                                  "order": np.array([int(i) for i, _ in out])}
        del fl
    except ImportError:
        res["submodlib"] = "not installed (pip install submodlib-py)"
    try:
        from apricot import FacilityLocationSelection

        small = np.maximum(dense_kernel(x[:64]), 0.0).astype(np.float64)
        t = time.perf_counter()
        FacilityLocationSelection(8, metric="precomputed", optimizer="lazy", n_jobs=args.threads).fit(small)
        warm = time.perf_counter() - t  # ~ apricot's per-fit numba compilation (a 64-point fit)
        t = time.perf_counter()
        k64 = kc.astype(np.float64)  # apricot's compiled gains take float64
        setup = time.perf_counter() - t
        t = time.perf_counter()
        sel = FacilityLocationSelection(budget, metric="precomputed", optimizer="lazy", n_jobs=args.threads).fit(k64)
        runs["apricot_lazy"] = {"setup_s": setup, "greedy_s": time.perf_counter() - t, "tiny_fit_s": warm,
                                "order": np.asarray(sel.ranking, dtype=np.int64)}
        del k64, sel
    except ImportError:
        res["apricot"] = "not installed (pip install apricot-select)"

    orders = {name: r.pop("order") for name, r in runs.items()}
    ours, ours_order = runs["datadiet_lazy"], orders["datadiet_lazy"]
    ours_value = objective_value(k, ours_order)
    for name, r in runs.items():
        r["objective"] = objective_value(k, orders[name])
        r["objective_ratio_to_datadiet"] = r["objective"] / ours_value
        r["greedy_time_ratio_to_datadiet"] = r["greedy_s"] / ours["greedy_s"]
        r["same_order_as_datadiet"] = bool(np.array_equal(orders[name], ours_order))
        r["overlap_with_datadiet"] = len(np.intersect1d(orders[name], ours_order)) / budget
    res["runs"] = runs
    res["peak_rss_mb"] = _peak_mb()
    return res


def _coverage(x, selected, n_sample: int, seed: int) -> float:
    """Facility-location coverage of a subset on a sample: the mean over ``n_sample`` random points of
    the largest cosine similarity to a selected point (exact, in chunks)."""
    import numpy as np

    rng = np.random.default_rng(seed + 1)
    q = x[rng.choice(len(x), size=min(n_sample, len(x)), replace=False)].astype(np.float32)
    best = np.full(len(q), -np.inf, dtype=np.float32)
    sel = np.asarray(selected)
    for start in range(0, len(sel), 20_000):
        s = x[sel[start:start + 20_000]].astype(np.float32)
        np.maximum(best, (q @ s.T).max(axis=1), out=best)
    return float(best.mean())


def _index_recall(x, args) -> dict:
    """Recall@knn of the whole-pool index against exact kNN on ``args.recall_queries`` seeded rows, self
    excluded (as ``knn_recall(..., exclude_self=True)`` on the graph): the same index as the selection's
    (``ann_index``, same settings, ``--ivf-storage`` and seed) is built again (timed apart, not part of
    ``selection_s``) and searched for those rows only; the exact neighbours are a brute-force search over
    the whole pool. With compressed lists the graph re-scores the found neighbours exactly; the set it
    keeps is the search's, except that a row missing itself drops its least (exactly) similar one, as here."""
    import numpy as np
    import torch

    from datadiet.methods.ingenious.submodular.kernels import ann_index

    k, n = args.knn, len(x)
    t = time.perf_counter()
    ivf = args.knn_search == "faiss_ivf"
    ix = ann_index(x, index="ivf" if ivf else "hnsw", nprobe=args.nprobe, seed=args.seed,
                   ef_search=max(128, k), train_per_list=args.train_per_list,
                   ivf_storage=args.ivf_storage)
    build_s = time.perf_counter() - t
    q = np.sort(np.random.default_rng(args.seed).choice(n, min(args.recall_queries, n), replace=False))

    def unit(rows):
        r = torch.from_numpy(np.asarray(rows, dtype=np.float32))
        return torch.nn.functional.normalize(r, dim=1)

    qv = unit(x[q])
    _, approx = ix.search(qv.numpy(), k)
    best_v = torch.full((len(q), k), -2.0)
    best_i = torch.zeros((len(q), k), dtype=torch.long)
    for s0 in range(0, n, 65_536):  # exact top-k over the whole pool, chunk by chunk
        sims = qv @ unit(x[s0 : s0 + 65_536]).T
        v, i = torch.topk(sims, min(k, sims.shape[1]), dim=1)
        allv, alli = torch.cat([best_v, v], 1), torch.cat([best_i, i + s0], 1)
        top = torch.topk(allv, k, dim=1)
        best_v, best_i = top.values, torch.gather(alli, 1, top.indices)
    hits = total = 0
    for r, qi in enumerate(q.tolist()):
        a = [j for j in approx[r].tolist() if j >= 0]
        if qi not in a:  # the graph holds the row itself first (forced), then k - 1 neighbours
            if args.ivf_storage != "flat":  # it drops the least similar by the exact similarity
                exact = (unit(x[a]) @ qv[r]).numpy()
                a = [a[j] for j in np.argsort(-exact, kind="stable")]
            a = a[: k - 1]
        a = set(a) - {qi}
        e = [j for j in best_i[r].tolist() if j != qi][: k - 1]
        hits += len(a & set(e))
        total += len(e)
    return {"recall": hits / total, "recall_queries": len(q), "recall_index_build_s": build_s,
            "recall_s": time.perf_counter() - t}


def section_sparse(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    except ImportError:
        pass
    from datadiet.methods.ingenious.submodular import submodular_gains, subset_from_gains

    t = time.perf_counter()
    # float16 pools are generated as float16 (chunk by chunk), so the peak below is the selection's own
    x = _mixture(args.sparse_n, args.d, args.sparse_clusters, args.spread, args.seed,
                 dtype="float16" if args.float16 else "float32")
    res: dict = {"n": args.sparse_n, "d": args.d, "fraction": args.sparse_fraction, "knn": args.knn,
                 "part_size": args.part_size, "partition": "kmeans", "greedy_fraction": args.greedy_fraction,
                 "sampling": args.sampling, "threads": args.threads, "data_s": time.perf_counter() - t,
                 "embeddings_mb": x.nbytes / 2**20, "rss_before_mb": _rss_mb(), "embeddings_dtype": str(x.dtype)}
    res["knn_search"] = args.knn_search
    if args.knn_search == "faiss_ivf":
        res.update(nprobe=args.nprobe, train_per_list=args.train_per_list, ivf_storage=args.ivf_storage)
    t = time.perf_counter()
    gains = submodular_gains(x, kernel="knn", knn=args.knn, partition="kmeans", max_part_size=args.part_size,
                             greedy_fraction=args.greedy_fraction, fraction=args.sparse_fraction, seed=args.seed,
                             knn_search=args.knn_search, nprobe=args.nprobe, train_per_list=args.train_per_list,
                             ivf_storage=args.ivf_storage)
    res["gains_s"] = time.perf_counter() - t
    t = time.perf_counter()
    sel = subset_from_gains(gains, fraction=args.sparse_fraction, sampling=args.sampling, seed=args.seed)
    res["sample_s"] = time.perf_counter() - t
    res["selection_s"] = res["gains_s"] + res["sample_s"]
    res["n_selected"] = len(sel)
    res["info"] = gains.info
    res["peak_rss_mb"] = _peak_mb()
    if args.coverage_sample:
        res["coverage"] = _coverage(x, sel.indices, args.coverage_sample, args.seed)
    if args.recall_queries and args.knn_search != "exact_per_part":
        res.update(_index_recall(x, args))
    res["goal"] = "<= 600 s on 2 cores within 8192 MB"
    res["meets_goal"] = res["selection_s"] <= 600 and res["peak_rss_mb"] <= 8192
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--section", choices=["all", "compare", "sparse"], default="all")
    ap.add_argument("--sections", nargs="+", choices=["compare", "sparse"], default=["compare", "sparse"],
                    help="which sections to run (each in its own process)")
    ap.add_argument("--n", type=int, default=20_000, help="points in the library comparison")
    ap.add_argument("--d", type=int, default=384)
    ap.add_argument("--texts", default=None, metavar="DATASET",
                    help="compare on real text embeddings: the first --n training texts of this dataset "
                         "(e.g. health_tweets) embedded with MiniLM, instead of the synthetic mixture")
    ap.add_argument("--fraction", type=float, default=0.1, help="subset fraction in the comparison")
    ap.add_argument("--clusters", type=int, default=200, help="mixture components in the comparison data")
    ap.add_argument("--spread", type=float, default=0.8, help="within-cluster noise (relative to unit-norm centres)")
    ap.add_argument("--stochastic", action="store_true", help="also time datadiet's stochastic greedy")
    ap.add_argument("--sparse-n", type=int, default=1_000_000)
    ap.add_argument("--sparse-fraction", type=float, default=0.1)
    ap.add_argument("--sparse-clusters", type=int, default=2000)
    ap.add_argument("--knn", type=int, default=10)
    ap.add_argument("--part-size", type=int, default=20_000)
    ap.add_argument("--greedy-fraction", type=float, default=1.0, help="share of each part ordered greedily")
    ap.add_argument("--sampling", default="taylor_softmax", choices=["taylor_softmax", "top_k", "uniform"])
    ap.add_argument("--knn-search", default="exact_per_part", choices=["exact_per_part", "faiss_ivf", "faiss_hnsw"],
                    help="sparse section: kNN within each part (exact) or over the whole pool (FAISS)")
    ap.add_argument("--nprobe", type=int, default=32, help="sparse section, faiss_ivf: lists searched per query")
    ap.add_argument("--train-per-list", type=int, default=256,
                    help="sparse section, faiss_ivf: k-means training rows per list (FAISS's ceiling 256, floor 39)")
    ap.add_argument("--ivf-storage", default="flat", choices=["flat", "fp16", "sq8"],
                    help="sparse section, faiss_ivf: what the IVF lists hold (float32 rows, float16 or 8-bit "
                         "scalar-quantized; neighbours re-scored exactly); the recall index uses the same")
    ap.add_argument("--float16", action="store_true", help="sparse section: keep the embeddings in float16")
    ap.add_argument("--coverage-sample", type=int, default=0,
                    help="sparse section: measure the subset's coverage (mean max cosine) on this many points")
    ap.add_argument("--recall-queries", type=int, default=0,
                    help="sparse section, FAISS: recall of the whole-pool graph against exact kNN on this many queries")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/submodular_speed.json"))
    args = ap.parse_args()
    if args.ivf_storage != "flat" and args.knn_search != "faiss_ivf":
        ap.error(f"--ivf-storage {args.ivf_storage} compresses the lists of the whole-pool IVF index; add "
                 "--knn-search faiss_ivf or drop --ivf-storage")
    _set_threads(args.threads)

    if args.section != "all":  # a child process: one section, JSON on stdout
        fn = section_compare if args.section == "compare" else section_sparse
        print(json.dumps(fn(args)))
        return
    result = {"environment": _versions(), "args": vars(args)}
    for sec in args.sections:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--section", sec]
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
        if p.returncode != 0:
            result[sec] = {"error": p.stderr[-4000:]}
        else:
            result[sec] = json.loads(p.stdout.strip().splitlines()[-1])
        result[sec]["process_wall_s"] = time.perf_counter() - t
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=float))
    print(json.dumps(result, indent=1, default=float))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
