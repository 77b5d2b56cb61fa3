"""Files datadiet reads and writes (issue 18, items 6-9): selection files, scores files, score and
embedding cache entries and run folders. Bad files are one clear error naming the file and the fault
(exit 2 on the CLI), bad cache entries are recomputed, and an overwritten run is kept whole."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from conftest import cli_error, planted_texts
from datadiet.cli.main import main
from datadiet.core.selection import Selection
from datadiet.errors import DataDietError

# transformers' log handler takes the sys.stderr of the moment it is first configured: configure it
# here, not inside a capsys test whose stream closes after it (a later warning would be a logging error)
try:
    import transformers

    transformers.logging.get_logger("transformers")
except ImportError:  # the tiny models need no transformers
    pass

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")
SMALL = ["model.name=tiny-bert", "model.max_length=24", "data.max_train=48", "data.max_test=16", "train.bf16=false",
         "train.threads=1"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("DATADIET_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def planted(n: int = 20):
    from datadiet.data.collate import Collator, TokenizedSplit
    from datadiet.data.types import TextSplit
    from datadiet.models.tiny import char_tokenizer

    texts, labels = planted_texts(n)
    tok = char_tokenizer()
    ds = TokenizedSplit(TextSplit(ids=np.arange(100, 100 + n), texts=texts, labels=labels), tok, max_length=32)
    return ds, Collator(pad_token_id=tok.pad_token_id)


def _write(path: Path, d) -> Path:
    path.write_text(json.dumps(d))
    return path


# ------------------------------------------------------------------------- 6: selection files
def _good_selection() -> dict:
    return Selection(method="x", indices=np.arange(10), ids=np.arange(100, 110), n_total=20,
                     scores=np.linspace(0, 1, 10)).to_dict()


def _without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


SELECTION_FAULTS = [
    ("duplicate ids", lambda d: {**d, "ids": d["ids"][:5] * 2}, r"'ids' repeats 5 ids \(e\.g\. \[100, 101"),
    ("float ids", lambda d: {**d, "ids": [i + 0.7 for i in d["ids"]]}, r"'ids' must hold integers.*100\.7"),
    ("string ids", lambda d: {**d, "ids": [str(i) for i in d["ids"]]}, r"'ids' must hold integers.*'100'"),
    ("bool ids", lambda d: {**d, "ids": [True] * 10}, r"'ids' must hold integers.*True"),
    ("empty ids", lambda d: {**d, "ids": [], "indices": []}, r"selects no examples"),
    ("missing ids", lambda d: _without(d, "ids"), r"'ids' is missing"),
    ("null ids", lambda d: {**d, "ids": None}, r"'ids' must be a list.*got None"),
    ("nested ids", lambda d: {**d, "ids": [[i] for i in d["ids"]]}, r"'ids' must hold integers.*\[100\]"),
    ("text n_total", lambda d: {**d, "n_total": "lots"}, r"'n_total' must be an integer.*'lots'"),
    ("null n_total", lambda d: {**d, "n_total": None}, r"'n_total' must be an integer.*None"),
    ("missing n_total", lambda d: _without(d, "n_total"), r"'n_total' is missing"),
    ("negative n_total", lambda d: {**d, "n_total": -3}, r"'n_total' is -3.*at least the 10 selected"),
    ("small n_total", lambda d: {**d, "n_total": 5}, r"'n_total' is 5.*at least the 10 selected"),
    ("indices length", lambda d: {**d, "indices": d["indices"][:3]}, r"3 'indices' but 10 'ids'"),
    ("indices out of range", lambda d: {**d, "indices": [i + 15 for i in d["indices"]]}, r"'indices'.*\[0, 20\)"),
    ("n_selected", lambda d: {**d, "n_selected": 100}, r"'n_selected' is 100 but it holds 10 ids"),
    ("scores length", lambda d: {**d, "scores": d["scores"][:4]}, r"4 'scores' for 10 'ids'"),
    ("null score", lambda d: {**d, "scores": [None] + d["scores"][1:]}, r"'scores' must hold finite numbers.*None"),
    ("method", lambda d: {**d, "method": 3}, r"'method' must be a name"),
    ("params", lambda d: {**d, "params": [1]}, r"'params' must be an object"),
    ("not an object", lambda d: [d], r"is not a datadiet selection file"),
]


@pytest.mark.parametrize("fault, change, expect", SELECTION_FAULTS, ids=[f[0] for f in SELECTION_FAULTS])
def test_a_bad_selection_file_is_one_error_naming_the_file_and_the_fault(tmp_path, fault, change, expect):
    p = _write(tmp_path / "sel.json", change(_good_selection()))
    with pytest.raises(DataDietError, match=expect) as e:
        Selection.load(p)
    msg = str(e.value)
    assert str(p) in msg and "datadiet select" in msg and "\n" not in msg


def test_a_good_selection_file_still_loads(tmp_path):
    d = _good_selection()
    d["ids"] = [float(i) for i in d["ids"]]  # integral floats (another tool's JSON) are integers
    sel = Selection.load(_write(tmp_path / "sel.json", d))
    assert sel.ids.dtype == np.int64 and list(sel.ids) == list(range(100, 110)) and sel.n_total == 20
    old = _without(_without(_good_selection(), "scores"), "n_selected")  # optional fields may be absent
    assert len(Selection.load(_write(tmp_path / "old.json", old))) == 10


def test_a_selection_with_duplicate_ids_never_trains_an_example_twice(tmp_path, capsys):
    from datadiet.runner import apply_selection_file

    ds, _ = planted(20)
    d = Selection(method="x", indices=np.arange(10), ids=ds.ids[:10], n_total=20).to_dict()
    d["ids"], d["indices"], d["n_selected"] = d["ids"] * 10, d["indices"] * 10, 100
    p = _write(tmp_path / "dup.json", d)
    with pytest.raises(DataDietError, match="repeats 10 ids"):
        apply_selection_file(ds, p)
    # through the CLI: one line, exit 2, no run
    line = cli_error(capsys, ["train", "-c", TINY, "--set", *SMALL, f"data.selection={p}", "-q", "--out", "o"])
    assert str(p) in line and "repeats 10 ids" in line


# ---------------------------------------------------------------------- 9: scores files
def _good_scores(tmp_path: Path, n: int = 20) -> tuple[Path, dict]:
    from datadiet.methods.data_diet.score_runs import ScoreResult

    rng = np.random.default_rng(0)
    per = rng.random((2, n))
    res = ScoreResult(kind="el2n", ids=np.arange(100, 100 + n), scores=per.mean(0), per_seed=per, seeds=(0, 1),
                      steps=3, cost_s=1.5, cached=(False, True), labels=np.arange(n) % 2,
                      info={"run_cost_s": [1.0, 0.5]})
    p = res.save(tmp_path / "scores.json")
    return p, json.loads(p.read_text())


SCORES_FAULTS = [
    ("short scores", lambda d: {**d, "scores": d["scores"][:10]}, r"10 'scores' for 20 'ids'"),
    ("null scores", lambda d: {**d, "scores": [None] * 20}, r"'scores' must hold finite numbers.*None"),
    ("one null score", lambda d: {**d, "scores": [None] + d["scores"][1:]}, r"'scores' must hold finite numbers"),
    ("NaN score", lambda d: {**d, "scores": [float("nan")] + d["scores"][1:]}, r"'scores' must hold finite numbers"),
    ("text scores", lambda d: {**d, "scores": ["a"] * 20}, r"'scores' must hold finite numbers.*'a'"),
    ("duplicate ids", lambda d: {**d, "ids": d["ids"][:10] * 2}, r"'ids' repeats 10 ids"),
    ("float ids", lambda d: {**d, "ids": [i + 0.5 for i in d["ids"]]}, r"'ids' must hold integers"),
    ("no examples", lambda d: {**d, "ids": [], "scores": [], "labels": [], "per_seed": [[], []]}, r"holds no examples"),
    ("labels length", lambda d: {**d, "labels": d["labels"][:5]}, r"5 'labels' for 20 'ids'"),
    ("per_seed rows", lambda d: {**d, "per_seed": d["per_seed"][:1]}, r"'per_seed' has 1 rows for 2 'seeds'"),
    ("per_seed row length", lambda d: {**d, "per_seed": [r[:5] for r in d["per_seed"]]},
     r"'per_seed' row 0 has 5 scores for 20 'ids'"),
    ("null seeds", lambda d: {**d, "seeds": None}, r"'seeds' must be a list"),
    ("missing scores", lambda d: _without(d, "scores"), r"'scores' is missing"),
    ("unknown kind", lambda d: {**d, "kind": "loss"}, r"'kind' is 'loss'.*el2n"),
    ("null steps", lambda d: {**d, "steps": None}, r"'steps' must be an integer"),
]


@pytest.mark.parametrize("fault, change, expect", SCORES_FAULTS, ids=[f[0] for f in SCORES_FAULTS])
def test_a_bad_scores_file_is_one_error_naming_the_file_and_the_fault(tmp_path, fault, change, expect):
    from datadiet.bench.scores_view import read_scores
    from datadiet.methods.data_diet.score_runs import ScoreResult

    p, d = _good_scores(tmp_path)
    _write(p, change(d))
    for load in (ScoreResult.load, read_scores):
        with pytest.raises(DataDietError, match=expect) as e:
            load(p)
        msg = str(e.value)
        assert str(p) in msg and "is damaged" in msg and "datadiet score" in msg and "\n" not in msg


def test_a_good_scores_file_still_loads(tmp_path):
    from datadiet.methods.data_diet.score_runs import ScoreResult

    p, d = _good_scores(tmp_path)
    r = ScoreResult.load(p)
    assert len(r) == 20 and r.per_seed.shape == (2, 20) and r.cached == (False, True) and r.reused_s == 0.5
    _write(p, {**_without(_without(d, "cached"), "spent_s"), "labels": None})
    r = ScoreResult.load(p)
    assert r.labels is None and r.cached == () and r.spent_s == 0.0


@pytest.mark.parametrize("fault", ["short scores", "null scores", "duplicate ids", "labels length"])
def test_select_and_report_refuse_a_bad_scores_file_with_one_line(tmp_path, capsys, fault):
    change = next(c for f, c, _ in SCORES_FAULTS if f == fault)
    p, d = _good_scores(tmp_path)
    _write(p, change(d))
    out = tmp_path / "sel.json"
    line = cli_error(capsys, ["select", "--scores", str(p), "-p", "mode=top", "keep=0.5", "--out", str(out)])
    assert str(p) in line and not out.exists()  # nothing written through
    line = cli_error(capsys, ["report", "--scores", str(p)])
    assert str(p) in line and not (tmp_path / "scores-scores.html").exists()


# --------------------------------------------------------------------------- 8: cache entries
def _score_kw(cache, ds, col):
    from datadiet.methods.data_diet.score_runs import TrainSettings, data_fingerprint
    from datadiet.models.tiny import tiny_model

    settings = TrainSettings(batch_size=8, lr=1e-3, schedule="constant", score_batch_size=16)
    return dict(seeds=[0], steps=0, build_model=lambda s: tiny_model("tiny-bert", num_labels=2, seed=s)[0],
                dataset=ds, collator=col, settings=settings, cache=cache,
                cache_base={"model": "tiny-bert", "data": data_fingerprint(ds)})


def test_a_score_cache_entry_whose_scores_do_not_match_its_ids_is_recomputed(tmp_path, caplog):
    from datadiet.methods.data_diet.score_runs import ScoreCache, compute_scores

    ds, col = planted(20)
    cache = ScoreCache(tmp_path / "scores")
    kw = _score_kw(cache, ds, col)
    first = compute_scores(kind="el2n", **kw)
    key = ScoreCache.key(kw["cache_base"], kind="el2n", seed=0, steps=0)
    assert cache.get(key, first.ids) is not None
    for bad in (first.scores[:10], np.stack([first.scores, first.scores], 1), np.float64(1.0)):
        cache._write(cache.path(key), first.ids, bad, 9.0, "{}")  # 20 ids, other scores
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="datadiet.core.cache"):
            assert cache.get(key, first.ids) is None
        assert any("score cache entry" in r.getMessage() and str(cache.path(key)) in r.getMessage()
                   and r.levelno == logging.WARNING for r in caplog.records)
    again = compute_scores(kind="el2n", **kw)
    assert again.cached == (False,) and again.scores.shape == (20,)
    np.testing.assert_allclose(again.scores, first.scores)
    hit = cache.get(key, first.ids)  # the entry was rewritten whole
    assert hit is not None and hit[0].shape == (20,)


def test_score_with_a_bad_cache_entry_writes_a_whole_scores_file(tmp_path, capsys):
    from datadiet.core.files import cache_dir
    from datadiet.methods.data_diet.score_runs import ScoreResult

    args = ["score", "-c", TINY, "--set", *SMALL, "--seeds", "1", "--score-steps", "0", "-q"]
    assert main(args + ["--out", "a.json"]) == 0
    for p in cache_dir("scores").glob("*.npz"):
        z = dict(np.load(p))
        z["scores"] = z["scores"][:10]
        np.savez(p, **z)
    capsys.readouterr()
    assert main(args + ["--out", "b.json"]) == 0
    a, b = ScoreResult.load("a.json"), ScoreResult.load("b.json")
    assert len(b.scores) == len(b.ids) == 48 and b.cached == (False,)
    np.testing.assert_allclose(b.scores, a.scores)


def test_an_embedding_cache_entry_of_the_wrong_shape_is_recomputed(tmp_path, caplog):
    from datadiet.methods.ingenious.embeddings import EmbeddingCache

    cache = EmbeddingCache(tmp_path / "emb")
    ids = np.arange(100, 120)
    key = {"k": 1}
    cache.put(key, ids, np.ones((20, 4)), 1.0)
    got = cache.get(key, ids)
    assert got is not None and got[0].shape == (20, 4)
    for bad in (np.ones((10, 4)), np.ones(20), np.ones((20, 0))):
        cache.put(key, ids, bad, 1.0)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="datadiet.core.cache"):
            assert cache.get(key, ids) is None
        assert any("embedding cache entry" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------------------ 7: --overwrite
def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_overwrite_keeps_every_file_of_the_old_run(tmp_path):
    from datadiet.records import LOCK, prepare_run_dir

    d = tmp_path / "run"
    (d / "sub").mkdir(parents=True)
    (d / "record.json").write_text(json.dumps({"status": "finished", "value": 0.5}))
    (d / "selection.json").write_text('{"format": "datadiet.selection/1"}')
    (d / "scores.json").write_text('{"format": "datadiet.scores/1"}')
    (d / "sub" / "extra.bin").write_bytes(b"\x00\x01")
    (d / LOCK).write_text("me")  # the lock of the new run stays where it is
    old = {k: v for k, v in _files(d).items() if k != LOCK}
    backups: list[Path] = []
    for i in range(3):  # several overwrites within one second: no backup replaces another
        assert prepare_run_dir(d, overwrite=True) == d
        new = [p for p in d.iterdir() if p.is_dir() and p.name.startswith("backup.") and p not in backups]
        assert len(new) == 1
        backups += new
        assert set(_files(new[0])) == (set(old) if i == 0 else {"record.json"})  # earlier backups stay put
        assert (d / LOCK).read_text() == "me"
        assert not (d / "selection.json").exists() and not (d / "scores.json").exists()
        (d / "record.json").write_text(json.dumps({"status": "finished", "value": i}))
    assert _files(backups[0]) == old
    assert [json.loads((b / "record.json").read_text())["value"] for b in backups[1:]] == [0, 1]
    # the record is also kept beside the new one, as before
    recs = sorted(d.glob("record.*.json"))
    assert len(recs) == 3 and {json.loads(p.read_text())["value"] for p in recs} == {0.5, 0, 1}


def test_a_rerun_after_a_crash_keeps_what_the_crashed_run_wrote(tmp_path):
    from datadiet.records import prepare_run_dir

    d = tmp_path / "run"
    d.mkdir()
    (d / "record.json").write_text(json.dumps({"status": "failed", "error": "boom"}))
    (d / "scores.json").write_text("the scores it paid for")
    prepare_run_dir(d, overwrite=False)
    (b,) = d.glob("backup.*")
    assert (b / "scores.json").read_text() == "the scores it paid for" and not (d / "scores.json").exists()
    assert json.loads((b / "record.json").read_text())["error"] == "boom"
    # an empty folder, or one holding only earlier backups, needs no backup
    prepare_run_dir(d, overwrite=False)
    assert len(list(d.glob("backup.*"))) == 1


def test_train_overwrite_keeps_the_old_selection_and_scores(tmp_path, capsys):
    out = tmp_path / "o"
    args = ["train", "-c", TINY, "--set", *SMALL, "method.name=data_diet", "method.params.score_seeds=1",
            "method.params.score_steps=0", "method.params.keep=0.5", "run_name=dd", "--out", str(out), "-q"]
    assert main(args) == 0
    rd = out / "dd"
    old = _files(rd)
    assert {"record.json", "selection.json", "scores.json"} <= set(old)
    assert main(args + ["--overwrite", "--set", "method.params.keep=0.25"]) == 0
    (b,) = rd.glob("backup.*")
    assert _files(b) == old  # every old file, byte for byte
    assert json.loads((rd / "record.json").read_text())["n_train_used"] == 12
    assert len(json.loads((rd / "selection.json").read_text())["ids"]) == 12
    assert Selection.load(b / "selection.json").n_total == 48 and len(Selection.load(b / "selection.json")) == 24


def test_a_damaged_selection_file_is_refused_before_a_run_folder_exists(tmp_path, capsys):
    from datadiet.cli.main import main

    bad = tmp_path / "sel.json"
    bad.write_text('{"format": "datadiet.selection/1", "method": "x", "ids": [1, 1], "indices": [0, 0], '
                   '"n_total": 10, "n_selected": 2}')
    out = tmp_path / "runs"
    from pathlib import Path

    cfg = str(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
    code = main(["train", "-q", "-c", cfg, "--out", str(out), "--set", "model.name=tiny-bert",
                 f"data.selection={bad}"])
    assert code == 2
    assert "is damaged" in capsys.readouterr().err
    assert not out.exists()  # refused by check_config, before any folder or record
