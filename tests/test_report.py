"""Benchmark report: loading results.jsonl, the summary numbers, report.md and report.html."""

from __future__ import annotations

import copy
import json
import logging
import re

import pytest

from datadiet.bench.report import (BEATS_MIN_SEEDS, PAIRED_MIN_SEEDS, control_target, control_verdict, load_results,
                                   noise_floor, summarize, write_report)

BOLD = "skip<b>x</b>"


def _row(dataset, label, seed, value, wall, bp, fwd, steps, *, method=None, metric="accuracy", f1=None,
         status="finished", **kw):
    method = method or label
    r = {
        "suite": "unit", "cell": f"{dataset}/{label}/s{seed}", "dataset": dataset, "model": "tiny-bert",
        "method": method, "label": label, "params": {}, "seed": seed, "metric": metric, "value": value,
        "macro_f1": f1, "wall_clock_s": wall, "train_s": None if wall is None else wall - 1.0, "selection_s": 1.0, "eval_s": 2.0,
        "filter_s": 0.1, "examples_seen": fwd, "examples_forwarded": fwd, "examples_backpropagated": bp,
        "optimizer_steps": steps, "skipped": {}, "n_train": 1000, "n_train_used": 1000, "status": status,
        "run_dir": f"runs/{dataset}/{label}/s{seed}", "torch": "2.5.1", "threads": 2, "device": "cpu",
        "finished_at": "2024-11-21T10:00:00",
    }
    r.update(kw)
    return r


def build_results(d):
    """A fixed results.jsonl: rt (full x3, random_skip x3, BOLD x2) and lm (perplexity, no full, 1 seed)."""
    lines = [
        _row("rt", "full", 0, 0.80, 100.0, 3000, 3000, 96, f1=0.79),
        _row("rt", "full", 1, 0.50, 999.0, 10, 10, 1, f1=0.10),  # superseded below
        _row("rt", "full", 2, 0.82, 90.0, 3000, 3000, 96, f1=0.80),
        _row("rt", "random_skip", 0, 0.78, 60.0, 2100, 3000, 66),
        _row("rt", "random_skip", 1, 0.79, 70.0, 2000, 3000, 63),
        _row("rt", "random_skip", 2, 0.81, 50.0, 2200, 3000, 69),
        _row("rt", "random_skip", 3, None, None, None, None, None, status="failed", error="RuntimeError: boom"),
        _row("rt", BOLD, 0, 0.70, 40.0, 1000, 2000, 30, method="random_skip"),
        _row("rt", BOLD, 1, 0.75, 50.0, 1400, 2000, 44, method="random_skip"),
        _row("rt", "full", 1, 0.81, 110.0, 3000, 3000, 96, f1=0.81),  # wins over the earlier s1 line
        _row("rt", "full", 0, None, None, None, None, None, status="failed", error="retry failed"),  # finished s0 stays
        _row("lm", "random_skip", 0, 31.5, 20.0, 500, 800, 20, metric="perplexity"),
    ]
    text = "\n".join(json.dumps(r) for r in lines[:5]) + "\n\n" + "\n".join(json.dumps(r) for r in lines[5:])
    text += '\n{"suite": "unit", "cell": "rt/full/s'  # truncated last line (run killed mid-write)
    (d / "results.jsonl").write_text(text)
    # records: a learning curve for full, a skip history for random_skip (lm has none: missing records)
    for seed in range(3):
        rd = d / f"runs/rt/full/s{seed}"
        rd.mkdir(parents=True)
        (rd / "record.json").write_text(json.dumps({"curve": [
            {"optimizer_steps": 32 * k, "train_s": 30.0 * k, "accuracy": 0.6 + 0.07 * k} for k in range(1, 4)],
            "step_losses": [1.0, 0.8, 0.6], "skip_history": []}))
        rd = d / f"runs/rt/random_skip/s{seed}"
        rd.mkdir(parents=True)
        (rd / "record.json").write_text(json.dumps({"skip_history": [
            {"batch": 4 * i, "epoch": 0, "seen": 128, "kept": 90, "skip_rate": 0.3} for i in range(1, 6)]}))
    (d / "runs/rt/random_skip/s2/record.json").write_text('{"curve": [')  # corrupt record: ignored
    return d


