"""Every bad input gets a message that names the problem and the fix, exit status 2, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datadiet.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def train_error(capsys, tmp_path, *overrides: str, config: str | None = TINY) -> str:
    """Run ``datadiet train`` with ``overrides``; assert exit 2 and a clean message; return stderr."""
    argv = ["train", "-q", "--out", str(tmp_path / "runs")]
    if config is not None:
        argv += ["--config", config]
    if overrides:
        argv += ["--set", *overrides]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") or "\nerror: " in err, err
    assert "Traceback" not in err
    return err


def write(tmp_path: Path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_unknown_dataset_lists_known_ones(capsys, tmp_path):
    err = train_error(capsys, tmp_path, "data.name=rotten_tomatos")
    assert "unknown dataset 'rotten_tomatos'" in err
    assert "Did you mean 'rotten_tomatoes'" in err
    for name in ("austen", "fine_foods", "health_tweets", "news_outlets"):
        assert name in err
    assert "CSV" in err  # the other ways to name data


def test_unknown_model_lists_known_ones(capsys, tmp_path):
    err = train_error(capsys, tmp_path, "model.name=tiny-bertt")
    assert "unknown model 'tiny-bertt'" in err and "Did you mean 'tiny-bert'" in err
    for name in ("minilm", "smollm2-135m", "tiny-gpt2"):
        assert name in err


def test_unknown_method_lists_known_ones(capsys, tmp_path):
    err = train_error(capsys, tmp_path, "method.name=random_skipp")
    assert "unknown method 'random_skipp'" in err and "Did you mean 'random_skip'" in err
    for name in ("full", "random_subset"):
        assert name in err


def test_unknown_method_parameter_lists_its_parameters(capsys, tmp_path):
    err = train_error(capsys, tmp_path, "method.name=random_skip", "method.params.rat=0.3")
    assert "no parameter 'rat'" in err and "Did you mean 'rate'" in err


def test_unknown_config_key_suggests_nearest(capsys, tmp_path):
    err = train_error(capsys, tmp_path, "train.lrr=1e-4")
    assert "unknown config key 'train.lrr'" in err and "Did you mean 'lr'" in err


def test_unknown_section_suggests_nearest(capsys, tmp_path):
    err = train_error(capsys, tmp_path, "trian.lr=1e-4")
    assert "unknown config key 'trian'" in err and "Did you mean 'train'" in err


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epochs=0", "train.epochs must be >= 1, got 0"),
        ("train.lr=0", "train.lr must be > 0"),
        ("train.batch_size=many", "train.batch_size must be an integer"),
        ("train.schedule=cosine", "train.schedule"),
        ("method.params=3", "method.params must be a mapping"),
        ("data.name=123", "data.name must be a name or a path"),
    ],
)
def test_bad_values(override, message, capsys, tmp_path):
    assert message in train_error(capsys, tmp_path, override)


def test_bad_override_syntax(capsys, tmp_path):
    assert "must look like key=value" in train_error(capsys, tmp_path, "train.lr")


def test_csv_missing_text_column_lists_columns(capsys, tmp_path):
    csv = write(tmp_path, "reviews.csv", "review,label\ngood film,1\nbad film,0\nfine film,1\nawful film,0\n")
    err = train_error(capsys, tmp_path, f"data.name={csv}", "model.name=tiny-bert")
    assert "no text column 'text'" in err
    assert "Columns found: review, label" in err
    assert "data.text_column=" in err


def test_csv_header_only_is_empty(capsys, tmp_path):
    csv = write(tmp_path, "empty.csv", "text,label\n")
    err = train_error(capsys, tmp_path, f"data.name={csv}", "model.name=tiny-bert")
    assert "is empty (0 rows)" in err


def test_csv_zero_bytes(capsys, tmp_path):
    csv = write(tmp_path, "nothing.csv", "")
    err = train_error(capsys, tmp_path, f"data.name={csv}", "model.name=tiny-bert")
    assert "is empty" in err


def test_malformed_csv(capsys, tmp_path):
    csv = write(tmp_path, "broken.csv", 'text,label\n"an unclosed quote,1\n')
    err = train_error(capsys, tmp_path, f"data.name={csv}", "model.name=tiny-bert")
    assert "could not read" in err and "quoting" in err


def test_label_column_with_one_class(capsys, tmp_path):
    rows = "".join(f"review number {i},pos\n" for i in range(20))
    csv = write(tmp_path, "one.csv", "text,label\n" + rows)
    err = train_error(capsys, tmp_path, f"data.name={csv}", "model.name=tiny-bert")
    assert "only one class ('pos')" in err and "at least two" in err


def test_data_file_that_does_not_exist(capsys, tmp_path):
    err = train_error(capsys, tmp_path, f"data.name={tmp_path / 'nope.csv'}", "model.name=tiny-bert")
    assert "does not exist" in err


def test_config_file_that_does_not_exist(capsys, tmp_path):
    err = train_error(capsys, tmp_path, config=str(tmp_path / "missing.yaml"))
    assert "missing.yaml" in err and "does not exist" in err and "configs/" in err


def test_config_file_with_unknown_key(capsys, tmp_path):
    cfg = write(tmp_path, "bad.yaml", "data:\n  name: rotten_tomatoes\n  max_trian: 10\n")
    err = train_error(capsys, tmp_path, config=cfg)
    assert "unknown config key 'data.max_trian'" in err and "Did you mean 'max_train'" in err


def test_config_file_that_is_not_yaml(capsys, tmp_path):
    cfg = write(tmp_path, "bad.yaml", "data: [unclosed\n")
    assert "not valid YAML" in train_error(capsys, tmp_path, config=cfg)


def test_run_folder_with_finished_run_is_refused(capsys, tmp_path):
    run_dir = tmp_path / "runs" / "done"
    run_dir.mkdir(parents=True)
    finished = {"status": "finished", "metric": "accuracy", "value": 0.9}
    (run_dir / "record.json").write_text(json.dumps(finished))
    err = train_error(capsys, tmp_path, "run_name=done")
    assert "already holds a finished run" in err and "--overwrite" in err
    assert json.loads((run_dir / "record.json").read_text()) == finished
    assert list(run_dir.iterdir()) == [run_dir / "record.json"]


def test_demo_bad_value(capsys, tmp_path):
    code = main(["demo", "--model", "tiny-bert", "--epochs", "0", "--out", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert code == 2 and "train.epochs must be >= 1" in err and "Traceback" not in err


def test_missing_data_file_is_refused_before_a_run_folder_is_made(tmp_path, capsys):
    from datadiet.cli.main import main

    rc = main(["train", "--set", f"data.name={tmp_path / 'nope.csv'}", "model.name=tiny-bert", f"output_dir={tmp_path / 'runs'}"])
    assert rc == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.timeout(120)
def test_a_model_folder_never_runs_its_own_code(tmp_path, monkeypatch):
    """A folder whose config maps to its own modeling_*.py (auto_map) is refused with one clear line; its code
    never runs (it would write a marker file), with or without a terminal to answer transformers' prompt."""
    pytest.importorskip("transformers")
    from datadiet.errors import DataDietError
    from datadiet.models import load_model

    from datadiet.models.tiny import char_tokenizer

    folder, marker = tmp_path / "evil", tmp_path / "ran.txt"
    char_tokenizer().save_pretrained(str(folder))
    code = f"open({str(marker)!r}, 'w').write('ran')\nfrom transformers import BertConfig as XConfig\n"
    (folder / "configuration_x.py").write_text(code)
    (folder / "modeling_x.py").write_text(code + "from transformers import BertForSequenceClassification as XModel\n")
    (folder / "config.json").write_text(json.dumps({
        "model_type": "x-custom", "architectures": ["XModel"], "vocab_size": 10, "hidden_size": 8,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 8,
        "auto_map": {"AutoConfig": "configuration_x.XConfig",
                     "AutoModelForSequenceClassification": "modeling_x.XModel"}}))
    monkeypatch.setattr("builtins.input", lambda *a, **k: "y")  # a user who answers yes to any prompt
    with pytest.raises(DataDietError, match="ships its own Python code.*never runs code from a model folder"):
        load_model(str(folder), task="classification", num_labels=2)
    assert not marker.exists()


