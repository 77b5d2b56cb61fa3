"""The ``datadiet`` command line, end to end on tiny models (offline, a few seconds per run)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from datadiet.cli.main import COMMANDS, main
from datadiet.config import load_config
from datadiet.demo import add_speedup, format_table

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
TINY = str(CONFIGS / "tiny.yaml")
RUN = "rotten_tomatoes-tiny-bert-full-s0"  # default run name of configs/tiny.yaml


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    # Nothing a test does may write into the checkout (e.g. a default runs/ folder).
    monkeypatch.chdir(tmp_path)


def test_train_end_to_end_then_refuse_then_overwrite(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["train", "--config", TINY, "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    rec = json.loads((out / RUN / "record.json").read_text())
    assert rec["status"] == "finished"
    assert rec["metric"] == "accuracy" and 0.0 <= rec["value"] <= 1.0
    assert rec["counts"]["examples_backpropagated"] == rec["n_train"] == 200
    for word in ("accuracy", "wall-clock", "forwarded", "backpropagated", "optimizer steps", str(out / RUN)):
        assert word in stdout

    # The same folder again: refused before any work, the finished record untouched.
    assert main(["train", "--config", TINY, "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "--overwrite" in err and "Traceback" not in err
    assert json.loads((out / RUN / "record.json").read_text()) == rec

    # --overwrite re-runs and keeps the earlier record as a backup beside the new one.
    assert main(["train", "--config", TINY, "--out", str(out), "--overwrite", "-q",
                 "--set", "method.name=random_skip", "run_name=" + RUN]) == 0
    new = json.loads((out / RUN / "record.json").read_text())
    assert new["status"] == "finished" and new["method"]["name"] == "random_skip"
    backups = list((out / RUN).glob("record.*.json"))
    assert len(backups) == 1
    assert json.loads(backups[0].read_text()) == rec


def test_set_accepts_several_overrides(tmp_path, capsys):
    out = tmp_path / "o"
    code = main(["train", "-c", TINY, "--out", str(out), "-q", "--set", "data.max_train=40", "data.max_test=20",
                 "--set", "run_name=small", "method.name=random_subset", "method.params.fraction=0.25"])
    assert code == 0
    rec = json.loads((out / "small" / "record.json").read_text())
    assert rec["n_train"] == 40 and rec["n_train_used"] == 10 and rec["n_test"] == 20
    assert "10 used after selection" in capsys.readouterr().out


def test_train_causal_lm_from_a_local_file(tmp_path, capsys):
    # A text file without a label column is causal-LM data; max_test subsamples held-out documents
    # (this used to leave the test split empty).
    words = "the quick brown fox jumps over a lazy dog while it rains".split()
    rows = [f'"{" ".join(words[i % 5:] + words[:i % 5])} {i}",doc{i}' for i in range(20)]
    csv = tmp_path / "notes.csv"
    csv.write_text("text,doc\n" + "\n".join(rows) + "\n")
    out = tmp_path / "lm"
    code = main(["train", "-q", "--out", str(out), "--set", f"data.name={csv}", "model.name=tiny-gpt2",
                 "data.context_length=8", "data.max_test=2", "train.threads=1", "run_name=lm"])
    assert code == 0, capsys.readouterr().err
    rec = json.loads((out / "lm" / "record.json").read_text())
    assert rec["status"] == "finished" and rec["task"] == "causal_lm" and rec["metric"] == "perplexity"
    assert rec["data"]["test"] == 2 and rec["n_test"] > 0
    assert "perplexity" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, expect",
    [
        (["env"], ["torch", "threads", "cpu", "accelerator"]),
        (["datasets"], ["rotten_tomatoes", "austen", "CSV/TSV/JSONL/Parquet", "hub"]),
        (["models"], ["minilm", "smollm2-135m", "tiny-bert"]),
        (["methods"], ["full", "random_subset", "random_skip", "mechanism", "saves", "fraction=0.5"]),
        (["-q", "methods"], ["random_skip"]),
        (["methods", "-v"], ["random_skip"]),
    ],
)
def test_info_commands(argv, expect, capsys):
    assert main(argv) == 0
    out = capsys.readouterr().out
    for word in expect:
        assert word in out


@pytest.mark.parametrize("cmd", ["env", "datasets", "models", "methods"])
def test_info_commands_json(cmd, capsys):
    assert main([cmd, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data


@pytest.mark.parametrize("cmd", [None] + [c.name for c in COMMANDS])
def test_help_of_every_subcommand(cmd, capsys):
    argv = ["--help"] if cmd is None else [cmd, "--help"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "usage: datadiet" in out
    if cmd is None:
        for c in COMMANDS:
            assert c.name in out


def test_bench_help_names_every_builtin_suite(capsys):
    from datadiet.bench.suite import builtin_suites

    assert main(["bench", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the help text
    names = sorted(builtin_suites())
    assert {"smoke", "regime_a", "regime_b", "demo_pick"} <= set(names)
    assert f"a built-in suite ({', '.join(names)}) or a suite YAML file" in out


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage: datadiet" in capsys.readouterr().out


def test_bad_option_is_a_usage_error(capsys):
    assert main(["train", "--no-such-option"]) == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_logging_handler_is_removed_after_main(capsys):
    logger = logging.getLogger("datadiet")
    before = list(logger.handlers)
    assert main(["methods"]) == 0
    assert logger.handlers == before


def test_keyboard_interrupt_exits_130(tmp_path, monkeypatch, capsys):
    import datadiet.runner

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(datadiet.runner, "run", interrupted)
    assert main(["train", "--config", TINY, "--out", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_file_loads(path):
    from datadiet.runner import check_config

    cfg = load_config(path)  # strict: an unknown key raises
    check_config(cfg)  # dataset, model and method names exist
    # named after its dataset (a variant adds a suffix: austen_igf_cpu)
    assert path.stem == cfg.data.name or path.stem.startswith(cfg.data.name + "_") or path.stem == "tiny"


def test_config_files_cover_every_builtin_dataset():
    from datadiet.data import BUILTIN

    stems = {p.stem for p in CONFIGS.glob("*.yaml")}
    assert set(BUILTIN) <= stems
    assert "tiny" in stems


def test_demo_end_to_end(tmp_path, capsys):
    from datadiet.demo import BEST_METHOD

    out = tmp_path / "demo"
    code = main(["demo", "--model", "tiny-bert", "--max-train", "100", "--max-test", "50", "--threads", "1",
                 "--out", str(out)])
    assert code == 0
    stdout = capsys.readouterr().out
    assert "rotten_tomatoes" in stdout and "tiny-bert" in stdout and "torch" in stdout
    table = stdout[stdout.index("method"):]
    for m in ("full", BEST_METHOD, f"random_skip@{BEST_METHOD}"):
        assert m in table
    assert "speed-up vs full" in table and "1.00x" in table
    # the verdict names the winner at the same budget and the points between them
    assert f"{BEST_METHOD} beat random skipping" in stdout or f"{BEST_METHOD} did not beat random" in stdout
    assert "accuracy points" in stdout
    records = sorted(out.glob("*/record.json"))
    assert len(records) == 3
    recs = {p.parent.name: json.loads(p.read_text()) for p in records}
    assert all(r["status"] == "finished" for r in recs.values())
    full = recs["rotten_tomatoes-tiny-bert-full-s0"]
    best = recs[f"rotten_tomatoes-tiny-bert-{BEST_METHOD}-s0"]
    control = recs[f"rotten_tomatoes-tiny-bert-random_skip_at_{BEST_METHOD}-s0"]
    assert full["counts"]["examples_backpropagated"] == 100
    # the control skips at the rate the method realised in this run
    c = best["counts"]
    realised = 1 - c["examples_backpropagated"] / c["examples_seen"]
    assert control["method"]["name"] == "random_skip"
    assert control["method"]["params"]["rate"] == pytest.approx(realised, abs=1e-6)

    # The demo re-runs into its own folders; the earlier record is kept as a backup.
    assert main(["demo", "-q", "--model", "tiny-bert", "--max-train", "40", "--max-test", "20", "--threads", "1",
                 "--methods", "full", "--out", str(out)]) == 0
    full_dir = out / "rotten_tomatoes-tiny-bert-full-s0"
    assert len(list(full_dir.glob("record.*.json"))) == 1


def test_demo_matched_control_needs_its_method_first(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--model", "tiny-bert", "--methods", "full,random_skip@loss_threshold,loss_threshold",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "'loss_threshold' must come earlier" in err and "--methods full,loss_threshold,random_skip@" in err
    assert "Traceback" not in err and not out.exists()


def test_demo_bf16_default_follows_the_hardware(monkeypatch):
    import datadiet.demo as demo

    assert demo.cpu_has_native_bf16("processor : 0\nflags : fpu avx2 avx512f avx512_bf16\n")
    assert demo.cpu_has_native_bf16("flags\t\t: fpu sse avx2 amx_bf16 amx_tile\n")
    assert not demo.cpu_has_native_bf16("processor : 0\nflags : fpu sse avx avx2 fma\n")
    assert not demo.cpu_has_native_bf16("")
    monkeypatch.setattr(demo, "bf16_is_fast", lambda: False)
    assert [c.config.train.bf16 for c in demo.demo_configs(model="tiny-bert", methods=["full"])] == [False]
    monkeypatch.setattr(demo, "bf16_is_fast", lambda: True)
    assert demo.demo_configs(model="tiny-bert", methods=["full"])[0].config.train.bf16 is True
    assert demo.demo_configs(model="tiny-bert", methods=["full"], bf16=False)[0].config.train.bf16 is False


def test_demo_verdict_is_pure_and_says_who_won():
    from datadiet.demo import verdict

    rows = add_speedup([
        {"method": "full", "accuracy": 0.80, "wall_clock_s": 100.0, "skip_rate": 0.0},
        {"method": "m", "accuracy": 0.79, "wall_clock_s": 60.0, "skip_rate": 0.55},
        {"method": "random_skip@m", "accuracy": 0.775, "wall_clock_s": 50.0, "skip_rate": 0.55},
    ])
    lines = verdict(rows)
    assert lines[0] == ("m beat random skipping at its budget by 1.50 accuracy points (both skipped the backward of "
                        "about 55% of the examples); it took 1.20x random skipping's wall-clock.")
    assert lines[1] == "Against full fine-tuning: -1.00 accuracy points at 1.67x its speed."
    rows[2]["accuracy"] = 0.8
    assert verdict(rows)[0].startswith("m did not beat random skipping at its budget (-1.00 accuracy points)")
    assert verdict([{"method": "full", "accuracy": 0.8}]) == []


def test_demo_unknown_method_fails_before_any_run(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--model", "tiny-bert", "--methods", "full,random_skipp", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "random_skip" in err and "Traceback" not in err
    assert not out.exists()


def test_format_table_is_pure():
    rows = add_speedup([
        {"method": "full", "accuracy": 0.8, "macro_f1": 0.79, "perplexity": None, "wall_clock_s": 10.0,
         "examples_forwarded": 4000, "examples_backpropagated": 4000, "optimizer_steps": 250},
        {"method": "random_skip", "accuracy": 0.78, "macro_f1": 0.77, "perplexity": None, "wall_clock_s": 5.0,
         "examples_forwarded": 2000, "examples_backpropagated": 2000, "optimizer_steps": 125},
    ])
    assert rows[1]["speedup_vs_full"] == pytest.approx(2.0)
    text = format_table(rows)
    lines = text.splitlines()
    assert len(lines) == 4
    assert "perplexity" not in text  # a column empty in every row is left out
    assert "2.00x" in lines[3] and "4,000" in lines[2] and "0.7800" in lines[3]
    assert format_table(rows) == text