def _by(summary, dataset, label):
    (row,) = [s for s in summary if s["dataset"] == dataset and s["label"] == label]
    return row


def test_load_results_finished_last_line_wins(tmp_path, caplog):
    build_results(tmp_path)
    with caplog.at_level(logging.WARNING, logger="datadiet.bench.report"):
        rows = load_results(tmp_path / "results.jsonl")
    assert any("truncated" in m for m in caplog.messages)
    assert all(r["status"] == "finished" for r in rows)
    cells = [r["cell"] for r in rows]
    assert len(cells) == len(set(cells)) == 9  # 3 full + 3 random_skip + 2 BOLD + 1 lm
    assert "rt/random_skip/s3" not in cells  # failed only
    full1 = [r for r in rows if r["cell"] == "rt/full/s1"][0]
    assert full1["value"] == 0.81 and full1["wall_clock_s"] == 110.0
    assert [r for r in rows if r["cell"] == "rt/full/s0"][0]["value"] == 0.80  # a later failure doesn't erase it
    assert load_results(tmp_path) == rows  # the folder works too
    with pytest.raises(FileNotFoundError):
        load_results(tmp_path / "nope.jsonl")


def test_summarize_matches_hand_computation(tmp_path):
    rows = load_results(build_results(tmp_path))
    before = copy.deepcopy(rows)
    summary = summarize(rows)
    assert rows == before  # pure

    full = _by(summary, "rt", "full")
    # full: values 0.80, 0.81, 0.82; wall-clock 100, 110, 90; backprop 3000 x3
    assert full["n_seeds"] == 3 and full["is_reference"]
    assert full["median"] == pytest.approx(0.81)
    assert (full["min"], full["max"]) == (pytest.approx(0.80), pytest.approx(0.82))
    assert full["iqr"] == pytest.approx(0.815 - 0.805)
    assert full["median_wall_clock_s"] == pytest.approx(100.0)
    assert full["median_macro_f1"] == pytest.approx(0.80)
    assert full["speedup_vs_full"] == pytest.approx(1.0)
    assert full["quality_delta_vs_full"] == pytest.approx(0.0)

    rs = _by(summary, "rt", "random_skip")
    # random_skip: values 0.78, 0.79, 0.81 -> 0.79; wall 60, 70, 50 -> 60; backprop 2100, 2000, 2200 -> 2100
    assert rs["n_seeds"] == 3  # the failed s3 is not counted
    assert rs["median"] == pytest.approx(0.79)
    assert rs["median_wall_clock_s"] == pytest.approx(60.0)
    assert rs["speedup_vs_full"] == pytest.approx(100.0 / 60.0)
    assert rs["quality_delta_vs_full"] == pytest.approx(0.79 - 0.81)
    assert rs["backprop_fraction_vs_full"] == pytest.approx(2100 / 3000)
    assert rs["forward_fraction_vs_full"] == pytest.approx(3000 / 3000)
    assert rs["median_optimizer_steps"] == pytest.approx(66)
    assert rs["median_macro_f1"] is None

    b = _by(summary, "rt", BOLD)
    # two seeds: medians are the means of the two middle values
    assert b["median"] == pytest.approx((0.70 + 0.75) / 2)
    assert b["median_wall_clock_s"] == pytest.approx(45.0)
    assert b["speedup_vs_full"] == pytest.approx(100.0 / 45.0)
    assert b["backprop_fraction_vs_full"] == pytest.approx(1200 / 3000)
    assert b["forward_fraction_vs_full"] == pytest.approx(2000 / 3000)

    lm = _by(summary, "lm", "random_skip")
    assert lm["metric"] == "perplexity" and lm["higher_is_better"] is False
    assert lm["n_seeds"] == 1 and lm["median"] == pytest.approx(31.5) and lm["iqr"] is None
    assert lm["reference"] is None
    for k in ("speedup_vs_full", "quality_delta_vs_full", "backprop_fraction_vs_full", "forward_fraction_vs_full"):
        assert lm[k] is None
    assert [s["label"] for s in summary if s["dataset"] == "rt"] == ["full", "random_skip", BOLD]
    assert summarize([]) == []