@pytest.mark.timeout(120)
def test_a_run_folder_in_use_is_refused_and_a_stale_claim_taken_over(capsys, tmp_path):
    """Two runs into one run folder: the second refuses (exit 2, naming the owner) instead of both writing it;
    a claim left by a process that is gone does not block a new run; a finished run releases its claim."""
    import subprocess
    import sys

    from datadiet.records import LOCK, FolderLock

    rd = tmp_path / "runs" / "conc"
    with FolderLock(rd, what="run folder", fix="x"):
        err = train_error(capsys, tmp_path, "run_name=conc", "data.max_train=40", "data.max_test=20")
        assert f"run folder {str(rd)!r} is in use by process" in err and "choose another run_name" in err
    assert not (rd / "record.json").exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import platform

    (rd / LOCK).write_text(f"{int(dead.stdout)} {platform.node()} 2026-01-01T00:00:00")  # its process has exited
    assert main(["train", "-q", "--config", TINY, "--out", str(tmp_path / "runs"), "--set", "run_name=conc",
                 "data.max_train=40", "data.max_test=20", "train.threads=1"]) == 0
    assert json.loads((rd / "record.json").read_text())["status"] == "finished" and not (rd / LOCK).exists()


@pytest.mark.timeout(60)
def test_a_results_folder_in_use_is_refused(tmp_path):
    """Two `datadiet bench` into one --out: the second refuses before running any cell."""
    from datadiet.bench.harness import run_suite
    from datadiet.bench.suite import load_suite
    from datadiet.errors import RunExistsError
    from datadiet.records import FolderLock

    calls = []
    with FolderLock(tmp_path / "out", what="results folder", fix="x"):
        with pytest.raises(RunExistsError, match="results folder .* is in use by process .*give another --out"):
            run_suite(load_suite("smoke"), tmp_path / "out", run_fn=lambda *a, **k: calls.append(a))
    assert calls == [] and not (tmp_path / "out" / "results.jsonl").exists()
