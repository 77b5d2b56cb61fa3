"""Time to accuracy: curves timed without evaluation, time to target, ratios to full, the report's table and chart."""

from __future__ import annotations

import json
import math
import re
import time

import pytest
import torch

from datadiet.bench.report import write_report
from datadiet.bench.tta import cell_curve, compact_curve, prefix_curve, target_for, time_to_accuracy, time_to_target


# ----------------------------------------------------------------------------------------------
# time_to_target / target_for
# ----------------------------------------------------------------------------------------------


def test_time_to_target_is_the_first_evaluation_at_or_beyond_it():
    times, values = [1.0, 2.0, 3.0, 4.0], [0.50, 0.70, 0.79, 0.85]
    assert time_to_target(times, values, 0.78) == 3.0  # no interpolation between 2 s and 3 s
    assert time_to_target(times, values, 0.79) == 3.0  # reaching it exactly counts
    assert time_to_target(times, values, 0.40) == 1.0
    assert time_to_target(times, [0.5, 0.9, 0.6, 0.7], 0.8) == 2.0  # the first crossing, even if it falls back
    assert time_to_target(times, values, 0.86) is None  # never reached
    assert time_to_target(times, [None, float("nan"), 0.9, 0.9], 0.8) == 3.0  # missing values are skipped
    assert time_to_target([], [], 0.5) is None
    with pytest.raises(ValueError, match="paired"):
        time_to_target([1.0, 2.0], [0.5], 0.4)


def test_lower_is_better_metrics_reach_their_target_from_above():
    times, ppl = [1.0, 2.0, 3.0, 4.0], [40.0, 30.0, 25.2, 25.0]
    target = target_for(25.0, higher_is_better=False)
    assert target == pytest.approx(25.125)  # 0.5 % worse than full's final
    assert time_to_target(times, ppl, target, higher_is_better=False) == 4.0
    assert time_to_target(times, ppl, 30.0, higher_is_better=False) == 2.0
    assert time_to_target(times, ppl, 24.0, higher_is_better=False) is None
    assert target_for(0.8, higher_is_better=True) == pytest.approx(0.795)  # 0.5 accuracy points


def test_a_value_exactly_on_the_target_reaches_it_despite_float_rounding():
    assert 20.0 * 1.005 < 20.1  # the rounding this guards against
    assert time_to_target([1.0, 2.0], [0.79, 0.795], target_for(0.8, higher_is_better=True)) == 2.0
    assert time_to_target([1.0, 2.0], [21.0, 20.1], target_for(20.0, higher_is_better=False),
                          higher_is_better=False) == 2.0
    assert time_to_target([1.0], [0.7949], target_for(0.8, higher_is_better=True)) is None


# ----------------------------------------------------------------------------------------------
# cells: curves from results lines or records, the selection offset, the final point
# ----------------------------------------------------------------------------------------------


def _row(label, seed, value, *, sel=0.0, train=None, times=None, values=None, method=None, metric="accuracy",
         run_dir=None):
    """A finished results line; ``times``/``values``: its compact curve (cumulative training seconds)."""
    r = {"suite": "unit", "cell": f"rt/{label}/s{seed}", "dataset": "rt", "model": "tiny-bert", "method": method or label,
         "label": label, "params": {}, "seed": seed, "metric": metric, "value": value, "selection_s": sel,
         "train_s": train, "wall_clock_s": None if train is None else sel + train, "examples_forwarded": 100,
         "examples_backpropagated": 100, "optimizer_steps": 10, "status": "finished",
         "run_dir": run_dir or f"runs/rt/{label}/s{seed}"}
    if times is not None:
        r["curve"] = {"optimizer_steps": [10 * (i + 1) for i in range(len(times))], "train_s": times,
                      "eval_s": [0.5] * len(times), "value": values}
    return r


def test_cell_curve_adds_the_selection_time_and_ends_at_the_final_evaluation():
    r = _row("random_subset", 0, 0.80, sel=5.0, train=40.0, times=[10.0, 20.0, 30.0], values=[0.6, 0.7, 0.75])
    assert cell_curve(r) == ([15.0, 25.0, 35.0, 45.0], [0.6, 0.7, 0.75, 0.80])


