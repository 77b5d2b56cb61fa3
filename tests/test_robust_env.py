"""Bad inputs from the environment (issue 18, items 9 and 11): a pickled model folder, foreign IGF
learner files, ``--out`` at a folder or under a file, ``DATADIET_CACHE`` at a file, and hub names
without a network. Each ends in one ``error:`` line and exit status 2, fast, never a traceback.

Nothing here touches the network: the hub check is monkeypatched (and ``HF_HUB_OFFLINE=1`` from
conftest keeps the hub libraries offline whatever the check says).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch

from conftest import cli_error
from datadiet.errors import DataDietError

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")
SMALL = ["data.max_train=24", "data.max_test=8", "train.bf16=false"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATADIET_CACHE", str(tmp_path / "cache"))


# ------------------------------------------------------------------ a model folder holding a pickle
class _Evil:
    """Unpickling this runs a shell command (it must never happen)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _pickled_model_folder(tmp_path: Path) -> tuple[Path, Path]:
    from datadiet.models.tiny import tiny_model

    folder, marker = tmp_path / "pickled-model", tmp_path / "PWNED"
    model, tok = tiny_model("tiny-bert")
    model.config.save_pretrained(folder)
    tok.save_pretrained(folder)
    torch.save({**model.state_dict(), "x": _Evil(marker)}, folder / "pytorch_model.bin")
    return folder, marker


def test_a_model_folder_whose_weights_hold_a_pickle_is_refused_with_one_line(tmp_path, capsys):
    folder, marker = _pickled_model_folder(tmp_path)
    line = cli_error(capsys, ["train", "-q", "-c", TINY, "--out", str(tmp_path / "runs"),
                              "--set", f"model.name={folder}", *SMALL])
    assert str(folder) in line and "pickle" in line and "safetensors" in line, line
    assert "posix.system" in line  # what the pickle wanted to run
    assert not marker.exists()


def test_a_model_folder_with_an_unreadable_weights_file_is_refused(tmp_path):
    from datadiet.models.registry import load_model
    from datadiet.models.tiny import tiny_model

    folder = tmp_path / "broken-model"
    model, tok = tiny_model("tiny-bert")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"xx")
    with pytest.raises(DataDietError, match="weights file .* could not be read"):
        load_model(str(folder), task="classification", num_labels=2)


# ------------------------------------------------------------------------- foreign IGF learner files
def _learner_blob():
    from datadiet.methods.igf.learner import FORMAT, LearnerArch, SecondaryLearner

    q = SecondaryLearner(LearnerArch(vocab_size=75, dim=8, channels=16, hidden=8))
    return {"format": FORMAT, "arch": {"vocab_size": 75, "dim": 8, "channels": 16, "kernel": 3, "hidden": 8},
            "state_dict": {k: v.clone() for k, v in q.state_dict().items()}, "meta": {}}


def _foreign_blobs():
    b = _learner_blob
    cases = {}
    x = b(); del x["arch"]; cases["no arch"] = x  # noqa: E702
    x = b(); x["arch"]["layers"] = 3; cases["unknown arch key"] = x  # noqa: E702
    x = b(); del x["arch"]["dim"]; cases["missing arch key"] = x  # noqa: E702
    x = b(); x["arch"]["dim"] = "eight"; cases["arch value not a number"] = x  # noqa: E702
    x = b(); x["arch"]["dim"] = -1; cases["arch value negative"] = x  # noqa: E702
    x = b(); x["arch"] = [75, 8]; cases["arch not a mapping"] = x  # noqa: E702
    x = b(); x["state_dict"] = [1, 2]; cases["state_dict not a mapping"] = x  # noqa: E702
    x = b(); del x["state_dict"]; cases["no state_dict"] = x  # noqa: E702
    x = b(); x["state_dict"]["embed.weight"] = torch.zeros(75, 9); cases["wrong tensor shape"] = x  # noqa: E702
    x = b(); x["state_dict"].pop("conv.bias"); cases["missing tensor"] = x  # noqa: E702
    x = b(); x["state_dict"]["extra.weight"] = torch.zeros(2); cases["unexpected tensor"] = x  # noqa: E702
    x = b(); x["state_dict"]["conv.bias"] = "zeros"; cases["not a tensor"] = x  # noqa: E702
    x = b(); x["meta"] = [1]; cases["meta not a mapping"] = x  # noqa: E702
    return cases


