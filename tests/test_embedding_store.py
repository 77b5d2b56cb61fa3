"""The Parquet embedding store (``Embeddings.save_parquet`` / ``from_parquet``, ``datadiet convert``,
INGENIOUS's ``embeddings_store``): the same vectors as the cache entry, readable by ``datasets``,
float16 at half the size, resumable shard by shard, damaged stores refused naming the file, and the
same selection from a store as from embedding in the run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from conftest import cli_error, make_tiny_bert, planted_texts  # noqa: E402
from datadiet.cli.main import main  # noqa: E402
from datadiet.core import parquet as parquet_mod  # noqa: E402
from datadiet.errors import ConfigError, DataDietError  # noqa: E402
from datadiet.methods.ingenious.embeddings import EmbeddingCache, Embeddings, example_embeddings  # noqa: E402
from datadiet.methods.ingenious.method import Ingenious  # noqa: E402

N, D = 23, 6


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("DATADIET_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def make_embeddings(n: int = N, d: int = D) -> Embeddings:
    rng = np.random.default_rng(0)
    v = rng.normal(size=(n, d)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ids = rng.permutation(np.arange(500, 500 + 3 * n))[:n].astype(np.int64)  # not in order, not from 0
    return Embeddings(vectors=v, ids=ids, cost_s=3.5, key={"source": "model", "layer": None, "data": "abc"})


def shards(folder: Path) -> list[Path]:
    return sorted(folder.glob("part-*.parquet"))


def test_roundtrip_is_exact_in_float32_and_readable_by_datasets(tmp_path):
    e = make_embeddings()
    folder = e.save_parquet(tmp_path / "store", shard_rows=5)
    assert [p.name for p in shards(folder)] == [f"part-{k:05d}.parquet" for k in range(5)]
    back = Embeddings.from_parquet(folder)
    np.testing.assert_array_equal(back.ids, e.ids)
    np.testing.assert_array_equal(back.vectors, e.vectors)  # exact
    assert back.vectors.dtype == np.float32 and back.cached and back.cost_s == 3.5 and back.reused_s == 3.5
    assert back.key["source"] == "model" and back.key["store"] == str(folder)
    t = pq.read_table(shards(folder)[1])
    assert t.column_names == ["example_id", "embedding"]
    assert t.schema.field("embedding").type == pa.list_(pa.float32(), D)
    meta = json.loads(t.schema.metadata[b"datadiet"])
    assert meta["key"] == e.key and meta["cost_s"] == 3.5 and meta["dim"] == D
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_parquet([str(p) for p in shards(folder)])
    assert ds.num_rows == N and ds[0]["example_id"] == int(e.ids[0])
    np.testing.assert_allclose(np.asarray(ds[3]["embedding"], dtype=np.float32), e.vectors[3])


def test_float16_halves_the_vectors_and_stays_within_half_precision(tmp_path):
    e = make_embeddings(n=400, d=64)
    f32 = e.save_parquet(tmp_path / "f32")
    f16 = e.save_parquet(tmp_path / "f16", dtype="float16")
    t = pq.read_table(shards(f16)[0])
    assert t.schema.field("embedding").type == pa.list_(pa.float16(), 64)
    assert t.column("embedding").combine_chunks().values.nbytes * 2 == \
        pq.read_table(shards(f32)[0]).column("embedding").combine_chunks().values.nbytes
    back = Embeddings.from_parquet(f16)
    assert back.vectors.dtype == np.float32
    np.testing.assert_allclose(back.vectors, e.vectors, atol=1e-3)
    half = Embeddings.from_parquet(f16, dtype="float16")
    assert half.vectors.dtype == np.float16 and half.vectors.nbytes * 2 == e.vectors.nbytes
    with pytest.raises(DataDietError, match="beyond float16"):
        Embeddings(vectors=np.full((2, 2), 1e6, np.float32), ids=np.arange(2), cost_s=0.0).save_parquet(
            tmp_path / "big", dtype="float16")


def test_ids_pick_and_order_rows_and_missing_ids_are_named(tmp_path):
    e = make_embeddings()
    folder = e.save_parquet(tmp_path / "store", shard_rows=7)
    want = e.ids[[5, 0, 9]]
    got = Embeddings.from_parquet(folder, ids=want)
    np.testing.assert_array_equal(got.ids, want)
    np.testing.assert_array_equal(got.vectors, e.vectors[[5, 0, 9]])
    with pytest.raises(DataDietError, match=r"lacks 2 of the 3 training examples \(ids such as \[1, 2\]\)"):
        Embeddings.from_parquet(folder, ids=np.array([1, e.ids[0], 2]))


def test_an_interrupted_write_resumes_from_its_finished_shards(tmp_path, monkeypatch):
    e = make_embeddings()
    real = parquet_mod.write_table_atomic
    written: list[str] = []

    def crash_on_third(pq_, table, dest):
        if len(written) == 2:
            raise KeyboardInterrupt
        real(pq_, table, dest)
        written.append(dest.name)

    monkeypatch.setattr(parquet_mod, "write_table_atomic", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        e.save_parquet(tmp_path / "store", shard_rows=5)
    with pytest.raises(DataDietError, match="incomplete: 2 of 5 shards"):
        Embeddings.from_parquet(tmp_path / "store")
    before = {p.name: p.stat().st_mtime_ns for p in shards(tmp_path / "store")}
    written.clear()
    monkeypatch.setattr(parquet_mod, "write_table_atomic", lambda pq_, t, d: (real(pq_, t, d), written.append(d.name)))
    e.save_parquet(tmp_path / "store", shard_rows=5)
    assert written == ["part-00002.parquet", "part-00003.parquet", "part-00004.parquet"]
    assert all((tmp_path / "store" / n).stat().st_mtime_ns == t for n, t in before.items())  # kept, not rewritten
    np.testing.assert_array_equal(Embeddings.from_parquet(tmp_path / "store").vectors, e.vectors)
    # other content in the same folder replaces the store (no stale shard survives)
    other = Embeddings(vectors=e.vectors[:4] * 0.5, ids=e.ids[:4], cost_s=1.0, key=e.key)
    other.save_parquet(tmp_path / "store", shard_rows=5)
    assert len(shards(tmp_path / "store")) == 1
    np.testing.assert_array_equal(Embeddings.from_parquet(tmp_path / "store").ids, e.ids[:4])


def test_damaged_stores_are_refused_naming_the_file(tmp_path):
    e = make_embeddings()
    folder = e.save_parquet(tmp_path / "store", shard_rows=10)
    victim = shards(folder)[1]
    t = pq.read_table(victim)
    ids = t.column("example_id").to_numpy().copy()
    ids[0] = e.ids[0]  # an id of shard 0 repeated
    pq.write_table(t.set_column(0, "example_id", pa.array(ids)), victim)
    with pytest.raises(DataDietError, match=r"is damaged: 'example_id' repeats 1 ids"):
        Embeddings.from_parquet(folder)
    victim.write_bytes(b"not parquet")
    with pytest.raises(DataDietError, match=r"part-00001.parquet' is damaged: it is not a readable Parquet file"):
        Embeddings.from_parquet(folder)
    victim.unlink()
    with pytest.raises(DataDietError, match="the shard is missing"):
        Embeddings.from_parquet(folder)
    with pytest.raises(DataDietError, match="does not exist"):
        Embeddings.from_parquet(tmp_path / "nowhere")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataDietError, match="not a datadiet embedding store"):
        Embeddings.from_parquet(tmp_path / "plain")
    with pytest.raises(DataDietError, match="NaN or infinite"):
        Embeddings(vectors=np.array([[np.nan, 1.0]], np.float32), ids=np.arange(1), cost_s=0.0).save_parquet(
            tmp_path / "nan")


# ----------------------------------------------------------------------------------------- convert
def test_convert_an_embedding_cache_entry_and_a_scores_file(tmp_path, capsys):
    texts, _ = planted_texts(24)
    from test_ingenious import tokenized

    ds, col, _tok = tokenized(texts)
    cache = EmbeddingCache(tmp_path / "emb")
    e = example_embeddings(ids=ds.ids, model=make_tiny_bert(0), dataset=ds, collator=col, model_name="tiny-bert",
                           cache=cache)
    (entry,) = (tmp_path / "emb").glob("*.npz")
    assert main(["convert", str(entry), "--out", "estore", "--float16"]) == 0
    assert "embedding store: estore (24 examples" in capsys.readouterr().out
    back = Embeddings.from_parquet("estore")
    np.testing.assert_array_equal(back.ids, e.ids)
    np.testing.assert_allclose(back.vectors, e.vectors, atol=1e-3)
    assert back.key["data"] == e.key["data"] and back.cost_s == pytest.approx(e.cost_s)

    from test_score_store import make_result

    from datadiet.methods.data_diet.score_runs import ScoreResult

    js = make_result().save(tmp_path / "scores.json")
    assert main(["convert", str(js), "--out", "sstore", "--shard-rows", "10"]) == 0
    assert len(shards(tmp_path / "sstore")) == 3
    np.testing.assert_array_equal(ScoreResult.load("sstore").scores, ScoreResult.load(js).scores)


@pytest.mark.parametrize("args,msg", [
    (["convert", "missing.json", "--out", "o"], "is not a file"),
    (["convert", "junk.npz", "--out", "o"], "is not a datadiet embedding cache entry"),
    (["convert", "scores.json", "--out", "o", "--float16"], "--float16 applies to embeddings"),
    (["convert", "scores.json", "--out", "o", "--shard-rows", "0"], "--shard-rows must be >= 1"),
])
def test_convert_bad_inputs_exit_2_with_one_line(tmp_path, capsys, args, msg):
    (tmp_path / "junk.npz").write_bytes(b"junk")
    from test_score_store import make_result

    make_result().save(tmp_path / "scores.json")
    assert msg in cli_error(capsys, args)


# ----------------------------------------------------------------------------------------- INGENIOUS
def test_ingenious_selects_the_same_subset_from_a_store_as_from_the_cache(tmp_path):
    from test_ingenious import context, tokenized

    texts, _ = planted_texts(40)
    ds, col, tok = tokenized(texts)
    ctx = context(ds, col, tok)
    here = Ingenious(fraction=0.25, seed=3)
    sel, _, info = here.select(ctx)
    emb = here.embed(ctx)
    # a store holding more examples than the training set, in another order: rows are found by id
    extra = np.arange(10_000, 10_005)
    rng = np.random.default_rng(1)
    perm = rng.permutation(len(emb.ids) + len(extra))
    vecs = np.concatenate([emb.vectors, np.eye(len(extra), emb.dim, dtype=np.float32)])[perm]
    Embeddings(vectors=vecs, ids=np.concatenate([emb.ids, extra])[perm], cost_s=emb.cost_s, key=emb.key
               ).save_parquet(tmp_path / "store", shard_rows=9)
    stored = Ingenious(fraction=0.25, seed=3, embeddings_store=str(tmp_path / "store"))
    sel2, _, info2 = stored.select(ctx)
    np.testing.assert_array_equal(sel2.ids, sel.ids)
    assert info2["embedding"]["cached"] and info2["reused_s"] == pytest.approx(emb.cost_s)


def test_ingenious_embeddings_store_is_validated_at_construction(tmp_path):
    with pytest.raises(ConfigError, match="embeddings_store 'nowhere' does not exist"):
        Ingenious(embeddings_store="nowhere")
    (tmp_path / "s").mkdir()
    with pytest.raises(ConfigError, match="warm_start_steps=5 .*would recompute"):
        Ingenious(embeddings_store="s", warm_start_steps=5)
    with pytest.raises(ConfigError, match="reselect='recompute'"):
        Ingenious(embeddings_store="s", reselect_every=4, reselect="recompute")