def test_cell_curve_from_an_older_line_reads_the_record_and_old_records_have_none():
    r = _row("full", 0, 0.8, train=30.0)  # a line written before the harness kept curves
    rec = {"metric": "accuracy", "timings": {"selection_s": 0.0},
           "curve": [{"optimizer_steps": 10, "train_s": 10.0, "accuracy": 0.7},
                     {"optimizer_steps": 20, "train_s": 20.0, "accuracy": 0.79}]}
    assert cell_curve(r, rec) == ([10.0, 20.0, 30.0], [0.7, 0.79, 0.8])
    old = {"curve": [{"optimizer_steps": 10, "accuracy": 0.7}]}  # before curve points carried train_s
    assert cell_curve(r, old) is None and cell_curve(r, None) is None and cell_curve(r, {"curve": []}) is None
    assert compact_curve(old["curve"], "accuracy") is None
    assert compact_curve(rec["curve"], "accuracy") == {"optimizer_steps": [10, 20], "train_s": [10.0, 20.0],
                                                       "eval_s": [None, None], "value": [0.7, 0.79]}


# ----------------------------------------------------------------------------------------------
# time_to_accuracy: medians over seeds of per-seed times and ratios
# ----------------------------------------------------------------------------------------------


def _planted():
    """full reaches its own target (final - 0.005) at 30 s (seed 0) and 40 s (seed 1, 2); a prune method
    with 5 s of selection gets there at 15 s / 35 s / never; a skip method never."""
    full = [_row("full", 0, 0.800, train=40.0, times=[10.0, 20.0, 30.0], values=[0.70, 0.78, 0.796]),
            _row("full", 1, 0.820, train=40.0, times=[10.0, 20.0, 30.0], values=[0.70, 0.78, 0.80]),
            _row("full", 2, 0.810, train=40.0, times=[10.0, 20.0, 30.0], values=[0.70, 0.78, 0.80])]
    prune = [_row("random_subset", 0, 0.79, sel=5.0, train=20.0, times=[10.0, 20.0], values=[0.795, 0.79]),
             _row("random_subset", 1, 0.816, sel=5.0, train=30.0, times=[10.0, 20.0], values=[0.70, 0.78]),
             _row("random_subset", 2, 0.70, sel=5.0, train=20.0, times=[10.0], values=[0.60])]
    skip = [_row("random_skip", s, 0.5, train=20.0, times=[10.0], values=[0.5]) for s in range(3)]
    return {"full": full, "random_subset": prune, "random_skip": skip}


def test_time_to_accuracy_medians_of_per_seed_times_and_ratios():
    out = {x["label"]: x for x in time_to_accuracy(_planted(), "full", higher_is_better=True)}
    assert list(out) == ["full", "random_subset", "random_skip"]
    f, p, s = out["full"], out["random_subset"], out["random_skip"]
    assert [q["time_s"] for q in f["per_seed"]] == [30.0, 40.0, 40.0]  # seed 1: 0.80 < 0.815, only the final
    assert f["median_time_s"] == 40.0 and f["median_ratio"] == 1.0 and (f["reached"], f["seeds"]) == (3, 3)
    # random_subset: seed 0 at 5 + 10 s (ratio 0.5), seed 1 at its final 5 + 30 s (0.875), seed 2 never (inf)
    assert [q["time_s"] for q in p["per_seed"]] == [15.0, 35.0, None]
    assert [q["ratio"] for q in p["per_seed"]] == [0.5, 0.875, None]
    assert p["median_time_s"] == 35.0 and p["median_ratio"] == 0.875 and (p["reached"], p["seeds"]) == (2, 3)
    assert [q["target"] for q in p["per_seed"]] == pytest.approx([0.795, 0.815, 0.805])
    assert s["median_time_s"] is None and s["median_ratio"] is None and s["reached"] == 0


