"""Offline selection on two processes (torchrun, CPU, gloo): data_diet's scoring runs shared out over the
ranks and ingenious's sharded embedding pass give every rank what one process computes.

One torchrun launch (tests/_dist_offline_worker.py) does all of it; the test process computes the same
with ``ranks=None`` and compares.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dist import launch, read_ranks

WORKER = Path(__file__).with_name("_dist_offline_worker.py")


@pytest.mark.timeout(200)
def test_offline_selections_on_two_ranks_equal_one_process(tmp_path, monkeypatch):
    import _dist_offline_worker as worker

    out, dist_cache, one_cache = tmp_path / "out", tmp_path / "cache_dist", tmp_path / "cache_one"
    launch(WORKER, str(out), nproc=2, timeout=180, env={"DATADIET_CACHE": str(dist_cache)})
    r0, r1 = read_ranks(out)
    monkeypatch.setenv("DATADIET_CACHE", str(one_cache))
    one = worker.compute(None)

    for r in (r0, r1):
        # data_diet: every rank holds all S runs' scores, and selects what one process selects
        np.testing.assert_allclose(r["data_diet"]["per_seed"], one["data_diet"]["per_seed"], atol=1e-5)
        np.testing.assert_allclose(r["data_diet"]["scores"], one["data_diet"]["scores"], atol=1e-5)
        assert r["data_diet"]["ids"] == one["data_diet"]["ids"]
        assert r["data_diet"]["cached"] == [False] * worker.RUNS
        # the second plan takes every run from the cache; its cost is the same sum of every run's cost
        assert r["data_diet_again"]["cached"] == [True] * worker.RUNS
        assert r["data_diet_again"]["ids"] == one["data_diet"]["ids"]
        assert r["data_diet_again"]["cost_s"] == pytest.approx(sum(r["data_diet"]["run_cost_s"]))
        assert r["data_diet_again"]["reused_s"] == pytest.approx(r["data_diet_again"]["cost_s"])
        # data_diet_dynamic's sharded re-scoring (uneven shards)
        np.testing.assert_allclose(r["el2n_63"], one["el2n_63"], atol=1e-5)
        # ingenious: the gathered embedding matrix in pool order, the same subset, the cache hit
        np.testing.assert_allclose(r["embeddings"], one["embeddings"], atol=1e-5)
        assert np.asarray(r["embeddings"]).shape == (worker.N, 32)
        assert r["ingenious"]["ids"] == one["ingenious"]["ids"]
        assert r["ingenious"]["cached"] is False
        hit = r["embeddings_cached"]
        assert hit["cached"] is True and hit["cost_s"] == pytest.approx(hit["first_cost_s"])
        np.testing.assert_allclose(hit["vectors"], one["embeddings"], atol=1e-5)
        np.testing.assert_allclose(r["recompute_gains"], one["recompute_gains"], atol=1e-5)

    # the work was shared out: runs round-robin (seeds 0, 2 on rank 0; 1 on rank 1), pool passes by shard
    assert one["data_diet"]["built_seeds"] == [0, 1, 2] and one["data_diet_again"]["built_seeds"] == [0, 1, 2]
    assert r0["data_diet"]["built_seeds"] == r0["data_diet_again"]["built_seeds"] == [0, 2]
    assert r1["data_diet"]["built_seeds"] == r1["data_diet_again"]["built_seeds"] == [1]
    assert (one["el2n_rows"], r0["el2n_rows"], r1["el2n_rows"]) == (63, 32, 31)
    assert (one["embedded_rows"], r0["embedded_rows"], r1["embedded_rows"]) == (64, 32, 32)
    assert r0["embeddings_cached"]["rows"] == r1["embeddings_cached"]["rows"] == 0

    # every rank got the very same numbers (gathered, not recomputed)
    for k in ("data_diet", "data_diet_again"):
        assert {**r0[k], "built_seeds": None} == {**r1[k], "built_seeds": None}
    for k in ("el2n_63", "embeddings", "ingenious", "embeddings_cached", "recompute_gains"):  # not "failure"
        assert r0[k] == r1[k], k

    # a failed scoring run: the rank that ran it raises its error, the other says which rank failed
    assert one["failure"] == r1["failure"] == "ValueError: no model for seed 1"
    assert r0["failure"].startswith("DataDietError: a data_diet scoring run failed on another rank (rank 1: "
                                    "ValueError: no model for seed 1)")

    # the cache: each run's entries written once by the rank that owns it (el2n + the free head GraNd),
    # one embedding entry (rank 0); the same entries as one process writes
    dist_scores = sorted(p.name for p in (dist_cache / "scores").glob("*.npz"))
    assert len(dist_scores) == 2 * worker.RUNS
    assert dist_scores == sorted(p.name for p in (one_cache / "scores").glob("*.npz"))
    assert len(list((dist_cache / "embeddings").glob("*.npz"))) == 1
    assert not list(dist_cache.rglob("*.tmp*"))