def test_write_report_markdown_and_html(tmp_path):
    md_path, html_path = write_report(build_results(tmp_path))
    assert (md_path, html_path) == (tmp_path / "report.md", tmp_path / "report.html")
    md = md_path.read_text()
    assert "unit" in md and "torch: 2.5.1" in md and "threads: 2" in md and "device: cpu" in md
    assert "| full | 3 | 0.8100 | 0.8000 – 0.8200 | 0.0100 | 0.8000 | 100.0 | 1.00x | +0.0000 (±0.0100) | 1.00 | 1.00 | 96 |" in md
    assert "| random_skip | 3 | 0.7900 | 0.7800 – 0.8100 | 0.0150 | — | 60.0 | 1.67x | -0.0200 (±0.0100) | 0.70 | 1.00 | 66 |" in md
    assert "| skip\\<b\\>x\\</b\\> | 2 | 0.7250 |" in md and "45.0 | 2.22x | -0.0850 (±0.0100) | 0.40 | 0.67 | 37 |" in md
    assert "perplexity median ↓ (lower is better)" in md
    assert "| random_skip | 1 | 31.5000 |" in md and "no `full` rows" in md
    assert "rt/random_skip/s3" in md  # listed as a failed cell
    assert "rt/full/s0: retry failed" not in md  # s0 finished: not a failed cell
    assert "0.5000" not in md and "999.0" not in md  # superseded line
    assert "wall-clock" in md.lower() and "same suite" in md

    page = html_path.read_text()
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"<(script|img|iframe)[^>]*\bsrc=", page) and "<link" not in page and "@import" not in page
    # rt: quality vs wall-clock, vs backprop, skip rate, learning curves; lm: the first two only (no records)
    assert page.count("<svg") == 6
    assert len(re.findall(r'data-kind="skip"', page)) == 1 and len(re.findall(r'data-kind="curve"', page)) == 1
    assert "skip&lt;b&gt;x&lt;/b&gt;" in page and "<b>x" not in page
    assert 'id="plot-count">6<' in page
    assert "0.7900" in page and "1.67x" in page and "2.22x" in page
    assert page.count("<title>") > 20  # tooltips on the marks


def test_write_report_without_finished_rows(tmp_path):
    (tmp_path / "results.jsonl").write_text(json.dumps({"suite": "s", "cell": "a/full/s0", "status": "failed",
                                                        "error": "x"}) + "\n")
    md, page = write_report(tmp_path, title="Empty & <odd>")
    assert "No finished results" in md.read_text()
    text = page.read_text()
    assert "Empty &amp; &lt;odd&gt;" in text and text.count("<svg") == 0
    with pytest.raises(FileNotFoundError):
        write_report(tmp_path / "missing")


def test_report_names_the_cpu_and_warns_when_wall_clock_mixes_machines(tmp_path):
    amd, intel = "AMD EPYC 7B13", "Intel(R) Xeon(R) Processor"
    for name in ("old", "one", "two", "part"):
        (tmp_path / name).mkdir()
    # results written before the CPU was recorded: no cpu line, no warning (older reports regenerate unchanged)
    text = _md_for(tmp_path / "old", [_row("rt", "full", 0, 0.8, 100.0, 10, 10, 1)])
    assert "- cpu:" not in text and "more than one CPU" not in text
    # one CPU for every cell: named, no warning, in both the markdown and the page
    text = _md_for(tmp_path / "one", [_row("rt", "full", s, 0.8, 100.0, 10, 10, 1, cpu=amd) for s in (0, 1)])
    assert f"- cpu: {amd}\n" in text and "more than one CPU" not in text
    assert amd in (tmp_path / "one" / "report.html").read_text()
    # two CPUs: both named and the speed-up flagged as mixing machines
    text = _md_for(tmp_path / "two", [_row("rt", "full", 0, 0.8, 100.0, 10, 10, 1, cpu=amd),
                                      _row("rt", "full", 1, 0.8, 70.0, 10, 10, 1, cpu=intel)])
    assert f"- cpu: {amd}, {intel}\n" in text and "more than one CPU" in text
    assert "more than one CPU" in (tmp_path / "two" / "report.html").read_text()
    # some cells recorded, some not: counted, and flagged too
    text = _md_for(tmp_path / "part", [_row("rt", "full", 0, 0.8, 100.0, 10, 10, 1),
                                       _row("rt", "full", 1, 0.8, 70.0, 10, 10, 1, cpu=intel)])
    assert f"- cpu: {intel}; not recorded for 1 of 2 cells" in text and "more than one CPU" in text