@pytest.mark.parametrize("case", sorted(_foreign_blobs()))
def test_foreign_learner_files_are_refused_with_a_message(tmp_path, case):
    from datadiet.methods.igf.learner import load_learner

    path = tmp_path / "q.pt"
    torch.save(_foreign_blobs()[case], path)
    with pytest.raises(DataDietError, match=r"is not a valid IGF learner file .*write one with `datadiet igf`"):
        load_learner(path)


def test_a_foreign_learner_file_fails_a_run_with_one_line(tmp_path, capsys):
    blob = _learner_blob()
    blob["state_dict"]["embed.weight"] = torch.zeros(75, 9)
    torch.save(blob, tmp_path / "q.pt")
    csv = tmp_path / "notes.csv"
    csv.write_text("text,doc\n" + "\n".join(f"the quick brown fox {i} jumps over the dog,doc{i}" for i in range(12)) + "\n")
    line = cli_error(capsys, ["train", "-q", "--out", str(tmp_path / "runs"), "--set", f"data.name={csv}",
                              "model.name=tiny-gpt2", "data.context_length=12", "data.max_test=3", "train.threads=1",
                              "train.max_steps=2", "method.name=igf", f"method.params.learner={tmp_path / 'q.pt'}"])
    assert "embed.weight" in line and "not a valid IGF learner file" in line, line


def test_a_damaged_learner_in_the_cache_is_ignored_not_fatal(tmp_path):
    """The cache path catches DataDietError: a shape-damaged entry must raise exactly that."""
    from datadiet.methods.igf.learner import load_learner

    blob = _learner_blob()
    blob["state_dict"]["head.0.weight"] = torch.zeros(1)
    torch.save(blob, tmp_path / "q.pt")
    with pytest.raises(DataDietError):
        load_learner(tmp_path / "q.pt")


# ------------------------------------------------------------------- --out at a folder, or under a file
@pytest.fixture
def scores(tmp_path):
    from datadiet.cli.main import main

    p = tmp_path / "s.json"
    assert main(["score", "-q", "-c", TINY, "--set", *SMALL, "--seeds", "1", "--score-steps", "0", "--out", str(p)]) == 0
    return p


def test_out_at_a_folder_where_a_file_is_expected(tmp_path, capsys, scores):
    d = tmp_path / "adir"
    d.mkdir()
    cases = [
        ["score", "-q", "-c", TINY, "--set", *SMALL, "--seeds", "1", "--score-steps", "0", "--out", str(d)],
        ["select", "-q", "--scores", str(scores), "-p", "keep=0.5", "--out", str(d)],
        ["select", "-q", "-c", TINY, "--set", *SMALL, "-m", "random_subset", "-p", "keep=0.5", "--out", str(d)],
        ["report", "--scores", str(scores), "--out", str(d)],
        ["igf", "-q", "--set", "model.name=tiny-gpt2", "--out", str(d)],
    ]
    for argv in cases:
        t0 = time.perf_counter()
        line = cli_error(capsys, argv)
        assert f"--out {str(d)!r} is a folder" in line and "file name" in line, (argv, line)
        assert time.perf_counter() - t0 < 10, argv  # refused before any work
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp") or ".tmp" in p.name) == []
    assert list(d.iterdir()) == []


def test_out_under_a_file(tmp_path, capsys, scores):
    f = tmp_path / "afile"
    f.write_text("x")
    cases = [
        ["select", "-q", "--scores", str(scores), "-p", "keep=0.5", "--out", str(f / "x.json")],
        ["score", "-q", "-c", TINY, "--set", *SMALL, "--out", str(f / "sub" / "s.json")],
        ["train", "-q", "-c", TINY, "--set", *SMALL, "--out", str(f)],
        ["train", "-q", "-c", TINY, "--set", *SMALL, f"output_dir={f}"],
        ["demo", "-q", "--model", "tiny-bert", "--methods", "full", "--out", str(f)],
        ["bench", "--suite", "smoke", "--dry-run", "--out", str(f)],
    ]
    for argv in cases:
        line = cli_error(capsys, argv)
        assert f"{str(f)!r} is a file, not a folder" in line, (argv, line)
    assert f.read_text() == "x"


