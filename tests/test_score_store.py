"""The Parquet score store (``ScoreResult.save_parquet`` / ``ScoreResult.load`` of a folder): the
same ScoreResult as the JSON scores file, readable by ``datasets``, resumable shard by shard, and
damaged stores refused with one message naming the file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from datadiet.errors import DataDietError  # noqa: E402
from datadiet.core import parquet as parquet_mod  # noqa: E402
from datadiet.methods.data_diet.score_runs import ScoreResult  # noqa: E402

N = 23


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("DATADIET_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def make_result(n: int = N, *, labels: bool = True) -> ScoreResult:
    rng = np.random.default_rng(0)
    per = rng.random((3, n))
    ids = rng.permutation(np.arange(1000, 1000 + 3 * n))[:n].astype(np.int64)  # not in order, not from 0
    return ScoreResult(kind="el2n", ids=ids, scores=per.mean(0), per_seed=per, seeds=(0, 1, 7), steps=5,
                       cost_s=2.25, spent_s=0.5, cached=(False, True, False),
                       labels=(np.arange(n) % 3).astype(np.int64) if labels else None,
                       info={"run_cost_s": [1.0, 0.5, 0.75], "settings": {"batch_size": 16, "lr": 1e-4},
                             "key": {"model": "tiny-bert", "data": "abc123"}})


def assert_same(a: ScoreResult, b: ScoreResult) -> None:
    assert a.kind == b.kind and a.seeds == b.seeds and a.steps == b.steps
    assert a.cost_s == b.cost_s and a.spent_s == b.spent_s and a.cached == b.cached
    assert a.info == b.info
    assert a.ids.dtype == b.ids.dtype == np.int64
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.scores, b.scores)  # exact: float64 both ways
    np.testing.assert_array_equal(a.per_seed, b.per_seed)
    if a.labels is None:
        assert b.labels is None
    else:
        np.testing.assert_array_equal(a.labels, b.labels)


def shard_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("part-*.parquet"))


@pytest.mark.parametrize("labels", [True, False])
def test_json_to_store_roundtrip_is_identical(tmp_path, labels):
    js = make_result(labels=labels).save(tmp_path / "scores.json")
    from_json = ScoreResult.load(js)
    folder = from_json.save_parquet(tmp_path / "store", shard_rows=5)
    assert [p.name for p in shard_files(folder)] == [f"part-{k:05d}.parquet" for k in range(5)]
    assert_same(from_json, ScoreResult.load(folder))
    # every shard carries the provenance and its columns
    t = pq.read_table(shard_files(folder)[2])
    meta = json.loads(t.schema.metadata[b"datadiet"])
    assert meta["kind"] == "el2n" and meta["seeds"] == [0, 1, 7] and meta["steps"] == 5
    assert meta["info"]["key"] == {"model": "tiny-bert", "data": "abc123"} and meta["info"]["settings"]["batch_size"] == 16
    assert t.schema.field("example_id").type == pa.int64() and t.schema.field("score").type == pa.float64()
    assert t.column_names == ["example_id", "score", *(["label"] if labels else []),
                              "score_seed0", "score_seed1", "score_seed7"]
    # one shard: the single .parquet file loads on its own too
    one = from_json.save_parquet(tmp_path / "one", shard_rows=1000)
    single = tmp_path / "single.parquet"
    os.replace(shard_files(one)[0], single)
    assert_same(from_json, ScoreResult.load(single))


def test_single_shard_of_many_is_refused(tmp_path):
    folder = make_result().save_parquet(tmp_path / "store", shard_rows=10)
    with pytest.raises(DataDietError, match="shard 0 of 3 .*give the store's folder"):
        ScoreResult.load(shard_files(folder)[0])


def test_datasets_reads_the_store_and_joins_by_id(tmp_path):
    datasets = pytest.importorskip("datasets")
    res = make_result()
    folder = res.save_parquet(tmp_path / "store", shard_rows=4)
    ds = datasets.Dataset.from_parquet(str(folder / "*.parquet"), cache_dir=str(tmp_path / "hf"))
    assert len(ds) == N
    assert ds["example_id"] == [int(i) for i in res.ids]
    np.testing.assert_array_equal(np.asarray(ds["score"]), res.scores)
    np.testing.assert_array_equal(np.asarray(ds["score_seed7"]), res.per_seed[2])
    # the user's own dataset, in another order, gets the score as a column by id
    order = np.random.default_rng(1).permutation(N)
    mine = datasets.Dataset.from_dict({"id": [int(res.ids[i]) for i in order], "text": [f"t{i}" for i in order]})
    by_id = dict(zip(ds["example_id"], ds["score"]))
    mine = mine.add_column("score", [by_id[i] for i in mine["id"]])
    np.testing.assert_array_equal(np.asarray(mine["score"]), res.scores[order])


def test_interrupted_write_resumes(tmp_path, monkeypatch):
    res = make_result()
    ref = res.save_parquet(tmp_path / "ref", shard_rows=4)
    folder = tmp_path / "store"
    real = parquet_mod.write_table_atomic
    written: list[str] = []

    def flaky(pq_, table, dest):
        if len(written) == 3:
            raise KeyboardInterrupt  # the writer dies after 3 shards
        real(pq_, table, dest)
        written.append(dest.name)

    monkeypatch.setattr(parquet_mod, "write_table_atomic", flaky)
    with pytest.raises(KeyboardInterrupt):
        res.save_parquet(folder, shard_rows=4)
    assert [p.name for p in shard_files(folder)] == written == ["part-00000.parquet", "part-00001.parquet",
                                                                   "part-00002.parquet"]
    with pytest.raises(DataDietError, match=r"incomplete: 3 of 6 shards.*resume"):
        ScoreResult.load(folder)
    mtimes = {p.name: p.stat().st_mtime_ns for p in shard_files(folder)}
    (folder / "part-00003.parquet.tmp").write_bytes(b"half a shard")  # a crash mid-shard leaves this

    written.clear()

    def counting(pq_, table, dest):
        real(pq_, table, dest)
        written.append(dest.name)

    monkeypatch.setattr(parquet_mod, "write_table_atomic", counting)
    res.save_parquet(folder, shard_rows=4)
    assert written == [f"part-{k:05d}.parquet" for k in range(3, 6)]  # only the missing ones
    assert {p.name: p.stat().st_mtime_ns for p in shard_files(folder)[:3]} == mtimes
    assert not list(folder.glob("*.tmp"))
    assert_same(ScoreResult.load(ref), ScoreResult.load(folder))
    for a, b in zip(shard_files(ref), shard_files(folder)):
        assert pq.read_table(a).equals(pq.read_table(b))

    # a shard deleted along with its manifest entry is rewritten, alone
    m = json.loads((folder / "manifest.json").read_text())
    m["done"].remove("part-00005.parquet")
    m["complete"] = False
    (folder / "manifest.json").write_text(json.dumps(m))
    (folder / "part-00005.parquet").unlink()
    written.clear()
    res.save_parquet(folder, shard_rows=4)
    assert written == ["part-00005.parquet"]
    assert_same(res, ScoreResult.load(folder))

    # other scores into the same folder replace the store (no stale shard survives)
    other = make_result(n=6)
    written.clear()
    other.save_parquet(folder, shard_rows=4)
    assert written == ["part-00000.parquet", "part-00001.parquet"] and len(shard_files(folder)) == 2
    assert_same(other, ScoreResult.load(folder))


def _rewrite(path: Path, **columns) -> None:
    """Replace columns of a shard, keeping its metadata (a damaged or tampered shard)."""
    t = pq.read_table(path)
    for name, values in columns.items():
        t = t.set_column(t.column_names.index(name), name, pa.array(values, type=t.schema.field(name).type))
    pq.write_table(t, path)


def test_damaged_store_is_refused_naming_the_file(tmp_path):
    res = make_result()
    ids = [int(i) for i in res.ids]

    folder = res.save_parquet(tmp_path / "dup", shard_rows=10)
    bad = shard_files(folder)[1]
    _rewrite(bad, example_id=[ids[0], *ids[11:20]])  # shard 1 repeats an id of shard 0
    with pytest.raises(DataDietError) as e:
        ScoreResult.load(folder)
    msg = str(e.value)
    assert str(bad) in msg and "repeats 1 ids" in msg and str(ids[0]) in msg and "\n" not in msg

    folder = res.save_parquet(tmp_path / "missing", shard_rows=10)
    gone = shard_files(folder)[2]
    gone.unlink()
    with pytest.raises(DataDietError, match="shard is missing") as e:
        ScoreResult.load(folder)
    assert str(gone) in str(e.value)

    for col in ("score", "score_seed1"):
        folder = res.save_parquet(tmp_path / f"nan-{col}", shard_rows=10)
        bad = shard_files(folder)[0]
        vals = pq.read_table(bad).column(col).to_pylist()
        vals[3] = float("nan")
        _rewrite(bad, **{col: vals})
        with pytest.raises(DataDietError, match=f"column '{col}' must hold finite numbers") as e:
            ScoreResult.load(folder)
        assert str(bad) in str(e.value)

    folder = res.save_parquet(tmp_path / "changed", shard_rows=10)
    bad = shard_files(folder)[0]
    vals = pq.read_table(bad).column("score").to_pylist()
    vals[0] += 1.0
    _rewrite(bad, score=vals)
    with pytest.raises(DataDietError, match="do not match the digest"):
        ScoreResult.load(folder)

    folder = res.save_parquet(tmp_path / "nomanifest", shard_rows=10)
    (folder / "manifest.json").unlink()
    with pytest.raises(DataDietError, match="not a datadiet score store"):
        ScoreResult.load(folder)

    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataDietError, match="junk.parquet.*not a readable Parquet file"):
        ScoreResult.load(tmp_path / "junk.parquet")

    other = tmp_path / "busy"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(DataDietError, match="holding other files"):
        res.save_parquet(other)
    assert (other / "notes.txt").exists()


def test_cli_select_and_report_from_store(tmp_path, capsys):
    from datadiet.cli.main import main
    from datadiet.core.selection import Selection

    res = make_result()
    folder = res.save_parquet(tmp_path / "store", shard_rows=6)
    js = res.save(tmp_path / "scores.json")
    assert main(["select", "--scores", str(folder), "-p", "mode=top", "keep=0.5", "--out", "sel.json"]) == 0
    assert main(["select", "--scores", str(js), "-p", "mode=top", "keep=0.5", "--out", "sel-json.json"]) == 0
    a, b = Selection.load("sel.json"), Selection.load("sel-json.json")
    assert sorted(int(i) for i in a.ids) == sorted(int(i) for i in b.ids) and len(a.ids) == round(N * 0.5)
    capsys.readouterr()
    assert main(["report", "--scores", str(folder), "--out", "view.html"]) == 0
    assert Path("view.html").is_file()


def test_cli_refuses_a_damaged_store_in_one_line(tmp_path, capsys):
    from conftest import cli_error

    folder = make_result().save_parquet(tmp_path / "store", shard_rows=10)
    gone = shard_files(folder)[1]
    gone.unlink()
    line = cli_error(capsys, ["select", "--scores", str(folder), "-p", "mode=top", "keep=0.5", "--out", "s.json"])
    assert str(gone) in line and "shard is missing" in line


def test_missing_pyarrow_names_the_extra(tmp_path, monkeypatch):
    import sys

    res = make_result()
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    for call in (lambda: res.save_parquet(tmp_path / "store"), lambda: ScoreResult.load(tmp_path)):
        with pytest.raises(ImportError, match=r"pip install 'datadiet\[hf\]'") as e:
            call()
        assert "\n" not in str(e.value)
    # the JSON scores file needs no pyarrow
    assert_same(res, ScoreResult.load(res.save(tmp_path / "scores.json")))


def test_run_folder_points_at_its_scores_file(tmp_path):
    run = tmp_path / "run"
    make_result().save(run / "scores.json")
    with pytest.raises(DataDietError, match="give its scores file .*scores.json"):
        ScoreResult.load(run)


def test_cli_score_writes_a_store_that_select_reads(tmp_path, capsys):
    """`datadiet score --format parquet` writes the store; `select --scores STORE` gives the selection of its JSON twin."""
    import json
    from pathlib import Path

    from datadiet.cli.main import main

    cfg = str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
    common = ["-q", "-c", cfg, "--set", "model.name=tiny-bert", "data.max_train=64", "data.max_test=16",
              "train.bf16=false", "--seeds", "1", "--score-steps", "2", "--no-cache"]
    store, js = tmp_path / "scores.parquet", tmp_path / "scores.json"
    assert main(["score", *common, "--format", "parquet", "--out", str(store)]) == 0
    assert main(["score", *common, "--out", str(js)]) == 0
    assert (store / "manifest.json").exists()
    sels = []
    for src in (store, js):
        out = tmp_path / f"sel-{src.suffix[1:]}.json"
        assert main(["select", "-q", "--scores", str(src), "-p", "mode=top", "keep=0.5", "--out", str(out)]) == 0
        sels.append(json.loads(out.read_text())["ids"])
    assert sels[0] == sels[1] and len(sels[0]) == 32
