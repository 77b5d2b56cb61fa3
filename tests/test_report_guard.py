"""The stage-2 guard in the benchmark: its figures in results.jsonl, report.md and report.html.

The multistage records are built from the real filters: the meta predictor (and its ``SkipGuard``)
runs on the planted token streams of ``test_multistage_guard``, and its telemetry, through JSON as a
run record holds it, is the record's ``filters.MetaPredictor``. Nothing about the shape is invented.
"""

from __future__ import annotations

import json
import re
import statistics
from types import SimpleNamespace

import pytest
import torch

from datadiet.bench.harness import result_row
from datadiet.bench.report import GUARD_FIGURES, guard_figures, guard_history, load_results, summarize, write_report
from datadiet.config import load_config
from datadiet.core.engine import StepEngine
from datadiet.methods.multistage.guard import HISTORY_COLUMNS, SkipGuard
from datadiet.records import read_record
from datadiet.runner import run

from test_multistage import EASY, PlantedLossModel, planted_token_batches
from test_multistage_guard import invert, planted_method
from test_report import _row, build_results

SEEDS = (0, 1, 2)


def _record(engine: StepEngine) -> dict:
    """A run record's ``filters`` part, as JSON gives it back."""
    return {"filters": json.loads(json.dumps(engine.summary()["filters"]))}


def _stream(method, n_batches: int, *, seed: int, wrong: bool = False) -> dict:
    """The planted stream of ``test_multistage_guard`` through the engine; the record's ``filters``."""
    meta, lt = method.build_filters(n_first_epoch=n_batches * 16, seed=0)
    if wrong:
        invert(meta)  # confidently wrong: the guard never lets it skip
    engine = StepEngine(task="classification", batch_size=16, filters=[meta, lt])
    model = PlantedLossModel(EASY)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    for batch, _ in planted_token_batches(n_batches, 16, seed=seed):
        engine.step(model, opt, batch)
    engine.end_epoch(model, opt)
    return _record(engine)


@pytest.fixture(scope="module")
def records():
    """Real multistage telemetry: a good predictor (3 stream seeds), a wrong one, and guard=false."""
    out = {("multistage", s): _stream(planted_method(), 150, seed=s + 1) for s in SEEDS}
    out[("ms_wrong", 0)] = _stream(planted_method(), 80, seed=2, wrong=True)
    out[("ms_unguarded", 0)] = _stream(planted_method(guard=False, meta_loss_threshold=0.3), 60, seed=1)
    return out


def _cell(label: str, seed: int, method: str = "multistage"):
    return SimpleNamespace(key=f"rt/{label}/s{seed}", seed=seed, dataset=SimpleNamespace(name="rt"),
                           method=SimpleNamespace(name=method, label=label, params={}))


def _harness_row(label: str, seed: int, rec: dict, value: float, method: str = "multistage") -> dict:
    """A results line as the harness writes it, from a record with these filters."""
    full_rec = {"metric": "accuracy", "value": value, "final": {}, "n_train": 1000, "n_train_used": 1000,
                "config": {"model": {"name": "tiny-bert"}, "train": {"epochs": 1}},
                "counts": {"examples_seen": 3000, "examples_forwarded": 2000, "examples_backpropagated": 1500,
                           "optimizer_steps": 50, "skipped": {}},
                "timings": {"wall_clock_s": 50.0 + seed, "train_s": 49.0, "selection_s": 1.0},
                "env": {"torch": "2.5.1", "torch_threads": 2, "device": "cpu"}, "finished": "2024-11-21T10:00:00",
                **rec}
    cell = _cell(label, seed, method)
    return result_row(SimpleNamespace(name="unit"), cell, full_rec, f"runs/rt/{label}/s{seed}")