def test_speedup_pairs_seeds_on_the_same_cpu_when_cells_span_machines(tmp_path):
    amd, intel = "AMD EPYC 7B13", "Intel(R) Xeon(R) Processor"
    rows = [_row("rt", "full", 0, 0.8, 100.0, 10, 10, 1, cpu=amd), _row("rt", "full", 1, 0.8, 120.0, 10, 10, 1, cpu=amd),
            _row("rt", "full", 2, 0.8, 70.0, 10, 10, 1, cpu=intel),
            # m: seed 0 pairs (100/50), seed 1 ran on Intel against full's AMD (no pair), seed 2 pairs (70/28)
            _row("rt", "m", 0, 0.8, 50.0, 5, 10, 1, cpu=amd), _row("rt", "m", 1, 0.8, 40.0, 5, 10, 1, cpu=intel),
            _row("rt", "m", 2, 0.8, 28.0, 5, 10, 1, cpu=intel),
            _row("rt", "lone", 1, 0.8, 30.0, 5, 10, 1, cpu=intel),  # no seed on full's CPU: no speed-up
            _row("other", "full", 0, 0.8, 100.0, 10, 10, 1, cpu=amd), _row("other", "full", 1, 0.8, 120.0, 10, 10, 1, cpu=amd),
            _row("other", "m", 0, 0.8, 40.0, 5, 10, 1, cpu=amd)]  # one CPU in the comparison: ratio of medians
    by = {(s["dataset"], s["label"]): s for s in summarize(rows)}
    m = by[("rt", "m")]
    assert m["speedup_vs_full"] == pytest.approx((2.0 + 2.5) / 2) and m["speedup_paired_seeds"] == 2
    assert 100.0 / 40.0 != pytest.approx(m["speedup_vs_full"])  # the ratio of medians it replaces
    assert by[("rt", "full")]["speedup_vs_full"] == pytest.approx(1.0) and by[("rt", "full")]["speedup_paired_seeds"] == 3
    assert by[("rt", "lone")]["speedup_vs_full"] is None and by[("rt", "lone")]["speedup_paired_seeds"] == 0
    o = by[("other", "m")]
    assert o["speedup_vs_full"] == pytest.approx(110.0 / 40.0) and o["speedup_paired_seeds"] is None
    text = _md_for(tmp_path, rows)
    assert "| 2.25x (2 paired) |" in text and "| — (0 paired) |" in text and "| 2.75x |" in text
    assert "'n paired'" in text


def test_speedup_says_how_many_seeds_ran_in_another_sitting(tmp_path):
    intel = "Intel(R) Xeon(R) Processor"
    t = lambda h: f"2026-12-04T{h:02d}:00:00+0000"  # noqa: E731
    rows = [_row("rt", "full", s, 0.8, 100.0, 10, 10, 1, cpu=intel, finished_at=t(10)) for s in (0, 1, 2)]
    # m: seed 0 finished 1 h after full's (one sitting), seed 1 exactly 3 h after (not more), seed 2 5 h before
    rows += [_row("rt", "m", 0, 0.8, 50.0, 5, 10, 1, cpu=intel, finished_at=t(11)),
             _row("rt", "m", 1, 0.8, 50.0, 5, 10, 1, cpu=intel, finished_at=t(13)),
             _row("rt", "m", 2, 0.8, 50.0, 5, 10, 1, cpu=intel, finished_at=t(5)),
             # no zone is read as UTC; an unreadable time does not count
             _row("rt", "naive", 0, 0.8, 50.0, 5, 10, 1, cpu=intel, finished_at="2026-12-04T18:00:00"),
             _row("rt", "naive", 1, 0.8, 50.0, 5, 10, 1, cpu=intel, finished_at="yesterday")]
    by = {(s["dataset"], s["label"]): s for s in summarize(rows)}
    assert by[("rt", "m")]["speedup_apart_seeds"] == 1 and by[("rt", "full")]["speedup_apart_seeds"] == 0
    assert by[("rt", "naive")]["speedup_apart_seeds"] == 1
    text = _md_for(tmp_path, rows)
    assert "| 2.00x (1 >3 h apart) |" in text and "'k >3 h apart' beside a speed-up" in text
    # across CPUs the count joins the paired count
    rows[3] = dict(rows[3], cpu="AMD EPYC 7B13")
    m = {(s["dataset"], s["label"]): s for s in summarize(rows)}[("rt", "m")]
    assert m["speedup_paired_seeds"] == 2 and m["speedup_apart_seeds"] == 1
    (tmp_path / "cpus").mkdir()
    assert "| 2.00x (2 paired; 1 >3 h apart) |" in _md_for(tmp_path / "cpus", rows)


