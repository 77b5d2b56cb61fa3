"""Run configs and suite files: every value is checked by its declared type and range, and a bad
file (a list, binary data, a folder) is one clear line and exit status 2, never a traceback.

Issue 18, items 5, 9 and 10. Nothing here trains: a bad value is refused before any work starts.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from datadiet.bench.suite import builtin_suites, load_suite, parse_suite
from datadiet.cli.main import main
from datadiet.config import RunConfig, load_config
from datadiet.errors import ConfigError, DataDietError

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")
FAST = ["model.name=tiny-bert", "data.max_train=200", "data.max_test=100", "train.threads=1"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if a run starts: a bad value must be refused before any training."""
    import datadiet.runner

    def boom(*a, **kw):
        raise AssertionError("training started despite a bad config value")

    monkeypatch.setattr(datadiet.runner, "run", boom)


def cli_error(capsys, argv: list[str]) -> str:
    """Run the CLI; assert exit 2 and exactly one clean ``error:`` line on stderr; return it."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def train_error(capsys, *overrides: str, config: str | None = TINY) -> str:
    argv = ["train", "-q", "--out", "runs"] + (["--config", config] if config else [])
    return cli_error(capsys, argv + ["--set", *FAST, *overrides])


def refused(*overrides: str, match: str) -> str:
    with pytest.raises(ConfigError) as e:
        load_config(None, list(overrides))
    assert match in str(e.value), str(e.value)
    return str(e.value)


# ------------------------------------------------------------------------------------ item 5
def test_quoted_false_for_overwrite_is_refused_not_taken_as_true(capsys, no_training):
    err = train_error(capsys, 'overwrite="false"')
    assert "overwrite must be true or false, got the string 'false'" in err and "without quotes" in err


def test_quoted_false_in_a_yaml_file_is_refused(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text('overwrite: "false"\n')
    with pytest.raises(ConfigError, match="overwrite must be true or false, got the string 'false'"):
        load_config(p)
    p.write_text('train: {bf16: "True"}\n')
    with pytest.raises(ConfigError, match="train.bf16 must be true or false, got the string 'True'; write true"):
        load_config(p)


def test_bool_field_refuses_maybe(capsys, no_training):
    err = train_error(capsys, "train.bf16=maybe")
    assert "train.bf16 must be true or false, got 'maybe'" in err


@pytest.mark.parametrize("value", ["1.5", "1.0", "0", "-1", "0.0", "abc", "true", "[0.2]", "2.5e3"])
def test_test_size_must_be_a_fraction_or_a_count(value):
    msg = refused(f"data.test_size={value}", match="data.test_size must be a fraction between 0 and 1")
    assert "whole number" in msg


@pytest.mark.parametrize("value, expected", [("0.2", 0.2), ("200", 200), ("1", 1), ("null", None)])
def test_test_size_accepts_fractions_and_counts(value, expected):
    got = load_config(None, [f"data.test_size={value}"]).data.test_size
    assert got == expected and type(got) is type(expected)


def test_test_size_1_5_refused_before_training(capsys, no_training):
    err = train_error(capsys, "data.test_size=1.5")
    assert "data.test_size must be a fraction between 0 and 1" in err and "got 1.5" in err


def test_test_size_abc_is_a_message_not_a_traceback(capsys, no_training):
    assert "got 'abc'" in train_error(capsys, "data.test_size=abc")


def test_negative_split_seed(capsys, no_training):
    assert "data.split_seed must be >= 0, got -1" in train_error(capsys, "data.split_seed=-1")


def test_seeds_have_an_upper_bound():
    refused("train.seed=99999999999999", match="train.seed must be <= 4294967295")


# A string field given a bare number (or yes/no) is refused with the fix, quote it, in a YAML file
# and on the command line alike: YAML has already read it as a number and may have changed it
# (010 reads as 8, 1.50 as 1.5), so taking it back as text could silently give another folder name.
@pytest.mark.parametrize("item, key, shown", [
    ("run_name=5", "run_name", "5"),
    ("run_name=010", "run_name", "8"),
    ("output_dir=123", "output_dir", "123"),
    ("data.text_column=yes", "data.text_column", "True"),
    ("data.label_column=0", "data.label_column", "0"),
    ("train.device=0", "train.device", "0"),
])
def test_a_bare_number_for_a_string_field_is_refused_with_quote_it(item, key, shown):
    msg = refused(item, match=f"{key} must be")
    assert f"got the number {shown}" in msg or f"got true/false {shown}" in msg
    assert "quote it" in msg and f"\"{key}='" in msg


@pytest.mark.parametrize("item, key, expected", [
    ("run_name='5'", "run_name", "5"),
    ("run_name='010'", "run_name", "010"),
    ("output_dir='123'", "output_dir", "123"),
    ("data.text_column='yes'", "data.text_column", "yes"),
    ("train.device=cpu", "train.device", "cpu"),
])
def test_quoted_numbers_are_strings(item, key, expected):
    cfg = load_config(None, [item])
    sec, _, leaf = key.rpartition(".")
    got = getattr(getattr(cfg, sec) if sec else cfg, leaf)
    assert got == expected and isinstance(got, str)


def test_numeric_run_name_is_refused_before_training(capsys, no_training):
    """``run_name=5`` used to be a TypeError after loading the data; now one line, nothing trained."""
    err = train_error(capsys, "run_name=5")
    assert "run_name must be a folder name (a string), got the number 5" in err
    assert "\"run_name='5'\" on the command line" in err


def test_quoted_numeric_run_name_reaches_training(capsys, monkeypatch):
    import datadiet.runner

    seen = {}

    def fake_run(cfg, **kw):
        seen["cfg"] = cfg
        raise DataDietError("stop here")

    monkeypatch.setattr(datadiet.runner, "run", fake_run)
    assert "stop here" in train_error(capsys, "run_name='5'")
    assert seen["cfg"].run_name == "5"


@pytest.mark.parametrize("text, key", [
    ("run_name: 5\n", "run_name"),
    ("output_dir: 123\n", "output_dir"),
    ("data: {label_column: 0}\n", "data.label_column"),
    ("data: {text_column: yes}\n", "data.text_column"),
])
def test_a_number_for_a_string_in_a_yaml_file_is_refused_with_quote_it(tmp_path, text, key):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert msg.startswith(f"{key} must be") and "quote it" in msg, msg


@pytest.mark.parametrize("item, needle", [
    ("run_name=''", "run_name must be a folder name (a string), got an empty string"),
    ("output_dir=[a]", "output_dir must be"),
    ("train.epochs=2.5", "train.epochs must be an integer, got 2.5"),
    ("train.batch_size=0", "train.batch_size must be >= 1, got 0"),
    ("train.lr=.inf", "train.lr must be a finite number"),
    ("train.warmup=1.5", "train.warmup must be <= 1.0"),
    ("train.fused_adamw=1", "train.fused_adamw must be true or false, got 1"),
    ("train.threads=0", "train.threads must be >= 1"),
    ("train.eval_max_examples=0", "train.eval_max_examples must be >= 1"),
    ("train.eval_by=epochs", "train.eval_by must be one of 'steps', 'examples'"),
    ("train.device=cuda:7", None),  # a device name: whether it exists is checked when it is opened
    ("data.task=regression", "data.task must be one of 'classification', 'causal_lm'"),
    ("data.test_file=[x]", "data.test_file must be"),
    ("data.max_train=-5", "data.max_train must be >= 1"),
    ("data.label_noise=1", "data.label_noise must be < 1.0"),
    ("method.params=5", "method.params must be a mapping"),
    ("model.max_length=1", "model.max_length must be >= 2"),
])
def test_each_field_is_checked_by_its_range(item, needle):
    if needle is None:
        load_config(None, [item])
    else:
        refused(item, match=needle)


def _leaf_fields(cls, prefix=""):
    for f in dataclasses.fields(cls):
        sub = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(sub):
            yield from _leaf_fields(type(sub), f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, f


LEAVES = dict(_leaf_fields(RunConfig))


@pytest.mark.parametrize("key", sorted(LEAVES))
def test_every_field_declares_a_check_and_refuses_a_wrong_type(key):
    assert callable(LEAVES[key].metadata.get("check")), f"{key} declares no check"
    d: dict = {}
    *secs, leaf = key.split(".")
    node = d
    for s in secs:
        node = node.setdefault(s, {})
    node[leaf] = [1, 2]  # a list is the wrong type for every field
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict(d)
    assert str(e.value).startswith(key + " must be"), str(e.value)


def test_defaults_and_round_trip_validate():
    cfg = RunConfig.from_dict({})
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


def test_shipped_configs_and_suites_still_load():
    configs = sorted((ROOT / "configs").glob("*.yaml"))
    assert configs
    for p in configs:
        load_config(p)
    suites = sorted((ROOT / "benchmarks" / "suites").rglob("*.yaml")) + sorted(builtin_suites().values())
    assert suites
    for p in suites:
        load_suite(str(p))


# ------------------------------------------------------------------------------------ item 9
@pytest.mark.parametrize("content, needle", [
    (b"- a\n- b\n", "must be a mapping of sections (data:, model:, train:, method:), but it holds a list"),
    (b"42\n", "but it holds a number"),
    (b"\xa0\xff\xfe\x00binary", "is not a text file"),
    (b"\x00\x01\x02abc", "is not a text file"),
    (b"a: [1\n", "is not valid YAML"),
])
def test_config_file_faults_are_one_line_naming_the_file(capsys, tmp_path, content, needle, no_training):
    p = tmp_path / "cfg.yaml"
    p.write_bytes(content)
    err = cli_error(capsys, ["train", "-q", "-c", str(p)])
    assert f"config file {str(p)!r}" in err and needle in err, err


def test_a_folder_given_as_config(capsys, tmp_path, no_training):
    d = tmp_path / "configs"
    d.mkdir()
    err = cli_error(capsys, ["train", "-q", "-c", str(d)])
    assert f"config file {str(d)!r} is a folder, not a YAML file" in err, err


# ----------------------------------------------------------------------------------- item 10
def _suite(tmp_path, text: str) -> str:
    p = tmp_path / "suite.yaml"
    p.write_text(text)
    return str(p)


BASE = "base: {model: {name: tiny-bert}}\n"


@pytest.mark.parametrize("text, needle", [
    ("- just\n- a list\n", "the suite file must be a mapping (name:, base:, datasets:, methods:, seeds:), "
                           "but it holds a list"),
    (BASE + "datasets: [rotten_tomatoes]\nmethods: full\n",
     "methods must be a list of method names, got the string 'full'; write methods: [full]"),
    (BASE + "datasets: rotten_tomatoes\nmethods: [full]\n",
     "datasets must be a list of dataset names, got the string 'rotten_tomatoes'; write datasets: [rotten_tomatoes]"),
    (BASE + "datasets: [rotten_tomatoes]\nmethods: {name: full}\n", "methods must be a list"),
    (BASE + "datasets: [rotten_tomatoes]\nmethods: [full]\nseeds: 0\n", "write seeds: [0]"),
    (BASE + "datasets: [rotten_tomatoes]\nmethods: [full]\nseeds: [true]\n", "seeds must be"),
    ("base: [1]\ndatasets: [rotten_tomatoes]\nmethods: [full]\n", "base must be a run config mapping"),
    (BASE + "datasets: [{name: rotten_tomatoes, config: 5}]\nmethods: [full]\n", "datasets[0].config must be a mapping"),
    (BASE + "datasets: [rotten_tomatoes]\nmethods: [{name: random_skip, params: [0.5]}]\n",
     "methods[0].params must be a mapping"),
    (BASE + "datasets: [rotten_tomatoes]\nmethods: [full]\ntrain: {epochs: 1}\n", "unknown key 'train'"),
])
def test_suite_faults_name_the_real_problem(tmp_path, text, needle):
    with pytest.raises(ConfigError) as e:
        load_suite(_suite(tmp_path, text))
    assert needle in str(e.value), str(e.value)


def test_suite_as_a_list_on_the_cli(capsys, tmp_path):
    path = _suite(tmp_path, "- just\n- a list\n")
    err = cli_error(capsys, ["bench", "--suite", path, "--out", str(tmp_path / "out")])
    assert "the suite file must be a mapping" in err and path in err and "unknown key" not in err


def test_methods_as_a_string_on_the_cli(capsys, tmp_path):
    path = _suite(tmp_path, BASE + "datasets: [rotten_tomatoes]\nmethods: full\n")
    err = cli_error(capsys, ["bench", "--suite", path, "--out", str(tmp_path / "out")])
    assert "write methods: [full]" in err and "repeated" not in err


@pytest.mark.parametrize("content, needle", [(b"\xa0\xff binary", "is not a text file"),
                                             (b"a: [1\n", "is not valid YAML")])
def test_suite_file_faults_are_one_line(capsys, tmp_path, content, needle):
    p = tmp_path / "suite.yaml"
    p.write_bytes(content)
    err = cli_error(capsys, ["bench", "--suite", str(p), "--out", str(tmp_path / "out")])
    assert f"suite file {str(p)!r}" in err and needle in err


def test_suite_folder(capsys, tmp_path):
    d = tmp_path / "suites.yaml"
    d.mkdir()
    err = cli_error(capsys, ["bench", "--suite", str(d), "--out", str(tmp_path / "out")])
    assert "is a folder, not a YAML file" in err


def test_parse_suite_refuses_a_non_mapping():
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse_suite(["just", "a list"])  # type: ignore[arg-type]
