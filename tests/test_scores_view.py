"""The scores view of the report: histograms, top examples, planted flips and AUROC, escaping, dedupe,
missing texts, and `datadiet report --scores`. Offline and tiny (a 40-row CSV dataset)."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest

from datadiet.bench import scores_view as sv
from datadiet.bench.report import write_report
from datadiet.cli.main import main
from datadiet.config import RunConfig
from datadiet.methods.data_diet.score_runs import ScoreResult

EVIL = '<script>alert("x")</script> & a "quoted" review'


def _result(ids, labels, scores, *, seeds=(0, 1), steps=12, spent=0.0, per_seed=None) -> ScoreResult:
    scores = np.asarray(scores, dtype=np.float64)
    if per_seed is None:  # two runs whose mean is exactly `scores`
        per_seed = np.stack([scores - 0.01, scores + 0.01])
    return ScoreResult(kind="el2n", ids=np.asarray(ids, dtype=np.int64), scores=scores, per_seed=np.asarray(per_seed),
                       seeds=tuple(seeds), steps=steps, cost_s=3.0, spent_s=spent,
                       labels=None if labels is None else np.asarray(labels, dtype=np.int64))


# ------------------------------------------------------------------------------------------ pure math
def test_class_histograms_equal_numpys():
    rng = np.random.default_rng(0)
    scores = rng.gamma(2.0, 0.2, size=500)
    labels = rng.integers(0, 3, size=500)
    edges = sv.score_bin_edges(scores, 9)
    np.testing.assert_array_equal(edges, np.histogram_bin_edges(scores, bins=9))
    h = sv.class_histograms(scores, labels, edges)
    assert sorted(h) == [0, 1, 2]
    for c in range(3):
        np.testing.assert_array_equal(h[c], np.histogram(scores[labels == c], bins=edges)[0])
    np.testing.assert_array_equal(sum(h.values()), np.histogram(scores, bins=9)[0])
    assert int(sum(v.sum() for v in h.values())) == 500  # the maximum lands in the last (closed) bin
    assert list(sv.class_histograms(scores, None, edges)) == [-1]


def test_histogram_svgs_show_the_counts_per_class():
    rng = np.random.default_rng(1)
    scores = rng.random(60)
    labels = np.repeat([0, 1], 30)
    view = sv.ScoresView(result=_result(np.arange(60), labels, scores), digest="d", sources=["s.json"],
                         label_names=["neg", "pos"], flipped_ids=frozenset({0, 1, 45}))
    svgs = sv._histograms(view)
    assert len(svgs) == 2
    edges = sv.score_bin_edges(scores, sv.default_bins(60))
    for c, svg in enumerate(svgs):
        want = np.histogram(scores[labels == c], bins=edges)[0]
        got = [int(m) for m in re.findall(r": (\d+) examples? \(", svg)]
        assert got == [int(n) for n in want if n > 0]
    assert "neg: 30 examples, 2 planted flips" in svgs[0] and "pos: 30 examples, 1 planted flips" in svgs[1]
    assert svgs[0].count('class="flipbar"') >= 1


def test_auroc_equals_a_hand_computation():
    scores = np.array([0.9, 0.8, 0.3, 0.5, 0.1, 0.5])
    flipped = np.array([True, False, False, True, False, False])
    # positives 0.9 and 0.5 against negatives 0.8, 0.3, 0.1, 0.5:
    # 0.9 beats all 4; 0.5 beats 0.3 and 0.1, ties 0.5 (one half), loses to 0.8 -> (4 + 2.5) / 8
    assert sv.auroc(scores, flipped) == pytest.approx(6.5 / 8)
    rng = np.random.default_rng(2)
    s = np.round(rng.random(40), 1)  # many ties
    pos = rng.random(40) < 0.3
    pairs = [(1.0 if a > b else 0.5 if a == b else 0.0) for a, b in itertools.product(s[pos], s[~pos])]
    assert sv.auroc(s, pos) == pytest.approx(sum(pairs) / len(pairs))
    assert sv.auroc(s, np.zeros(40, dtype=bool)) is None


def test_top_positions_highest_first_ties_by_position():
    scores = np.array([0.2, 0.9, 0.5, 0.9, 0.1, 0.5])
    assert sv.top_positions(scores, 4).tolist() == [1, 3, 2, 5]
    assert sv.top_positions(scores, 100).tolist() == [1, 3, 2, 5, 0, 4]


def test_digest_ignores_bookkeeping_but_not_scores():
    a = _result([1, 2, 3], [0, 1, 0], [0.1, 0.2, 0.3], spent=1.0)
    b = _result([1, 2, 3], [0, 1, 0], [0.1, 0.2, 0.3], spent=99.0)
    c = _result([1, 2, 3], [0, 1, 0], [0.1, 0.2, 0.31])
    d = _result([1, 2, 3], [0, 1, 0], [0.1, 0.2, 0.3], seeds=(1, 2))
    assert sv.score_digest(a) == sv.score_digest(b)
    assert len({sv.score_digest(x) for x in (a, c, d)}) == 3


# ------------------------------------------------------------------------------------ a tiny results dir
def _dataset(tmp_path: Path) -> tuple[dict, np.ndarray, dict[int, str], dict[int, int]]:
    """A 40-row CSV; returns (config dict, train ids, id -> text, id -> label) as load_data sees them."""
    from datadiet.runner import load_data

    rows = [{"text": f"review number {k} about film {k * 7}", "label": "pos" if k % 2 else "neg"} for k in range(39)]
    rows.append({"text": EVIL, "label": "neg"})
    csv = tmp_path / "tiny.csv"
    import pandas as pd

    pd.DataFrame(rows).to_csv(csv, index=False)
    cfg = RunConfig.from_dict({"data": {"name": str(csv), "label_noise": 0.1}})
    ds = load_data(cfg)
    ids = np.asarray(ds.train.ids)
    texts = {int(i): t for i, t in zip(ids, ds.train.texts)}
    labels = {int(i): int(y) for i, y in zip(ids, ds.train.labels)}
    assert EVIL in texts.values(), "the evil text must be in the training split"
    return cfg.to_dict(), ids, texts, labels


def _planted(ids, texts, labels):
    """Scores with the planted flips (3 examples, one of them the evil text) near the top."""
    n = len(ids)
    rng = np.random.default_rng(3)
    scores = rng.random(n) * 0.5
    evil_id = next(i for i, t in texts.items() if t == EVIL)
    flipped = [evil_id] + [int(i) for i in ids if int(i) != evil_id][:2]
    lab = np.array([labels[int(i)] for i in ids])
    for k, i in enumerate(ids):
        if int(i) in flipped:
            lab[k] = 1 - lab[k]
    pos = {int(i): k for k, i in enumerate(ids)}
    scores[pos[evil_id]] = 0.99
    scores[pos[flipped[1]]] = 0.9
    scores[pos[flipped[2]]] = 0.3  # below some clean ones: AUROC < 1
    return scores, lab, flipped, evil_id


def _results_dir(tmp_path: Path, cfg: dict, ids, scores, lab, flipped, *, other_scores=None) -> Path:
    d = tmp_path / "bench"
    lines = []
    for label, seed in (("full", 0), ("dd", 0), ("dd", 1), ("dd", 2)):
        rd = f"runs/tiny/{label}/s{seed}"
        (d / rd).mkdir(parents=True)
        rec = {"config": cfg, "label_names": ["neg", "pos"],
               "label_noise": {"fraction": 0.1, "seed": 0, "flipped_ids": flipped}}
        (d / rd / "record.json").write_text(json.dumps(rec))
        if label == "dd":
            s = scores if seed < 2 or other_scores is None else other_scores
            _result(ids, lab, s, spent=float(seed)).save(d / rd / "scores.json")  # s0, s1: same scores
        lines.append({"suite": "unit", "cell": f"tiny/{label}/s{seed}", "dataset": "tiny", "model": "tiny-bert",
                      "method": "full" if label == "full" else "data_diet", "label": label, "seed": seed,
                      "metric": "accuracy", "value": 0.7 + 0.01 * seed, "wall_clock_s": 10.0, "status": "finished",
                      "examples_backpropagated": 100, "examples_forwarded": 100, "run_dir": rd})
    (d / "results.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return d


def _top_table(page: str, k: int = 0) -> list[list[str]]:
    tables = re.findall(r'<table class="top">.*?</table>', page, flags=re.DOTALL)
    rows = re.findall(r"<tr( class=\"flip\")?>(.*?)</tr>", tables[k], flags=re.DOTALL)[1:]  # skip the header
    return [[("flip" if f else "")] + re.findall(r"<td[^>]*>(.*?)</td>", r, flags=re.DOTALL) for f, r in rows]


def test_report_has_scores_view_with_flips_auroc_texts_and_dedupe(tmp_path):
    cfg, ids, texts, labels = _dataset(tmp_path)
    scores, lab, flipped, evil_id = _planted(ids, texts, labels)
    other = scores[::-1].copy()
    d = _results_dir(tmp_path, cfg, ids, scores, lab, flipped, other_scores=other)
    md, html_path = write_report(d)
    page = html_path.read_text()

    assert '<h3>Scores</h3>' in page
    # s0 and s1 wrote the same scores: shown once, naming both cells; s2 differs: a second view
    assert page.count('<table class="top">') == 2
    assert page.count('<details class="scores-file"') == 2
    assert "tiny/dd/s0, tiny/dd/s1" in page

    # top-N table of the first view: order, ids, scores, labels, flips, texts
    got = _top_table(page, 0)
    n = len(ids)
    assert len(got) == min(20, n)
    order = np.argsort(-scores, kind="stable")[:20]
    assert [int(r[2]) for r in got] == [int(ids[p]) for p in order]
    assert [r[3] for r in got] == [f"{scores[p]:.4f}" for p in order]
    names = ["neg", "pos"]
    assert [r[4] for r in got] == [names[lab[p]] for p in order]
    for r in got:
        i = int(r[2])
        assert (r[0] == "flip") == (i in flipped)
        assert r[5] == (f"planted flip (was {names[labels[i]]})" if i in flipped else "—")
    assert got[0][2] == str(evil_id)

    # HTML escaping of the text
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; a &quot;quoted&quot; review" in page
    assert got[0][6].startswith("&lt;script&gt;")

    # AUROC equals the hand computation (pairs of flipped vs clean scores)
    mask = np.isin(ids, flipped)
    pairs = [(1.0 if a > b else 0.5 if a == b else 0.0) for a, b in itertools.product(scores[mask], scores[~mask])]
    want = sum(pairs) / len(pairs)
    assert want < 1.0
    vals = re.findall(r'<b class="auroc-value">([0-9.]+)</b>', page)
    assert vals[0] == f"{want:.3f}"
    # a histogram per class and per view, counted with the other plots
    assert page.count('data-kind="score-hist"') == 4
    n_svg = len(re.findall(r'<svg class="plot"', page))
    assert f'id="plot-count">{n_svg}<' in page

    text = md.read_text()
    assert "### Scores" in text
    assert f"AUROC of the mean score for them {want:.3f}" in text
    first = text.split("### Scores", 1)[1]
    table = [ln for ln in first.splitlines() if re.match(r"\| \d+ \|", ln)]
    assert len(table) == 2 * min(10, n)
    assert table[0].startswith(f"| 1 | {evil_id} | 0.9900 |")
    assert "\\<script\\>" in text and "<script>" not in text


def test_report_without_loadable_texts_still_builds(tmp_path, monkeypatch):
    cfg, ids, texts, labels = _dataset(tmp_path)
    scores, lab, flipped, _ = _planted(ids, texts, labels)
    cfg = {**cfg, "data": {**cfg["data"], "name": "org/not-offline"}}  # a hub name: never fetched
    d = _results_dir(tmp_path, cfg, ids, scores, lab, flipped)
    _, html_path = write_report(d)
    page = html_path.read_text()
    assert page.count('<table class="top">') == 1  # all three score files are identical
    assert "Texts not shown: dataset &#x27;org/not-offline&#x27; is neither built in nor a local file" in page
    assert "<th>text</th>" not in page
    rows = _top_table(page)
    assert len(rows) == 20 and sum(r[0] == "flip" for r in rows) == 3
    assert all(r[5] in ("planted flip", "—") for r in rows)  # no dataset labels: no "was ..."

    # a loader that fails (e.g. a missing asset package) only drops the texts too
    import datadiet.runner as runner

    def boom(cfg):
        raise RuntimeError("asset package missing")

    monkeypatch.setattr(runner, "load_data", boom)
    cfg2 = {**cfg, "data": {**cfg["data"], "name": "rotten_tomatoes"}}
    d2 = _results_dir(tmp_path / "two", cfg2, ids, scores, lab, flipped)
    md, html_path = write_report(d2)
    page = html_path.read_text()
    assert "loading dataset &#x27;rotten_tomatoes&#x27; failed (RuntimeError: asset package missing)" in page
    assert "Texts not shown" in md.read_text()


def test_unreadable_scores_file_is_listed_not_fatal(tmp_path):
    cfg, ids, texts, labels = _dataset(tmp_path)
    scores, lab, flipped, _ = _planted(ids, texts, labels)
    d = _results_dir(tmp_path, cfg, ids, scores, lab, flipped)
    (d / "runs/tiny/dd/s1/scores.json").write_text("{not json")
    _, html_path = write_report(d)
    page = html_path.read_text()
    assert "Scores files not shown (unreadable)" in page and "runs/tiny/dd/s1/scores.json" in page
    assert page.count('<table class="top">') == 1


def test_report_without_scores_files_has_no_scores_part(tmp_path):
    d = tmp_path / "b"
    d.mkdir()
    (d / "results.jsonl").write_text(json.dumps({"suite": "u", "dataset": "x", "label": "full", "method": "full",
                                                 "seed": 0, "metric": "accuracy", "value": 0.5,
                                                 "status": "finished"}) + "\n")
    md, html_path = write_report(d)
    assert "Scores" not in html_path.read_text() and "Scores" not in md.read_text()


# ------------------------------------------------------------------------------------------------- CLI
def test_cli_scores_file_with_and_without_config(tmp_path, capsys):
    cfg, ids, texts, labels = _dataset(tmp_path)
    scores, lab, flipped, evil_id = _planted(ids, texts, labels)
    f = tmp_path / "el2n.json"
    _result(ids, lab, scores).save(f)

    assert main(["report", "--scores", str(f), "--top", "5"]) == 0
    out = capsys.readouterr().out
    page = (tmp_path / "el2n-scores.html").read_text()
    assert "Texts not shown: no config given" in out and "Texts not shown: no config given" in page
    assert len(_top_table(page)) == 5 and "planted flip" not in page

    import yaml

    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump({"data": cfg["data"]}))
    html = tmp_path / "out" / "view.html"
    assert main(["report", "--scores", str(f), "-c", str(tmp_path / "cfg.yaml"), "--out", str(html)]) == 0
    out = capsys.readouterr().out
    page = html.read_text()
    rows = _top_table(page)
    assert rows[0][2] == str(evil_id) and rows[0][6].startswith("&lt;script&gt;")
    # data.label_noise is set: the flips are the labels that differ from the dataset's
    assert {int(r[2]) for r in rows if r[0] == "flip"} == set(flipped)
    mask = np.isin(ids, flipped)
    a = sv.auroc(scores, mask)
    assert f"AUROC of the mean score for them: {a:.3f}" in out
    assert f"wrote {html}" in out


def test_cli_scores_file_in_a_run_folder_uses_its_record(tmp_path, capsys):
    cfg, ids, texts, labels = _dataset(tmp_path)
    scores, lab, flipped, _ = _planted(ids, texts, labels)
    d = _results_dir(tmp_path, cfg, ids, scores, lab, flipped)
    f = d / "runs/tiny/dd/s0/scores.json"
    assert main(["report", "--scores", str(f)]) == 0
    page = (d / "runs/tiny/dd/s0/scores-scores.html").read_text()
    assert "run record beside the scores file" in page
    assert sum(r[0] == "flip" for r in _top_table(page)) == 3 and "<th>text</th>" in page


@pytest.mark.parametrize("content, expect", [
    (None, "does not exist"),
    ("{broken", "is not valid JSON"),
    (json.dumps({"format": "datadiet.selection/1"}), "is not a datadiet scores file"),
    (json.dumps({"format": "datadiet.scores/1", "kind": "el2n"}), "is damaged"),
])
def test_cli_bad_scores_file_is_a_clear_error(tmp_path, capsys, content, expect):
    f = tmp_path / "bad.json"
    if content is not None:
        f.write_text(content)
    assert main(["report", "--scores", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expect in err and "Traceback" not in err
    assert not (tmp_path / "bad-scores.html").exists()


def test_cli_report_argument_errors(tmp_path, capsys):
    assert main(["report"]) == 2
    assert "give DIR" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--scores", "x.json"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--out", "x.html"]) == 2
    assert "go with --scores" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no results.jsonl" in capsys.readouterr().err