def build_guard_results(d, records, *, rows_carry_guard: bool = True):
    """full x3, random_skip x1, multistage x3 (guarded, skipping), ms_wrong (blocking), ms_unguarded."""
    lines = [_row("rt", "full", s, 0.80 + 0.01 * s, 100.0, 3000, 3000, 96) for s in SEEDS]
    lines.append(_row("rt", "random_skip", 0, 0.78, 60.0, 2100, 3000, 66))
    for (label, s), rec in records.items():
        row = _harness_row(label, s, rec, 0.79)
        if not rows_carry_guard:
            row.pop("guard", None)
        lines.append(row)
        rd = d / row["run_dir"]
        rd.mkdir(parents=True)
        (rd / "record.json").write_text(json.dumps(rec))
    (d / "results.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    return d


def _md_row(md: str, label: str) -> list[str]:
    """The guard table's row of ``label`` in report.md (the table whose header says 'false-skip bound')."""
    table = md[md.index("| method label | guarded seeds"):]
    table = table[: table.index("\n\n")]
    (line,) = [ln for ln in table.splitlines() if ln.startswith(f"| {label} |")]
    return [c.strip() for c in line.strip("|").split("|")]


def test_guard_figures_come_from_the_real_telemetry(records):
    rec = records[("multistage", 0)]
    g = guard_figures(rec)
    tel = rec["filters"]["MetaPredictor"]["guard"]
    assert set(GUARD_FIGURES) <= set(tel), "every figure is a key of SkipGuard.telemetry()"
    assert g == {k: tel[k] for k in GUARD_FIGURES}
    assert g["state"] == "skipping" and g["stage2_disabled_by_guard"] is False
    assert g["false_skip_bound"] <= g["limit"] and g["effective_skip_rate"] == pytest.approx(0.8)
    hist = guard_history(rec)
    assert hist and set(hist[0]) == set(tel["history"]["columns"]) and hist[-1]["stage"] == 2
    w = guard_figures(records[("ms_wrong", 0)])
    assert w["state"] == "blocking" and w["stage2_disabled_by_guard"] is True and w["effective_skip_rate"] == 0.0
    assert guard_figures(records[("ms_unguarded", 0)]) is None, "guard=false: no guard"
    assert guard_history(records[("ms_unguarded", 0)]) == []
    for no_guard in (None, {}, {"filters": {"LossThreshold": {"tau": 1.0}}}, {"filters": {"MetaPredictor": {}}}):
        assert guard_figures(no_guard) is None and guard_history(no_guard) == []


@pytest.mark.parametrize("guard", [True, False])
def test_a_multistage_run_record_carries_the_guard_telemetry(tmp_path, guard):
    """Through the runner: record.json holds SkipGuard.telemetry() (guard=false: None) and the harness
    line takes its figures."""
    extra = [] if guard else ["method.params.meta_loss_threshold=0.5"]
    run(load_config(None, [
        "model.name=tiny-bert", "model.max_length=16", "data.max_train=48", "data.max_test=16", "train.epochs=1",
        "train.batch_size=8", "train.bf16=false", "train.threads=1", f"output_dir={tmp_path}", "run_name=ms",
        "method.name=multistage", "method.params.window=8", "method.params.guard_window=16",
        f"method.params.guard={str(guard).lower()}", *extra]))
    rec = read_record(tmp_path / "ms")  # as written to disk
    tel = rec["filters"]["MetaPredictor"]
    assert rec["status"] == "finished" and "stage2_disabled_by_guard" in tel
    row = _harness_row("ms", 0, rec, rec["value"])
    if not guard:
        assert tel["guard"] is None and guard_figures(rec) is None and "guard" not in row
        return
    assert set(tel["guard"]) == set(SkipGuard().telemetry(warmed_up=True))
    assert tel["guard"]["window"] == 16 and tel["guard"]["history"]["columns"] == HISTORY_COLUMNS
    assert tel["guard"]["history"]["rows"], "a check every guard_window // 8 labels"
    assert row["guard"] == guard_figures(rec) and row["guard"]["state"] == tel["guard"]["state"]


def test_harness_rows_carry_the_guard_only_where_there_is_one(records):
    row = _harness_row("multistage", 0, records[("multistage", 0)], 0.8)
    assert row["guard"] == guard_figures(records[("multistage", 0)])
    assert "guard" not in _harness_row("ms_unguarded", 0, records[("ms_unguarded", 0)], 0.8)
    assert "guard" not in _harness_row("full", 0, {}, 0.8, method="full")


def test_summary_takes_medians_of_the_guard_over_seeds(tmp_path, records):
    summary = summarize(load_results(build_guard_results(tmp_path, records)))
    by = {s["label"]: s for s in summary}
    figs = [guard_figures(records[("multistage", s)]) for s in SEEDS]
    g = by["multistage"]["guard"]
    assert g["n_seeds"] == 3 and g["states"] == {"skipping": 3} and g["disabled"] == 0
    for k in ("false_skip_estimate", "false_skip_bound", "limit", "effective_skip_rate"):
        assert g[f"median_{k}"] == pytest.approx(statistics.median(f[k] for f in figs))
    assert by["ms_wrong"]["guard"]["states"] == {"blocking": 1} and by["ms_wrong"]["guard"]["disabled"] == 1
    assert by["ms_unguarded"]["guard"] is None and by["full"]["guard"] is None and by["random_skip"]["guard"] is None


@pytest.mark.parametrize("rows_carry_guard", [True, False], ids=["from-results", "from-records"])
def test_report_shows_the_guard_for_multistage_cells(tmp_path, records, rows_carry_guard):
    build_guard_results(tmp_path, records, rows_carry_guard=rows_carry_guard)
    md_path, html_path = write_report(tmp_path)
    md, html = md_path.read_text(), html_path.read_text()
    figs = [guard_figures(records[("multistage", s)]) for s in SEEDS]
    med = {k: statistics.median(f[k] for f in figs) for k in ("false_skip_estimate", "false_skip_bound", "limit",
                                                                "effective_skip_rate")}
    want = ["multistage", "3", f"{med['false_skip_estimate']:.3f}", f"{med['false_skip_bound']:.3f}",
            f"{med['limit']:.3f}", f"{med['effective_skip_rate']:.3f}", "skipping", "no"]
    assert _md_row(md, "multistage") == want
    w = guard_figures(records[("ms_wrong", 0)])
    assert _md_row(md, "ms_wrong") == ["ms_wrong", "1", f"{w['false_skip_estimate']:.3f}",
                                       f"{w['false_skip_bound']:.3f}", f"{w['limit']:.3f}", "0.000", "blocking", "yes"]
    assert _md_row(md, "ms_unguarded") == ["ms_unguarded"] + ["—"] * 7  # guard=false renders as dashes
    with pytest.raises(ValueError):
        _md_row(md, "random_skip")  # other methods are not in the guard table
    assert "Stage-2 guard (multistage)" in md

    # HTML: the same table (and per seed), and the guard over training
    sect = html[html.index("<h3>Stage-2 guard (multistage)</h3>"):]
    table = sect[: sect.index("</table>")]
    row = re.search(r"<tr><td class=\"label\"><span[^>]*></span>multistage</td>(.*?)</tr>", table).group(1)
    assert re.findall(r">([^<>]*)</td>", row) == want[1:]
    assert "ms_unguarded</td>" + '<td class="num">—</td>' * 5 in table.replace("\n", "")
    per_seed = sect[sect.index("the guard per seed"):sect.index("</details>")]
    for s, f in zip(SEEDS, figs):
        assert f"multistage · seed {s}</td>" in per_seed and f"{f['false_skip_bound']:.3f}" in per_seed
    assert html.count('data-kind="guard-bound"') == 1 and html.count('data-kind="guard-skip"') == 1
    plot = html[html.index('data-kind="guard-bound"'):]
    plot = plot[: plot.index("</svg>")]
    # one bound line and one dashed limit line per guarded seed (3 + 1), each ending at its final figure
    assert plot.count('class="ln"') == 8 and plot.count('stroke-dasharray="5 4"><title>') == 4
    assert plot.count("last false-skip bound") == 4 and plot.count("last limit") == 4
    for f in figs:
        assert f"last false-skip bound {f['false_skip_bound']:.3f}" in plot
    skip = html[html.index('data-kind="guard-skip"'):]
    assert f"last effective skip rate {figs[0]['effective_skip_rate']:.3f}" in skip[: skip.index("</svg>")]
    n_svg = html.count("<svg")
    assert f'<span id="plot-count">{n_svg}</span>' in html


def test_report_without_multistage_has_no_guard_section(tmp_path):
    md_path, html_path = write_report(build_results(tmp_path))
    md, html = md_path.read_text(), html_path.read_text()
    assert "guard" not in md.lower() and "guard" not in html.lower()
    assert all("guard" not in r for r in load_results(tmp_path))
    assert all(s["guard"] is None for s in summarize(load_results(tmp_path)))