def test_not_reached_on_most_seeds_is_not_reached_and_unpaired_seeds_do_not_count():
    b = _planted()
    b["random_subset"][1]["value"] = 0.70  # now only seed 0 reaches: the median seed does not
    b["random_subset"].append(_row("random_subset", 7, 0.99, train=1.0, times=[0.5], values=[0.99]))  # no full s7
    b["random_skip"] = [_row("random_skip", 0, 0.8, train=9.0)]  # no curve: left out
    out = {x["label"]: x for x in time_to_accuracy(b, "full", higher_is_better=True)}
    assert out["random_subset"]["median_ratio"] is None and out["random_subset"]["median_time_s"] is None
    assert (out["random_subset"]["reached"], out["random_subset"]["seeds"]) == (1, 3)
    assert "random_skip" not in out


def test_time_to_accuracy_pairs_a_seed_only_on_the_same_cpu():
    amd, intel = "AMD EPYC 7B13", "Intel(R) Xeon(R) Processor"
    b = _planted()
    for r in b["full"] + b["random_subset"]:
        r["cpu"] = amd
    b["random_subset"][1]["cpu"] = intel  # seed 1 on another machine than full's seed 1: its ratio measures CPUs
    p = {x["label"]: x for x in time_to_accuracy(b, "full", higher_is_better=True)}["random_subset"]
    assert [q["seed"] for q in p["per_seed"]] == [0, 2] and (p["reached"], p["seeds"]) == (1, 2)
    # a CPU recorded on one side and not on the other does not pair either; unrecorded on both sides does
    for r in b["random_subset"]:
        r.pop("cpu")
    out = {x["label"]: x for x in time_to_accuracy(b, "full", higher_is_better=True)}
    assert "random_subset" not in out
    for r in b["full"]:
        r.pop("cpu")
    out = {x["label"]: x for x in time_to_accuracy(b, "full", higher_is_better=True)}
    assert out["random_subset"]["seeds"] == 3


def test_perplexity_direction_in_time_to_accuracy():
    lm = {"full": [_row("full", 0, 20.0, train=50.0, metric="perplexity", times=[10.0, 30.0, 40.0],
                        values=[60.0, 20.08, 20.2])],
          "igf": [_row("igf", 0, 19.0, train=50.0, metric="perplexity", times=[10.0, 20.0], values=[40.0, 20.09])]}
    out = {x["label"]: x for x in time_to_accuracy(lm, "full", higher_is_better=False)}
    assert out["full"]["median_time_s"] == 30.0  # 20.08 <= 20 * 1.005
    assert out["igf"]["median_time_s"] == 20.0 and out["igf"]["median_ratio"] == pytest.approx(2 / 3)


# ----------------------------------------------------------------------------------------------
# the report
# ----------------------------------------------------------------------------------------------