def test_paired_test_against_full_by_seed(tmp_path):
    # perplexity (lower is better): igf beats full on 6 of 7 seeds; the 7th seed of full is missing for igf
    full = [30.0, 31.0, 29.5, 30.5, 32.0, 30.2, 29.9, 31.1]
    igf = [29.0, 30.1, 29.6, 29.0, 31.0, 29.7, 29.5]
    rows = [_row("lm", "full", s, v, 10.0, 1, 1, 20, metric="perplexity") for s, v in enumerate(full)]
    rows += [_row("lm", "igf", s, v, 12.0, 1, 1, 20, metric="perplexity") for s, v in enumerate(igf)]
    summary = summarize(rows)
    t = _by(summary, "lm", "igf")["paired_vs_full"]
    # by hand: differences igf - full over seeds 0-6: -1, -0.9, +0.1, -1.5, -1, -0.5, -0.4
    # |d| ranks: 0.1->1, 0.4->2, 0.5->3, 0.9->4, 1->5.5, 1->5.5, 1.5->7; W+ = 1 (only +0.1)
    # P(W+ <= 1) under H0 over 2^7 sign patterns: W+ in {0, 1} -> 2 patterns -> 2/128
    assert t["n"] == 7 and t["wins"] == 6
    assert t["p_better"] == pytest.approx(2 / 128) and t["p_two_sided"] == pytest.approx(4 / 128)
    assert _by(summary, "lm", "full")["paired_vs_full"] is None
    few = summarize(rows[:4] + rows[8:12])  # 4 paired seeds: too few
    assert _by(few, "lm", "igf")["paired_vs_full"] is None
    assert "paired vs full" in _md_for(tmp_path, rows)


