"""Scoring and embedding passes on Ray Data (a local Ray, tiny models): the same numbers as the
single-process path, resumable after a kill, and one clear line for every bad input."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_tiny_bert
from datadiet.core.ray_pool import PassStats, RayEngine, ray_pass, work_dir_for
from datadiet.errors import ConfigError, DataDietError
from datadiet.methods.data_diet.scores import ForwardScorer, forward_scores

HERE = Path(__file__).resolve().parent
TINY = str(HERE.parent / "configs" / "tiny.yaml")
pytestmark = pytest.mark.timeout(240)  # a hung Ray fails the test instead of eating CI's time


@pytest.fixture(scope="module")
def local_ray():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("DATADIET_CACHE", str(root))
    return root


def test_forward_scores_on_ray_equal_the_single_process_ones(local_ray, tiny_cls):
    model, _tok, ds, collator = tiny_cls
    local = forward_scores(model, ds, collator=collator, batch_size=8)
    st = PassStats()
    got = ray_pass(ForwardScorer.make(), model, ds, collator=collator, batch_size=8, stats=st,
                   engine=RayEngine(workers=2, threads=1, shard_rows=20))
    assert set(got) == set(local) == {"el2n", "grand_head"}
    # shards of whole batches (20 rows -> 16, and at least 16 shards where there are 16 batches: 8 rows)
    # and the order kept: every actor batch is a local batch
    assert st.shards == 8 and st.rows_computed == len(ds) == 64 and st.resumed_shards == 0
    for k in local:
        np.testing.assert_allclose(got[k], local[k], rtol=0, atol=1e-6)
    assert not np.allclose(local["el2n"], local["el2n"][0])  # the scores differ per example


def test_embeddings_on_ray_equal_local_and_select_the_same_subset(local_ray, tiny_cls, cache):
    from datadiet.methods.ingenious.embeddings import EmbeddingCache, example_embeddings, model_embeddings
    from datadiet.methods.registry import build_method

    model, _tok, ds, collator = tiny_cls
    local = model_embeddings(model, ds, collator=collator, batch_size=8)
    emb = example_embeddings(ids=ds.ids, model=model, dataset=ds, collator=collator, model_name="tiny",
                             batch_size=8, cache=EmbeddingCache(), engine=RayEngine(workers=1, threads=1,
                                                                                     shard_rows=16))
    assert emb.vectors.dtype == np.float32 and emb.vectors.shape == local.shape
    np.testing.assert_allclose(emb.vectors, local, rtol=0, atol=1e-6)
    # cached now, so the pass's work folder is gone, and a second call is a cache hit with the same rows
    assert not work_dir_for("embeddings", emb.key).exists()
    again = example_embeddings(ids=ds.ids, model=model, dataset=ds, collator=collator, model_name="tiny",
                               batch_size=8, cache=EmbeddingCache())
    assert again.cached and np.array_equal(again.vectors, emb.vectors)
    ing = build_method("ingenious", {"fraction": 0.25, "seed": 0})
    sel_ray = ing.draw(ing.gains(emb.vectors, seed=0), ds.ids, seed=0)
    sel_local = ing.draw(ing.gains(local, seed=0), ds.ids, seed=0)
    assert np.array_equal(sel_ray.ids, sel_local.ids) and len(sel_ray.ids) == 16


def _kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL the child, its process group and anything else in its session (its Ray)."""
    sid = os.getsid(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if os.getsid(int(p.name)) == sid:
                    os.kill(int(p.name), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    proc.wait(timeout=30)


def test_a_killed_pass_resumes_from_its_finished_shards(local_ray, tmp_path):
    sys.path.insert(0, str(HERE))
    try:
        import _ray_child as child
    finally:
        sys.path.remove(str(HERE))
    work = tmp_path / "work"
    proc = subprocess.Popen([sys.executable, str(HERE / "_ray_child.py"), str(work)], start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 150
        while len(list(work.glob("shard-*.parquet"))) < 2:
            assert proc.poll() is None, f"the child ended before it was killed: {proc.stdout.read()[-2000:]}"
            assert time.monotonic() < deadline, "no shard finished in time"
            time.sleep(0.05)
    finally:
        _kill_session(proc)
    finished = sorted(p.name for p in work.glob("shard-*.parquet"))
    n_shards = child.N // child.SHARD
    assert 2 <= len(finished) < n_shards, finished  # killed in the middle
    # damage one finished shard: it must be recomputed, not trusted
    (work / finished[0]).write_bytes(b"not parquet")

    model, ds, collator = child.pool()
    st = PassStats()
    got = ray_pass(ForwardScorer.make(), model, ds, collator=collator, batch_size=child.BATCH, work_dir=work,
                   key=child.KEY, engine=RayEngine(workers=1, threads=1, shard_rows=child.SHARD), stats=st)
    assert st.shards == n_shards
    assert st.resumed_shards == len(finished) - 1  # every intact finished shard was kept...
    assert st.rows_computed == child.N - child.SHARD * st.resumed_shards  # ...and not computed again
    local = forward_scores(model, ds, collator=collator, batch_size=child.BATCH)
    for k in local:
        np.testing.assert_allclose(got[k], local[k], rtol=0, atol=1e-6)


def test_a_scoring_run_resumes_with_its_trained_weights(local_ray, tiny_cls, cache, monkeypatch):
    """A job killed after training a run and before its scores were cached neither trains it again nor
    loses it: the rerun loads the saved weights and gives the scores the uninterrupted job gives."""
    from datadiet.methods.data_diet import score_runs
    from datadiet.methods.data_diet.score_runs import ScoreCache, TrainSettings, compute_scores

    _model, _tok, ds, collator = tiny_cls
    settings = TrainSettings(batch_size=8, lr=1e-3)
    base = {"model": "tiny", "data": score_runs.data_fingerprint(ds), "device": "cpu", "settings": "t"}
    kw = dict(kind="el2n", seeds=[3], steps=4, build_model=lambda s: make_tiny_bert(s), dataset=ds,
              collator=collator, settings=settings)
    reference = compute_scores(**kw)  # single process, no cache

    calls = {"train": 0}
    real_train, real_forward = score_runs.train_steps, score_runs.forward_scores

    def counting_train(*a, **k):
        calls["train"] += 1
        return real_train(*a, **k)

    def crash(*a, **k):
        raise KeyboardInterrupt  # the job dies after training, before the scoring pass finishes

    monkeypatch.setattr(score_runs, "train_steps", counting_train)
    monkeypatch.setattr(score_runs, "forward_scores", crash)
    engine = RayEngine(workers=1, threads=1, shard_rows=16)
    with pytest.raises(KeyboardInterrupt):
        compute_scores(**kw, cache=ScoreCache(), cache_base=base, engine=engine)
    assert calls["train"] == 1
    work = score_runs._RunWork(base, kind="forward", seed=3, steps=4).folder
    assert (work / "trained.pt").exists() and json.loads((work / "trained.json").read_text())["trained"] == 32

    monkeypatch.setattr(score_runs, "forward_scores", real_forward)
    res = compute_scores(**kw, cache=ScoreCache(), cache_base=base, engine=engine)
    assert calls["train"] == 1  # not trained again
    np.testing.assert_allclose(res.scores, reference.scores, rtol=0, atol=1e-6)
    assert not work.exists()  # the scores are cached: the work folder is gone
    hit = compute_scores(**kw, cache=ScoreCache(), cache_base=base)
    assert hit.cached == (True,) and np.array_equal(hit.scores, res.scores)


def test_an_actor_failure_is_one_error_naming_the_cause_and_keeps_finished_shards(local_ray, tiny_cls, tmp_path):
    model, _tok, ds, collator = tiny_cls

    def no_labels(rows):
        batch = collator(rows)
        batch.pop("labels")
        return batch

    with pytest.raises(DataDietError) as e:
        ray_pass(ForwardScorer.make(), model, ds, collator=no_labels, batch_size=8, work_dir=tmp_path / "w",
                 key={"k": 1}, engine=RayEngine(workers=1, threads=1, shard_rows=16))
    msg = str(e.value)
    assert "the Ray pass (ray pass) failed" in msg and "scoring needs class labels" in msg
    assert "a rerun resumes" in msg and "\n" not in msg


def test_cli_score_on_ray_writes_the_scores_of_the_single_process_path(local_ray, tmp_path, cache, capsys,
                                                                       monkeypatch):
    from datadiet.cli.main import main

    monkeypatch.chdir(tmp_path)
    common = ["score", "-c", TINY, "--seeds", "1", "--score-steps", "2", "--no-cache", "-q",
              "--set", "train.bf16=false", "data.max_train=96"]
    assert main([*common, "--out", "local.json"]) == 0
    assert main([*common, "--out", "ray.json", "--engine", "ray", "--ray-workers", "1", "--ray-shard-rows", "32"]) == 0
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("local.json", "ray.json"))
    assert a["ids"] == b["ids"] and len(a["ids"]) == 96
    np.testing.assert_allclose(b["per_seed"], a["per_seed"], rtol=0, atol=1e-6)
    assert main(["select", "--scores", "ray.json", "-p", "keep=0.5", "--out", "sel_ray.json"]) == 0
    assert main(["select", "--scores", "local.json", "-p", "keep=0.5", "--out", "sel_local.json"]) == 0
    ids = [json.loads((tmp_path / f).read_text())["ids"] for f in ("sel_ray.json", "sel_local.json")]
    assert ids[0] == ids[1]


# ------------------------------------------------------------------ bad input (no Ray started)
def _one_line_error(capsys, argv) -> str:
    from datadiet.cli.main import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_a_missing_ray_names_the_extra(monkeypatch, tmp_path, capsys):
    from datadiet.methods.registry import build_method

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    monkeypatch.setitem(sys.modules, "ray.data", None)
    for name in ("data_diet", "ingenious"):
        with pytest.raises(DataDietError, match=r"pip install 'datadiet\[ray\]'"):
            build_method(name, {"engine": "ray"})
    build_method("data_diet", {"engine": "local"})  # the default path needs no Ray
    monkeypatch.chdir(tmp_path)
    err = _one_line_error(capsys, ["score", "-c", TINY, "--engine", "ray", "-q"])
    assert "pip install 'datadiet[ray]'" in err


@pytest.mark.parametrize("argv, words", [
    (["--engine", "ray", "--ray-workers", "0"], "--ray-workers must be >= 1, got 0"),
    (["--engine", "ray", "--ray-shard-rows", "0"], "--ray-shard-rows must be >= 1"),
    (["--ray-workers", "2"], "--ray-workers goes with --engine ray"),
    (["--ray-address", "auto"], "--ray-address goes with --engine ray"),
    (["--engine", "ray", "--score", "grand"], "full GraNd (score=grand) needs per-example gradients"),
])
def test_bad_ray_flags_are_one_line(capsys, tmp_path, monkeypatch, argv, words):
    monkeypatch.chdir(tmp_path)
    err = _one_line_error(capsys, ["score", "-c", TINY, "-q", *argv])
    assert words in err


def test_bad_ray_parameters_are_refused_at_construction():
    from datadiet.methods.registry import build_method

    with pytest.raises(ConfigError, match="engine must be one of local, ray, got 'spark'"):
        build_method("data_diet", {"engine": "spark"})
    with pytest.raises(ConfigError, match="ray_workers must be"):
        build_method("ingenious", {"engine": "ray", "ray_workers": 0})
    with pytest.raises(ConfigError, match="embedding='minilm'.*engine='local'"):
        build_method("ingenious", {"engine": "ray", "embedding": "minilm"})
    with pytest.raises(ConfigError, match="ray workers must be"):
        RayEngine(workers=0)
    with pytest.raises(ConfigError, match="ray address must be a non-empty string"):
        RayEngine(address=" ")
    assert RayEngine(workers=2, threads=None).threads_per_worker() == max(1, (os.cpu_count() or 1) // 2)


def test_the_local_path_is_the_default_and_unchanged(tiny_cls):
    """engine=local (the default) is the old loop: same numbers as scoring one batch at a time by hand."""
    from datadiet.methods.registry import build_method

    assert build_method("data_diet", {}).engine == "local" and build_method("ingenious", {}).engine == "local"
    model, _tok, ds, collator = tiny_cls
    got = forward_scores(model, ds, collator=collator, batch_size=64)
    model.eval()
    with torch.no_grad():
        b = collator([ds[i] for i in range(len(ds))])
        logits = model(**{k: v for k, v in b.items() if k in ("input_ids", "attention_mask", "token_type_ids")}).logits
    p = torch.softmax(logits.float(), -1)
    want = torch.linalg.vector_norm(p - torch.nn.functional.one_hot(b["labels"], 2).float(), dim=-1)
    np.testing.assert_allclose(got["el2n"], want.double().numpy(), rtol=0, atol=1e-6)


def test_cli_select_ingenious_on_ray_selects_what_the_single_process_path_selects(local_ray, tmp_path, cache,
                                                                                  monkeypatch):
    """engine=ray reaches the method's embedding pass through its plan (the CLI's select -c)."""
    from datadiet.cli.main import main

    monkeypatch.chdir(tmp_path)
    common = ["select", "-c", TINY, "--method", "ingenious", "-q", "--set", "train.bf16=false", "data.max_train=80"]
    assert main([*common, "-p", "fraction=0.25", "cache=false", "--out", "local.json"]) == 0
    assert main([*common, "-p", "fraction=0.25", "engine=ray", "--out", "ray.json"]) == 0
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("local.json", "ray.json"))
    assert len(a["ids"]) == 20 and a["ids"] == b["ids"]
    assert b["params"]["engine"] == "ray" and a["params"]["engine"] == "local"
    assert not list((cache / "ray_work").rglob("shard-*.parquet"))  # cached, so the pass's shards are gone


def test_a_ray_address_where_nothing_listens_fails_fast_naming_it(capsys, tmp_path, monkeypatch):
    """Unchecked, ray.init retried such an address for minutes; the probe answers within seconds."""
    import socket

    import ray

    from datadiet.core.ray_pool import ensure_ray, probe_address

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a fresh process (another test's Ray may run)

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(DataDietError, match=rf"no Ray cluster answers at 'ray://127.0.0.1:{port}' .*--ray-address"):
        ensure_ray(RayEngine(address=f"ray://127.0.0.1:{port}"))
    assert time.perf_counter() - t0 < 30
    monkeypatch.chdir(tmp_path)
    err = _one_line_error(capsys, ["score", "-c", TINY, "-q", "--engine", "ray", "--ray-address", f"127.0.0.1:{port}"])
    assert f"no Ray cluster answers at '127.0.0.1:{port}'" in err
    # something listening passes the probe (Ray itself then judges it); 'auto' is left to Ray
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        probe_address(f"127.0.0.1:{srv.getsockname()[1]}")
    probe_address("auto")
