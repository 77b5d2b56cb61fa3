"""The benchmark harness: validation before work, resumption, rate matching, the smoke suite."""

from __future__ import annotations

import json

import pytest

from datadiet.bench.harness import RESULTS, read_results, realised_skip_rate, run_suite
from datadiet.bench.suite import load_suite, parse_suite
from datadiet.errors import DataDietError
from datadiet.records import cpu_model
from datadiet.runner import run


def mini_suite(**over):
    raw = {
        "name": "mini",
        "base": {"model": {"name": "tiny-bert", "max_length": 24}, "data": {"max_train": 64, "max_test": 32},
                 "train": {"epochs": 1, "batch_size": 16, "bf16": False, "lr": 1e-3}},
        "datasets": ["rotten_tomatoes"],
        "methods": ["full", {"name": "selective_backprop", "params": {"warmup": 16}},
                    {"name": "random_skip", "label": "rs@sb", "params": {"rate": "match:selective_backprop"}}],
        "seeds": [0, 1],
    }
    raw.update(over)
    return parse_suite(raw)


@pytest.mark.parametrize("bad, needle", [
    ({"methods": ["full", "selectiv_backprop"]}, "unknown method 'selectiv_backprop'"),
    ({"datasets": ["rotten_tomatoes", "rotten_tomatos"]}, "unknown dataset 'rotten_tomatos'"),
    ({"methods": [{"name": "random_skip", "params": {"rat": 0.5}}]}, "has no parameter 'rat'"),
    ({"methods": [{"name": "random_skip", "params": {"rate": "match:nope"}}]}, "matches 'nope'"),
    ({"methods": ["full", "full"]}, "labels must be unique"),
    ({"base": {"train": {"epoch": 2}}}, "unknown config key 'train.epoch'"),
    ({"base": {"model": {"name": "minilmm"}}}, "unknown model 'minilmm'"),
    ({"seeds": []}, "seeds must be"),
])
def test_bad_suites_are_refused_before_any_work(bad, needle):
    with pytest.raises(DataDietError, match=needle.replace("(", r"\(")):
        mini_suite(**bad)


def test_cells_put_match_targets_first():
    s = mini_suite(methods=[{"name": "random_skip", "label": "rs", "params": {"rate": "match:sb"}},
                            {"name": "selective_backprop", "label": "sb"}, "full"])
    labels = [c.method.label for c in s.cells() if c.seed == 0]
    assert labels.index("sb") < labels.index("rs")


def test_interrupted_suite_resumes_without_rerunning_or_losing_finished_cells(tmp_path):
    suite = mini_suite()
    calls = []

    def interrupting_run(cfg, *, progress=False, run_dir=None):
        calls.append(str(run_dir))
        if len(calls) == 4:  # die mid-way through the 4th cell, after its record was created
            (run_dir).mkdir(parents=True, exist_ok=True)
            (run_dir / "record.json").write_text(json.dumps({"status": "running"}))
            raise KeyboardInterrupt
        return run(cfg, progress=progress, run_dir=run_dir)

    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, tmp_path, run_fn=interrupting_run)
    first = read_results(tmp_path)
    assert [r["cell"] for r in first] == ["rotten_tomatoes/full/s0", "rotten_tomatoes/selective_backprop/s0",
                                          "rotten_tomatoes/rs@sb/s0"]
    # Simulate a crash between writing a record and appending its line: drop the last line.
    lines = (tmp_path / RESULTS).read_text().splitlines()
    (tmp_path / RESULTS).write_text("\n".join(lines[:2]) + "\n")

    statuses = {}
    calls.clear()
    rows = run_suite(suite, tmp_path, run_fn=lambda cfg, **kw: calls.append(kw["run_dir"]) or run(cfg, **kw),
                     on_cell=lambda c, st, row: statuses.__setitem__(c.key, st))
    assert statuses["rotten_tomatoes/full/s0"] == "skipped"
    assert statuses["rotten_tomatoes/selective_backprop/s0"] == "skipped"
    assert statuses["rotten_tomatoes/rs@sb/s0"] == "recovered"  # rebuilt from its finished record
    assert statuses["rotten_tomatoes/full/s1"] == "finished"  # the interrupted cell was redone
    assert len(calls) == 3  # only the three unfinished seed-1 cells ran
    assert len(rows) == 6 and all(r["status"] == "finished" for r in rows)
    assert {r["cpu"] for r in rows} == {cpu_model()}  # the machine goes with every figure
    final = read_results(tmp_path)
    for r in first[:2]:  # finished results were kept unchanged
        assert r in final
    # A third run does nothing.
    calls.clear()
    run_suite(suite, tmp_path, run_fn=lambda cfg, **kw: calls.append(1) or run(cfg, **kw))
    assert calls == []