def _write(d, rows, records=None):
    d.mkdir(parents=True, exist_ok=True)
    (d / "results.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    for run_dir, rec in (records or {}).items():
        (d / run_dir).mkdir(parents=True, exist_ok=True)
        (d / run_dir / "record.json").write_text(json.dumps(rec))
    return d


def test_report_tabulates_time_to_accuracy_and_draws_the_pareto_chart(tmp_path):
    b = _planted()
    old = _row("old_method", 0, 0.81, train=10.0)  # a line and record from before curves carried times
    rows = [r for rs in b.values() for r in rs] + [old]
    md, html = write_report(_write(tmp_path, rows, {old["run_dir"]: {"curve": [{"accuracy": 0.7}]}}))
    text = md.read_text()
    assert "### Time to accuracy" in text
    assert "full's final accuracy at the same seed minus 0.5 points (0.005)" in text
    assert "| full | 40.0 | 1.00x | 3 / 3 |" in text
    assert "| random_subset | 35.0 | 0.88x | 2 / 3 |" in text
    assert "| random_skip | not reached | not reached | 0 / 3 |" in text
    assert "| old_method |" not in text.split("### Time to accuracy")[1]
    assert "1 finished cell(s) without a timed learning curve are left out" in text
    page = html.read_text()
    assert len(re.findall(r'data-kind="tta"', page)) == 1 and '<table class="tta">' in page
    svg = re.search(r'<svg[^>]*data-kind="tta".*?</svg>', page, flags=re.DOTALL).group(0)
    assert svg.count('class="ln"') == 3  # one line per method at seed 0
    assert "seed 0" in svg and "target reached at 15.0 s" in svg and "target not reached" in svg


def test_time_to_accuracy_counts_the_seeds_that_ran_in_another_sitting(tmp_path):
    t = lambda h: f"2026-12-04T{h:02d}:00:00+0000"  # noqa: E731
    b = _planted()
    for r in b["full"]:
        r["finished_at"] = t(10)
    # random_subset: seed 0 one sitting (1 h), seed 1 another (5 h before), seed 2 another (4 h after)
    for r, h in zip(b["random_subset"], (11, 5, 14)):
        r["finished_at"] = t(h)
    for r in b["random_skip"]:
        r["finished_at"] = t(12)
    b["random_skip"].append(_row("random_skip", 9, 0.5, train=20.0, times=[10.0], values=[0.5]))  # no full s9
    b["random_skip"][-1]["finished_at"] = t(20)  # not counted in time to accuracy, so not apart either
    text = write_report(_write(tmp_path, [r for rs in b.values() for r in rs]))[0].read_text()
    tta = text.split("### Time to accuracy")[1]
    assert "| full | 40.0 | 1.00x | 3 / 3 |" in tta
    assert "| random_subset | 35.0 | 0.88x | 2 / 3 (2 >3 h apart) |" in tta
    assert "| random_skip | not reached | not reached | 0 / 3 |" in tta
    assert "beside a speed-up or a time-to-accuracy seed count" in text


def test_report_without_timed_curves_has_no_time_to_accuracy(tmp_path):
    rows = [_row("full", 0, 0.8, train=10.0), _row("random_skip", 0, 0.7, train=5.0)]
    md, html = write_report(_write(tmp_path / "a", rows))
    assert "### Time to accuracy" not in md.read_text() and 'data-kind="tta"' not in html.read_text()
    # only full has a curve: nothing to compare
    rows = [_row("full", 0, 0.8, train=10.0, times=[5.0], values=[0.8]), _row("random_skip", 0, 0.7, train=5.0)]
    md, html = write_report(_write(tmp_path / "b", rows))
    assert "### Time to accuracy" not in md.read_text() and 'data-kind="tta"' not in html.read_text()


# ----------------------------------------------------------------------------------------------
# the loop's clock and the whole path: datadiet bench -> results.jsonl -> report
# ----------------------------------------------------------------------------------------------


def test_curve_points_time_training_without_evaluation(tiny_cls):
    from datadiet.core.engine import StepEngine
    from datadiet.loop import fit

    model, tok, ds, col = tiny_cls
    pause = 0.15

    def slow_eval():
        time.sleep(pause)
        return {"accuracy": 0.5}

    t0 = time.perf_counter()
    res = fit(model, ds, engine=StepEngine(task="classification", batch_size=16), collator=col, epochs=1,
              evaluate=slow_eval, eval_every=1)
    elapsed = time.perf_counter() - t0
    assert len(res.curve) == 4
    ts = [c["train_s"] for c in res.curve]
    assert ts == sorted(ts) and ts[0] > 0 and res.train_s >= ts[-1]
    assert all(c["eval_s"] >= pause for c in res.curve)
    assert res.eval_s == pytest.approx(sum(c["eval_s"] for c in res.curve))
    assert res.train_s <= elapsed - 4 * pause  # the four evaluations are not training time


def _fit_with_curve(tiny_cls, *, skip_odd: bool, **kw):
    """One epoch of the 64-example set (batch 16); ``skip_odd``: a filter skips the odd ids before the forward."""
    from datadiet.core.engine import StepEngine
    from datadiet.core.filter import Decision, OnlineFilter
    from datadiet.loop import fit

    class SkipOdd(OnlineFilter):
        stage = "pre_forward"
        reason = "odd_id"

        def decide(self, batch, losses):
            return Decision(keep=batch.ids % 2 == 0)

    model, tok, ds, col = tiny_cls
    engine = StepEngine(task="classification", batch_size=16, filters=[SkipOdd()] if skip_odd else [])
    return fit(model, ds, engine=engine, collator=col, epochs=1, evaluate=lambda: {"accuracy": 0.5}, **kw)


def test_eval_by_examples_evaluates_a_skipping_method_where_full_is_evaluated(tiny_cls):
    def at(res, key):
        return [c[key] for c in res.curve]

    full = _fit_with_curve(tiny_cls, skip_odd=False, eval_every=1)  # every optimizer step: each 16 examples
    assert at(full, "examples_seen") == [16, 32, 48, 64] and at(full, "optimizer_steps") == [1, 2, 3, 4]
    # counted in optimizer steps, a method that skips half of the examples gets half of the points
    by_steps = _fit_with_curve(tiny_cls, skip_odd=True, eval_every=1)
    assert at(by_steps, "examples_seen") == [32, 64] and at(by_steps, "optimizer_steps") == [1, 2]
    # counted in examples seen it is evaluated where full is, whatever it has backpropagated by then
    by_examples = _fit_with_curve(tiny_cls, skip_odd=True, eval_every=16, eval_by="examples")
    assert at(by_examples, "examples_seen") == [16, 32, 48, 64]
    assert at(by_examples, "optimizer_steps") == [0, 1, 1, 2]
    assert at(by_examples, "examples_backpropagated") == [0, 16, 16, 32]
    # a period shorter than a batch: one evaluation per batch that crosses one or more thresholds
    short = _fit_with_curve(tiny_cls, skip_odd=True, eval_every=5, eval_by="examples")
    assert at(short, "examples_seen") == [16, 32, 48, 64]
    with pytest.raises(ValueError, match="eval_by must be one of 'steps', 'examples', got 'epochs'"):
        _fit_with_curve(tiny_cls, skip_odd=False, eval_every=1, eval_by="epochs")


def test_evaluating_during_training_changes_no_parameter(tiny_cls):
    """A learning curve (real evaluations, eval mode, dropout off) leaves training bit-identical."""
    from datadiet.core.engine import StepEngine
    from datadiet.loop import evaluate_model, fit
    from datadiet.models.tiny import tiny_model

    _, _, ds, col = tiny_cls
    weights = []
    for every in (None, 16):
        model = tiny_model("tiny-bert", num_labels=2, seed=0)[0]
        ev = (lambda m=model: evaluate_model(m, ds, task="classification", collator=col, num_labels=2)) if every else None
        res = fit(model, ds, engine=StepEngine(task="classification", batch_size=16), collator=col, epochs=2,
                  evaluate=ev, eval_every=every, eval_by="examples")
        assert len(res.curve) == (8 if every else 0)
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
    for k, v in weights[0].items():
        assert torch.equal(v, weights[1][k]), k


def test_bench_smoke_cells_report_time_to_accuracy(tmp_path):
    from datadiet.cli.main import main

    # the smoke suite's settings, three of its methods on one dataset, smaller still
    suite = tmp_path / "tta.yaml"
    suite.write_text(
        "name: tta\n"
        "base:\n"
        "  model: {name: tiny-bert, max_length: 24}\n"
        "  data: {max_train: 64, max_test: 32}\n"
        "  train: {epochs: 2, batch_size: 16, lr: 1.0e-3, bf16: false, threads: 1, eval_every: 2, eval_max_examples: 32}\n"
        "datasets: [rotten_tomatoes]\n"
        "methods: [full, {name: random_subset, params: {fraction: 0.5}}, {name: random_skip, params: {rate: 0.5}}]\n"
        "seeds: [0, 1]\n")
    out = tmp_path / "out"
    assert main(["bench", "--suite", str(suite), "--out", str(out), "-q"]) == 0
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 6
    for r in lines:
        c = r["curve"]
        assert len(c["train_s"]) == len(c["value"]) == len(c["eval_s"]) >= 1
        assert c["train_s"] == sorted(c["train_s"]) and c["train_s"][-1] <= r["train_s"]
        assert all(e > 0 for e in c["eval_s"]) and all(0 <= v <= 1 for v in c["value"])
    text = (out / "report.md").read_text()
    table = text.split("### Time to accuracy")[1]
    assert "| full |" in table and "| 1.00x | 2 / 2 |" in table
    assert "| random_subset |" in table and "| random_skip |" in table
    assert 'data-kind="tta"' in (out / "report.html").read_text()
    assert all(r["eval_subset"] == "evenly_spaced" for r in lines)  # their curves count whole
    assert "first train.eval_max_examples" not in text
    sub = next(r for r in lines if r["label"] == "random_subset")
    t, _ = cell_curve(sub)
    assert t[0] == pytest.approx(sub["selection_s"] + sub["curve"]["train_s"][0])
    assert not math.isinf(t[-1])


def test_a_run_that_asked_for_a_curve_but_ended_before_its_first_evaluation_has_its_final_point():
    # a skipping method with fewer optimizer steps than train.eval_every: the record's curve is empty
    r = _row("multistage", 0, 0.95, sel=1.0, train=399.0)
    rec = {"metric": "accuracy", "config": {"train": {"eval_every": 300}}, "curve": []}
    assert cell_curve(r, rec) == ([400.0], [0.95])
    # without train.eval_every (no curve asked for) it still has none, and so has a record without a config
    assert cell_curve(r, {"metric": "accuracy", "config": {"train": {"eval_every": None}}, "curve": []}) is None
    assert cell_curve(r, {"curve": []}) is None
    # and an unfinished line (no final value) has nothing to show
    assert cell_curve(_row("multistage", 0, None, train=None), rec) is None


def test_time_to_accuracy_counts_a_final_point_only_cell_as_not_reached_or_reached():
    full = _row("full", 0, 0.97, train=1800.0, times=[300.0, 600.0], values=[0.94, 0.95])
    lo = _row("multistage", 0, 0.95, train=400.0)
    hi = _row("loss_threshold", 0, 0.968, train=800.0)
    rec = {"metric": "accuracy", "config": {"train": {"eval_every": 300}}, "curve": []}
    out = {x["label"]: x for x in time_to_accuracy({"full": [full], "multistage": [lo], "loss_threshold": [hi]}, "full",
                                                    higher_is_better=True, records={id(lo): rec, id(hi): rec})}
    assert out["multistage"]["reached"] == 0 and out["multistage"]["median_time_s"] is None
    assert out["loss_threshold"]["reached"] == 1 and out["loss_threshold"]["median_time_s"] == 800.0
    assert abs(out["loss_threshold"]["median_ratio"] - 800.0 / 1800.0) < 1e-12


# ----------------------------------------------------------------------------------------------
# records from before the evenly spaced evaluation subset: a capped curve read the split's prefix
# ----------------------------------------------------------------------------------------------


def _capped_record(cap, n_test=100, **extra):
    return {"metric": "accuracy", "n_test": n_test, "timings": {"selection_s": 0.0},
            "config": {"train": {"eval_every": 10, "eval_max_examples": cap}},
            "curve": [{"optimizer_steps": 10, "train_s": 10.0, "accuracy": 0.95},
                      {"optimizer_steps": 20, "train_s": 20.0, "accuracy": 0.96}], **extra}


def test_a_curve_read_on_a_prefix_of_the_test_split_keeps_only_its_final_point():
    # Planted: an old record capped its evaluations at 20 of 100 test examples and read 0.95-0.96 on
    # that prefix, above its final 0.80 on the whole split; only the final point is a measurement.
    r = _row("full", 0, 0.80, train=30.0, times=[10.0, 20.0], values=[0.95, 0.96])
    old = _capped_record(20)
    assert prefix_curve(r, old) and cell_curve(r, old) == ([30.0], [0.80])
    whole = ([10.0, 20.0, 30.0], [0.95, 0.96, 0.80])
    # the evenly spaced subset (marked in the record or in the results line) keeps every point
    assert not prefix_curve(r, _capped_record(20, eval_subset="evenly_spaced"))
    assert cell_curve(r, _capped_record(20, eval_subset="evenly_spaced")) == whole
    assert cell_curve(dict(r, eval_subset="evenly_spaced"), old) == whole
    # an uncapped evaluation, or a cap at least the split's size, read the whole split anyway
    assert cell_curve(r, _capped_record(None)) == whole and cell_curve(r, _capped_record(100)) == whole
    # without a record nothing says the evaluation was capped
    assert not prefix_curve(r, None) and cell_curve(r, None) == whole
    # a capped run that ended before its first evaluation read nothing on a prefix
    assert not prefix_curve(_row("multistage", 0, 0.80, train=30.0), dict(_capped_record(20), curve=[]))


def test_report_counts_prefix_curves_by_their_final_point_and_says_so(tmp_path):
    # full's prefix curve touches the random skip's level early; judged by final points only,
    # random_skip (0.70 final) never reaches full's target (0.795) and full reaches it at its end.
    full = _row("full", 0, 0.80, train=40.0, times=[10.0, 20.0], values=[0.95, 0.96])
    skip = _row("random_skip", 0, 0.70, train=20.0, times=[10.0], values=[0.97])
    md, html = write_report(_write(tmp_path, [full, skip], {full["run_dir"]: _capped_record(20),
                                                          skip["run_dir"]: _capped_record(20)}))
    text = md.read_text()
    table = text.split("### Time to accuracy")[1]
    assert "| full | 40.0 | 1.00x | 1 / 1 |" in table
    assert "| random_skip | not reached | not reached | 0 / 1 |" in table
    assert "2 cell(s) evaluated their learning curve on the test split's first train.eval_max_examples" in text


# ----------------------------------------------------------------------------------------------
# how noisy one intermediate evaluation is, against the 0.5-point target
# ----------------------------------------------------------------------------------------------


def test_curve_eval_size_and_accuracy_sd():
    from datadiet.bench.tta import accuracy_sd, curve_eval_size

    assert curve_eval_size(_capped_record(20)) == 20  # capped below the split: the cap
    assert curve_eval_size(_capped_record(None)) == 100 and curve_eval_size(_capped_record(500)) == 100
    assert curve_eval_size(None) is None
    assert curve_eval_size(dict(_capped_record(20), curve=[])) is None  # no intermediate evaluation
    assert curve_eval_size({k: v for k, v in _capped_record(20).items() if k != "n_test"}) is None
    assert accuracy_sd(0.95, 1000) == pytest.approx(math.sqrt(0.95 * 0.05 / 1000))
    assert accuracy_sd(1.0, 10) == 0.0
    for p, n in [(1.5, 10), (-0.1, 10), (0.5, 0)]:
        with pytest.raises(ValueError, match="accuracy_sd needs"):
            accuracy_sd(p, n)


def _tta_text(tmp_path, *, n_test, cap, metric="accuracy", final=0.955):
    full = _row("full", 0, final, train=40.0, times=[10.0, 20.0], values=[final - 0.01, final], metric=metric)
    skip = _row("random_skip", 0, final - 0.002, train=20.0, times=[10.0], values=[final], metric=metric)
    rec = dict(_capped_record(cap, n_test=n_test, eval_subset="evenly_spaced"), metric=metric)
    md, _ = write_report(_write(tmp_path, [full, skip], {full["run_dir"]: rec, skip["run_dir"]: rec}))
    return md.read_text().split("### Time to accuracy")[1]


def test_report_says_how_noisy_an_evaluation_is_against_the_target(tmp_path):
    # 1,000 of 2,000 held-out examples at a 95.0% target: SD 0.69 points, above half the 0.5-point margin
    text = _tta_text(tmp_path / "a", n_test=2000, cap=1000)
    assert "full's intermediate evaluations read 1,000 test examples" in text
    assert "binomial standard deviation is about 0.69 points, so a curve on its plateau crosses" in text
    # 100,000 examples: SD 0.07 points, the sentence stays and the warning goes
    text = _tta_text(tmp_path / "b", n_test=100_000, cap=None)
    assert "read 100,000 test examples: at the target one evaluation's binomial standard deviation is about 0.07 points." in text
    assert "crosses" not in text
    # not an accuracy (perplexity): no binomial figure
    text = _tta_text(tmp_path / "c", n_test=2000, cap=1000, metric="perplexity", final=20.0)
    assert "binomial" not in text