def test_write_json_atomic_refuses_a_folder_and_never_leaves_a_tmp_file(tmp_path, monkeypatch):
    from datadiet.core.files import write_json_atomic

    d = tmp_path / "adir"
    d.mkdir()
    with pytest.raises(DataDietError, match="is a folder"):
        write_json_atomic(d, {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir"]
    # a failure between writing the temporary file and the rename: the temporary file goes
    target = tmp_path / "x.json"

    def boom(self, other):
        raise OSError("disk gone")

    monkeypatch.setattr(Path, "replace", boom)
    with pytest.raises(OSError, match="disk gone"):
        write_json_atomic(target, {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir"]
    monkeypatch.undo()
    target.write_text("{}")
    with pytest.raises(DataDietError, match="is a file, not a folder"):
        write_json_atomic(target / "y.json", {"a": 1})


# ----------------------------------------------------------------------------- DATADIET_CACHE at a file
def test_datadiet_cache_at_a_file(tmp_path, monkeypatch, capsys):
    from datadiet.core.files import cache_dir

    f = tmp_path / "cachefile"
    f.write_text("x")
    for value in (f, f / "sub"):
        monkeypatch.setenv("DATADIET_CACHE", str(value))
        with pytest.raises(DataDietError, match=r"DATADIET_CACHE=.* is a file, not a folder.*unset it"):
            cache_dir("scores")
    monkeypatch.setenv("DATADIET_CACHE", str(f))
    line = cli_error(capsys, ["score", "-q", "-c", TINY, "--set", *SMALL, "--seeds", "1", "--score-steps", "0",
                              "--out", str(tmp_path / "s.json")])
    assert "DATADIET_CACHE" in line and str(f) in line, line
    monkeypatch.delenv("DATADIET_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(f))
    with pytest.raises(DataDietError, match="XDG_CACHE_HOME"):
        cache_dir("scores")


# ------------------------------------------------------------------------------ hub names, no network
@pytest.fixture
def no_network(monkeypatch):
    """HF_HUB_OFFLINE unset (as for a user), and the hub check answers 'unreachable' without a socket."""
    from datadiet import _hub

    for var in _hub.OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    calls = []

    def unreachable(timeout=_hub.TIMEOUT_S):
        calls.append(timeout)
        return False

    monkeypatch.setattr(_hub, "hub_reachable", unreachable)
    return calls


def test_an_unreachable_hub_fails_a_model_name_fast(tmp_path, capsys, no_network):
    t0 = time.perf_counter()
    line = cli_error(capsys, ["train", "-q", "-c", TINY, "--out", str(tmp_path / "runs"),
                              "--set", "model.name=nosuchorg/nosuchmodel", *SMALL])
    assert time.perf_counter() - t0 < 15
    assert "nosuchorg/nosuchmodel" in line and "could not be reached" in line and "local" in line, line
    assert no_network  # the check ran


def test_an_unreachable_hub_fails_a_dataset_name_fast(tmp_path, capsys, no_network):
    pytest.importorskip("datasets")
    t0 = time.perf_counter()
    line = cli_error(capsys, ["train", "-q", "-c", TINY, "--out", str(tmp_path / "runs"),
                              "--set", "data.name=nosuchorg/nosuchdata", *SMALL])
    assert time.perf_counter() - t0 < 15
    assert "nosuchorg/nosuchdata" in line and "could not be reached" in line, line
    assert no_network


def test_the_offline_switches_are_restored_after_use(no_network):
    import huggingface_hub.constants as hc

    from datadiet import _hub

    before = hc.HF_HUB_OFFLINE
    hc.HF_HUB_OFFLINE = False
    try:
        with _hub.offline_if_unreachable() as note:
            assert note and hc.HF_HUB_OFFLINE is True
        assert hc.HF_HUB_OFFLINE is False
        with pytest.raises(RuntimeError):
            with _hub.offline_if_unreachable():
                raise RuntimeError
        assert hc.HF_HUB_OFFLINE is False
    finally:
        hc.HF_HUB_OFFLINE = before


def test_hf_hub_offline_set_means_no_check(monkeypatch):
    from datadiet import _hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(_hub, "hub_reachable", lambda timeout=0: pytest.fail("checked although offline"))
    with _hub.offline_if_unreachable() as note:
        assert note is None


def test_the_reachability_check_is_quick_and_cached(monkeypatch):
    """No real socket: the connection attempt is replaced by one that never answers."""
    from datadiet import _hub

    monkeypatch.setattr(_hub, "_cache", {})
    attempts = []

    def hang(address, timeout):
        attempts.append(address)
        time.sleep(3)
        raise TimeoutError("timed out")

    monkeypatch.setattr(_hub.socket, "create_connection", hang)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example.invalid:8443")
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    t0 = time.perf_counter()
    assert _hub.hub_reachable(timeout=0.2) is False
    assert _hub.hub_reachable(timeout=0.2) is False
    assert time.perf_counter() - t0 < 2
    assert attempts == [("hub.example.invalid", 8443)]  # once per process

    monkeypatch.setattr(_hub, "_cache", {})
    monkeypatch.setattr(_hub.socket, "create_connection", lambda address, timeout: _Closable())
    assert _hub.hub_reachable(timeout=0.2) is True


class _Closable:
    def close(self):
        pass


def test_an_unreachable_hub_fails_an_encoder_name_fast(no_network):
    """Every hub model load goes through one wrapper: the encoders (embed_texts, ingenious) too."""
    from datadiet.methods.ingenious.embeddings import load_encoder
    from datadiet.models.embed import embed_texts

    t0 = time.perf_counter()
    with pytest.raises(DataDietError, match="nosuchorg/nosuchencoder.*could not be reached"):
        embed_texts(["a text"], model="nosuchorg/nosuchencoder")
    with pytest.raises(DataDietError, match="nosuchorg/nosuchencoder.*could not be reached"):
        load_encoder("nosuchorg/nosuchencoder")
    assert time.perf_counter() - t0 < 10 and no_network


@pytest.mark.parametrize("exc", [IsADirectoryError(21, "Is a directory", "/x/out"),
                                 NotADirectoryError(20, "Not a directory", "/x/file/sub"),
                                 FileExistsError(17, "File exists", "/x/file"),
                                 PermissionError(13, "Permission denied", "/root/out")])
def test_a_path_error_no_check_caught_is_still_one_line(capsys, monkeypatch, exc):
    import datadiet.records

    def boom():
        raise exc

    monkeypatch.setattr(datadiet.records, "env_info", boom)
    line = cli_error(capsys, ["env"])
    assert exc.filename in line and "check the path" in line, line


def test_cpu_model_reads_cpuinfo_and_falls_back(monkeypatch, tmp_path):
    """The CPU goes into every record (wall-clock depends on it): the model name with its spacing
    normalised, else ``platform.processor()``, else None; a missing ``/proc/cpuinfo`` is no error."""
    import datadiet.records as records

    assert records.read_cpuinfo(tmp_path / "no-cpuinfo") == ""  # unreadable: no error, no text
    info = "processor\t: 0\nmodel name\t:  Intel(R)   Xeon(R) Processor\n"
    assert records.cpu_model(info) == "Intel(R) Xeon(R) Processor"
    monkeypatch.setattr(records, "read_cpuinfo", lambda: info)
    assert records.cpu_model() == "Intel(R) Xeon(R) Processor"
    assert records.env_info()["cpu"] == "Intel(R) Xeon(R) Processor"
    monkeypatch.setattr(records.platform, "processor", lambda: "arm")
    assert records.cpu_model("processor\t: 0\nmodel name\t:   \n") == "arm"  # an empty model name is no name
    assert records.cpu_model("") == "arm"
    monkeypatch.setattr(records.platform, "processor", lambda: "")
    assert records.cpu_model("") is None