def test_random_skip_matches_the_target_cells_realised_rate(tmp_path):
    rows = run_suite(mini_suite(seeds=[0]), tmp_path)
    by = {r["label"]: r for r in rows}
    rate = realised_skip_rate(by["selective_backprop"])
    assert 0 < rate < 1
    assert by["rs@sb"]["params"]["rate"] == pytest.approx(rate)
    for k in ("suite", "dataset", "model", "method", "params", "seed", "metric", "value", "macro_f1", "wall_clock_s",
              "train_s", "selection_s", "eval_s", "examples_forwarded", "examples_backpropagated", "optimizer_steps",
              "status"):
        assert k in by["full"], k
    assert by["full"]["examples_backpropagated"] == 64 and by["full"]["metric"] == "accuracy"


def test_a_failing_cell_is_recorded_and_the_suite_goes_on(tmp_path):
    def flaky(cfg, **kw):
        if cfg.method.name == "selective_backprop":
            raise RuntimeError("boom")
        return run(cfg, **kw)

    rows = run_suite(mini_suite(seeds=[0]), tmp_path, run_fn=flaky)
    assert [r["label"] for r in rows] == ["full"]  # rs@sb cannot match a failed target
    failed = [r for r in read_results(tmp_path) if r["status"] == "failed"]
    assert {r["label"] for r in failed} == {"selective_backprop", "rs@sb"}
    assert "boom" in failed[0]["error"]


def test_shipped_suites_validate():
    from datadiet.bench.suite import builtin_suites
    from datadiet.methods.registry import build_method

    names = sorted(builtin_suites())
    assert {"smoke", "cpu", "gpu", "ingenious", "ingenious_cpt", "data_diet_clean", "igf_cpu"} <= set(names)
    for name in names:
        s = load_suite(name)
        assert s.cells(), name
        for m in s.methods:  # every method's parameters are valid before anything runs
            if m.match_target() is None:
                build_method(m.name, dict(m.params))


def test_smoke_suite_end_to_end_with_report(tmp_path):
    suite = load_suite("smoke")
    rows = run_suite(suite, tmp_path)
    assert len(rows) == len(suite.cells())
    from datadiet.bench.report import write_report

    md, html = write_report(tmp_path)
    text = md.read_text()
    for label in ("full", "random_subset", "selective_backprop", "random_skip@selective_backprop", "infobatch"):
        assert label in text
    assert "<svg" in html.read_text()
    # the record names the built-in suite by its place in the package, not by this machine's install path
    assert json.loads((tmp_path / "suite.json").read_text())["source"] == "datadiet.bench/suites/smoke.yaml (built-in)"


def test_a_suite_files_source_is_recorded_as_given_and_a_builtin_by_its_package_place(tmp_path):
    from datadiet.bench.suite import builtin_suites, portable_source

    assert portable_source(str(builtin_suites()["regime_b"])) == "datadiet.bench/suites/regime_b.yaml (built-in)"
    mine = tmp_path / "regime_b.yaml"  # a user's copy with a built-in's name is the user's file, not the built-in
    mine.write_text((builtin_suites()["regime_b"]).read_text())
    assert load_suite(str(mine)).source == str(mine) and portable_source(str(mine)) == str(mine)
    assert portable_source("<dict>") == "<dict>"


def test_rerun_measures_again_and_keeps_the_earlier_result(tmp_path):
    suite = mini_suite(seeds=[0], methods=["full", {"name": "random_skip", "params": {"rate": 0.5}}])
    run_suite(suite, tmp_path)
    before = read_results(tmp_path)
    calls = []
    run_suite(suite, tmp_path, rerun=["random_skip"], run_fn=lambda cfg, **kw: calls.append(cfg.method.name) or run(cfg, **kw))
    assert calls == ["random_skip"]
    after = read_results(tmp_path)
    assert after[:2] == before and len(after) == 3 and after[2]["label"] == "random_skip"
    prev = list((tmp_path / "runs" / "rotten_tomatoes" / "random_skip").glob("s0.prev-*"))
    assert len(prev) == 1 and (prev[0] / "record.json").exists()
    from datadiet.bench.report import load_results

    latest = [r for r in load_results(tmp_path / RESULTS) if r["label"] == "random_skip"]
    assert len(latest) == 1 and latest[0] == after[2]