def _md_for(d, rows):
    (d / "results.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    md, _html = write_report(d)
    return md.read_text()


# ----------------------------------------------------------------------------------------------
# Random controls at the same budget and the noise floor
# ----------------------------------------------------------------------------------------------


def _acc(dataset, label, values, *, method=None, seeds=None, metric="accuracy"):
    seeds = range(len(values)) if seeds is None else seeds
    return [_row(dataset, label, s, v, 10.0, 100, 100, 5, method=method, metric=metric) for s, v in zip(seeds, values)]


def controls_rows():
    """ht (accuracy): full 0.80/0.81/0.82 (noise floor 0.01) and four methods against their random controls."""
    return (_acc("ht", "full", [0.80, 0.81, 0.82])
            # diffs -0.05, -0.05, +0.02: median -0.05 -> does not beat (1 of 3 wins)
            + _acc("ht", "multistage_d30", [0.75, 0.77, 0.80], method="multistage")
            + _acc("ht", "random_skip@multistage_d30", [0.80, 0.82, 0.78], method="random_skip")
            # diffs +0.03, +0.03, +0.02: every seed a win, median 0.03 > 0.01 -> beats; the control's seed 3 is unpaired
            + _acc("ht", "selective_backprop", [0.80, 0.81, 0.80])
            + _acc("ht", "random_skip@selective_backprop", [0.77, 0.78, 0.78, 0.10], method="random_skip")
            # diffs +0.005 x3: every seed a win but inside the noise floor -> inconclusive
            + _acc("ht", "ingenious_25", [0.79, 0.79, 0.79], method="ingenious")
            + _acc("ht", "random_subset@ingenious_25", [0.785, 0.785, 0.785], method="random_subset")
            # diffs +0.02, -0.02, +0.03: median above 0 but a seed lost -> inconclusive
            + _acc("ht", "loss_threshold", [0.80, 0.76, 0.81])
            + _acc("ht", "random_skip@loss_threshold", [0.78, 0.78, 0.78], method="random_skip")
            # an @ label whose X is absent: just a row
            + _acc("ht", "random_skip@nowhere", [0.70, 0.71, 0.72], method="random_skip"))


def test_control_target_and_verdict():
    assert control_target("random_skip@multistage_d30") == "multistage_d30"
    assert control_target("random_subset@ingenious_25") == "ingenious_25"
    assert control_target("random_skip") is None and control_target("full") is None
    assert control_target("skip@x") is None and control_target("random_skip@") is None
    v = control_verdict
    assert v([0.03, 0.03, 0.02], noise_floor=0.01) == "beats"
    assert v([0.03, 0.03, 0.02], noise_floor=0.03) == "inconclusive"  # the median must be larger than the floor
    assert v([0.03, 0.03, 0.02], noise_floor=None) == "inconclusive"  # no floor known
    assert v([0.03, -0.01, 0.02], noise_floor=0.001) == "inconclusive"  # a seed lost
    assert v([-0.05, -0.05, 0.02], noise_floor=0.01) == "does not beat"
    assert v([0.0, 0.0, 0.01], noise_floor=0.0) == "does not beat"  # a median of 0 does not beat
    assert v([], noise_floor=0.01) == "inconclusive"
    # lower is better (perplexity): negative differences are wins
    assert v([-2.0, -0.5, -3.0], higher_is_better=False, noise_floor=1.0) == "beats"
    assert v([2.0, 0.5, 3.0], higher_is_better=False, noise_floor=1.0) == "does not beat"
    assert noise_floor([0.80, 0.82, 0.81]) == pytest.approx(0.01)
    assert noise_floor([0.80]) is None and noise_floor([]) is None


def test_summarize_pairs_each_method_with_its_random_control():
    summary = summarize(controls_rows())
    ms = _by(summary, "ht", "multistage_d30")["vs_control"]
    assert ms["control"] == "random_skip@multistage_d30" and ms["n"] == 3
    assert list(ms["diffs"]) == [0, 1, 2]
    assert [ms["diffs"][k] for k in range(3)] == pytest.approx([-0.05, -0.05, 0.02])
    assert ms["median_diff"] == pytest.approx(-0.05) and ms["wins"] == 1 and ms["verdict"] == "does not beat"
    assert ms["p_better"] is None and ms["p_two_sided"] is None  # 3 < PAIRED_MIN_SEEDS
    sb = _by(summary, "ht", "selective_backprop")["vs_control"]
    assert sb["n"] == 3 and 3 not in sb["diffs"]  # the control's seed 3 has no partner
    assert sb["median_diff"] == pytest.approx(0.03) and sb["wins"] == 3 and sb["verdict"] == "beats"
    ing = _by(summary, "ht", "ingenious_25")["vs_control"]
    assert ing["control"] == "random_subset@ingenious_25" and ing["wins"] == 3 and ing["verdict"] == "inconclusive"
    lt = _by(summary, "ht", "loss_threshold")["vs_control"]
    assert lt["median_diff"] == pytest.approx(0.02) and lt["wins"] == 2 and lt["verdict"] == "inconclusive"
    # the controls are marked; rows without a control (full, the controls, the orphan) have none
    assert _by(summary, "ht", "random_skip@multistage_d30")["controls"] == "multistage_d30"
    assert _by(summary, "ht", "random_subset@ingenious_25")["controls"] == "ingenious_25"
    for label in ("full", "random_skip@multistage_d30", "random_skip@nowhere"):
        assert _by(summary, "ht", label)["vs_control"] is None
    assert _by(summary, "ht", "random_skip@nowhere")["controls"] is None
    assert _by(summary, "ht", "full")["controls"] is None
    # the noise floor: half full's min-max range, on every row of the section
    assert [s["noise_floor"] for s in summary] == [pytest.approx(0.01)] * len(summary) and len(summary) == 10


def test_control_wilcoxon_from_five_seeds():
    rows = (_acc("ht", "full", [0.80, 0.81, 0.82, 0.80, 0.81])
            + _acc("ht", "x", [0.80, 0.81, 0.82, 0.83, 0.84]) + _acc("ht", "random_skip@x", [0.70, 0.72, 0.71, 0.74, 0.70]))
    assert PAIRED_MIN_SEEDS == 5
    v = _by(summarize(rows), "ht", "x")["vs_control"]
    # 5 positive differences: W+ is the maximum, 1 of 2^5 sign patterns
    assert v["n"] == 5 and v["wins"] == 5 and v["verdict"] == "beats"
    assert v["p_better"] == pytest.approx(1 / 32) and v["p_two_sided"] == pytest.approx(2 / 32)


def test_perplexity_control_wins_are_lower_values():
    rows = (_acc("lm", "full", [30.0, 31.0, 29.0], metric="perplexity")
            + _acc("lm", "igf", [28.0, 29.5, 27.0], metric="perplexity")  # diffs -2, -0.5, -3
            + _acc("lm", "random_subset@igf", [30.0, 30.0, 30.0], metric="perplexity", method="random_subset")
            + _acc("lm", "worse", [31.0, 30.5, 33.0], metric="perplexity")  # diffs +1, +0.5, +3
            + _acc("lm", "random_subset@worse", [30.0, 30.0, 30.0], metric="perplexity", method="random_subset"))
    summary = summarize(rows)
    igf = _by(summary, "lm", "igf")
    assert igf["noise_floor"] == pytest.approx(1.0)
    assert igf["vs_control"]["median_diff"] == pytest.approx(-2.0)
    assert igf["vs_control"]["wins"] == 3 and igf["vs_control"]["verdict"] == "beats"
    worse = _by(summary, "lm", "worse")["vs_control"]
    assert worse["median_diff"] == pytest.approx(1.0) and worse["wins"] == 0 and worse["verdict"] == "does not beat"


def test_perplexity_control_sentences_use_its_own_units(tmp_path):
    rows = (_acc("lm", "full", [30.0, 31.0, 29.0], metric="perplexity")
            + _acc("lm", "igf", [28.0, 29.5, 27.0], metric="perplexity")
            + _acc("lm", "random_subset@igf", [30.0, 30.0, 30.0], metric="perplexity", method="random_subset"))
    md = _md_for(tmp_path, rows)
    assert ("- igf beats random_subset@igf by a median paired difference of -2.0000 perplexity over 3 seeds "
            "(3 of 3 wins; noise floor 1.0000 perplexity; perplexity in its own units, lower is better).") in md
    assert "points" not in md.split("### Against random at the same budget")[1].split("## How to read")[0]


def test_report_against_random_section_and_noise_floor(tmp_path):
    md = _md_for(tmp_path, controls_rows())
    # the noise floor beside every Δ vs full
    assert "Δ accuracy vs full (higher is better; ± noise floor)" in md
    assert "| multistage_d30 | 3 | 0.7700 |" in md and "| -0.0400 (±0.0100) |" in md
    assert "| +0.0000 (±0.0100) |" in md  # full itself
    head, rest = md.split("### Against random at the same budget")
    assert "| method label | seeds |" in head  # after the main table
    table = rest.split("## How to read")[0]
    assert ("| multistage_d30 | random_skip@multistage_d30 | 3 | -0.0500 | 1/3 | s0 -0.0500, s1 -0.0500, s2 +0.0200 "
            "| n<5 | does not beat |") in table
    assert "| random_skip@nowhere |" not in table and "| full |" not in table
    assert ("- multistage_d30 does not beat random_skip@multistage_d30: median paired difference -5.00 points of "
            "accuracy over 3 seeds (1 of 3 wins).") in table
    assert ("- selective_backprop beats random_skip@selective_backprop by a median paired difference of +3.00 points "
            "of accuracy over 3 seeds (3 of 3 wins; noise floor 1.00 points).") in table
    assert ("- ingenious_25 against random_subset@ingenious_25 is inconclusive: median paired difference +0.50 points "
            "of accuracy over 3 seeds (3 of 3 wins; not larger than the noise floor of 1.00 points).") in table
    assert ("- loss_threshold against random_skip@loss_threshold is inconclusive: median paired difference +2.00 "
            "points of accuracy over 3 seeds (2 of 3 wins; not every seed is a win).") in table
    assert "Noise floor" in md.split("## How to read")[1] and "bit-identical" in md
    page = (tmp_path / "report.html").read_text()
    assert "<h3>Against random at the same budget</h3>" in page and '<table class="controls">' in page
    assert ("<li>multistage_d30 does not beat random_skip@multistage_d30: median paired difference -5.00 points of "
            "accuracy over 3 seeds (1 of 3 wins).</li>") in page
    assert "-0.0400 (±0.0100)" in page
    assert page.count('<tr class="control"') == 4  # the four controls whose method is present, not the orphan


def test_no_noise_floor_without_two_full_seeds(tmp_path):
    rows = (_acc("ht", "full", [0.80]) + _acc("ht", "x", [0.90]) + _acc("ht", "random_skip@x", [0.70]))
    summary = summarize(rows)
    x = _by(summary, "ht", "x")
    assert x["noise_floor"] is None and x["vs_control"]["verdict"] == "inconclusive"
    md = _md_for(tmp_path, rows)
    assert "| +0.1000 |" in md and "±" not in md.split("### Against random")[0].split("| method label |")[1]
    assert ("x against random_skip@x is inconclusive: median paired difference +20.00 points of accuracy over 1 seed "
            "(1 of 1 wins; fewer than 3 seeds).") in md
    # three paired wins, but full has one seed: the missing noise floor is the reason given
    three = (_acc("ht", "full", [0.80]) + _acc("ht", "x", [0.89, 0.90, 0.91])
             + _acc("ht", "random_skip@x", [0.69, 0.70, 0.71]))
    assert _by(summarize(three), "ht", "x")["vs_control"]["verdict"] == "inconclusive"
    assert ("x against random_skip@x is inconclusive: median paired difference +20.00 points of accuracy over 3 seeds "
            "(3 of 3 wins; the noise floor is unknown (fewer than 2 seeds of full)).") in _md_for(tmp_path, three)
    # no control anywhere: no section
    assert "Against random" not in _md_for(tmp_path, _acc("ht", "full", [0.8, 0.9]) + _acc("ht", "random_skip@y", [0.7]))


def test_beats_needs_three_paired_seeds():
    assert BEATS_MIN_SEEDS == 3
    assert control_verdict([0.05], noise_floor=0.01) == "inconclusive"  # one win is not evidence
    assert control_verdict([0.05, 0.04], noise_floor=0.01) == "inconclusive"
    assert control_verdict([0.05, 0.04, 0.03], noise_floor=0.01) == "beats"
    assert control_verdict([-0.05], noise_floor=0.01) == "does not beat"  # what was measured did not beat
    rows = (_acc("ht", "full", [0.80, 0.82]) + _acc("ht", "x", [0.90, 0.91])
            + _acc("ht", "random_skip@x", [0.70, 0.70], method="random_skip"))
    s = _by(summarize(rows), "ht", "x")
    assert s["vs_control"]["verdict"] == "inconclusive"
    from datadiet.bench.report import _control_sentence

    assert "fewer than 3 seeds" in _control_sentence(s, True)


def test_a_reused_control_names_the_cells_it_is(tmp_path):
    # random_subset@b's lines are random_subset@a's cells, reused by the harness (their same_as)
    a = _acc("ht", "random_subset@a", [0.70, 0.71, 0.72], method="random_subset")
    b = [dict(r, label="random_subset@b", cell=r["cell"].replace("@a", "@b"), same_as=r["cell"]) for r in a]
    rows = (_acc("ht", "full", [0.80, 0.81, 0.82]) + _acc("ht", "a", [0.75, 0.76, 0.77])
            + _acc("ht", "b", [0.74, 0.76, 0.78]) + a + b)
    summary = summarize(rows)
    assert _by(summary, "ht", "a")["vs_control"]["same_as"] == []
    vb = _by(summary, "ht", "b")["vs_control"]
    assert vb["control"] == "random_subset@b" and vb["same_as"] == ["random_subset@a"]
    assert [vb["diffs"][k] for k in range(3)] == pytest.approx([0.04, 0.05, 0.06])
    md = _md_for(tmp_path, rows)
    assert "random_subset@b (= random_subset@a)" in md