def _fake_run(calls):
    """A stand-in for the runner: records which cell ran and returns a finished record."""
    from datadiet.methods.registry import build_method

    def run_fn(cfg, *, progress=False, run_dir=None):
        calls.append(str(run_dir))
        return {"metric": "accuracy", "value": 0.5 + len(calls) / 100, "status": "finished",
                "method": {"name": cfg.method.name, "params": build_method(cfg.method.name, cfg.method.params).params()},
                "finished": f"t{len(calls)}", "counts": {"examples_seen": 10, "examples_backpropagated": 10}}
    return run_fn


def test_a_cell_with_a_finished_twins_configuration_reuses_its_result(tmp_path):
    methods = [{"name": "random_subset", "label": "random_subset@a", "params": {"fraction": 0.5}},
               {"name": "random_subset", "label": "random_subset@b", "params": {"fraction": 0.5}},
               {"name": "random_subset", "label": "random_subset@c", "params": {"fraction": 0.25}}]
    suite = mini_suite(methods=methods, seeds=[0, 1])
    calls, statuses = [], []
    rows = run_suite(suite, tmp_path, run_fn=_fake_run(calls), on_cell=lambda c, st, r: statuses.append((c.key, st)))
    # a and c are measured at each seed; b is a's configuration (its label aside): not run twice
    assert sorted(c.split("runs/")[1] for c in calls) == [f"rotten_tomatoes/random_subset_at_{x}/s{s}"
                                                         for x in "ac" for s in (0, 1)]
    by = {r["cell"]: r for r in rows}
    for s in (0, 1):
        b, a = by[f"rotten_tomatoes/random_subset@b/s{s}"], by[f"rotten_tomatoes/random_subset@a/s{s}"]
        assert b["same_as"] == a["cell"] and b["label"] == "random_subset@b" and b["value"] == a["value"]
        assert b["run_dir"] == a["run_dir"] and "same_as" not in a
        assert (f"rotten_tomatoes/random_subset@b/s{s}", "reused") in statuses
    assert "same_as" not in by["rotten_tomatoes/random_subset@c/s0"]  # another fraction is another measurement
    # a second sitting runs nothing
    again = []
    run_suite(suite, tmp_path, run_fn=_fake_run(again))
    assert again == []
    # a re-measured twin renews the reused result; b named in rerun is measured itself
    run_suite(suite, tmp_path, rerun=["random_subset@a/s0"], run_fn=_fake_run(again))
    assert len(again) == 1
    latest = {r["cell"]: r for r in read_results(tmp_path)}
    assert latest["rotten_tomatoes/random_subset@b/s0"]["value"] == latest["rotten_tomatoes/random_subset@a/s0"]["value"]
    assert latest["rotten_tomatoes/random_subset@b/s0"]["finished_at"] == latest["rotten_tomatoes/random_subset@a/s0"]["finished_at"]
    mine = []
    run_suite(suite, tmp_path, rerun=["random_subset@b/s1"], run_fn=_fake_run(mine))
    assert [c.split("runs/")[1] for c in mine] == ["rotten_tomatoes/random_subset_at_b/s1"]
    assert "same_as" not in {r["cell"]: r for r in read_results(tmp_path)}["rotten_tomatoes/random_subset@b/s1"]


def test_a_matched_rate_is_a_twin_only_at_the_same_realised_rate(tmp_path):
    methods = [{"name": "random_skip", "label": "x", "params": {"rate": 0.0}},
               {"name": "random_skip", "label": "random_skip@x", "params": {"rate": "match:x"}},
               {"name": "random_skip", "label": "zero", "params": {"rate": 0.0}},
               {"name": "random_skip", "label": "half", "params": {"rate": 0.5}}]
    calls = []
    rows = run_suite(mini_suite(methods=methods, seeds=[0]), tmp_path, run_fn=_fake_run(calls))
    by = {r["label"]: r for r in rows}
    # x skipped nothing (10 of 10 backpropagated), so its matched control runs rate 0.0: x's configuration
    assert by["random_skip@x"]["same_as"] == "rotten_tomatoes/x/s0" and by["zero"]["same_as"] == "rotten_tomatoes/x/s0"
    assert "same_as" not in by["half"] and len(calls) == 2
