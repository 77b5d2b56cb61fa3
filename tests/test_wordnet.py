"""The built-in ``wordnet_glosses`` dataset: WordNet 3.0 glosses labelled by lexicographer file.

Offline tests plant a tiny folder in WordNet's ``data.*`` format; the slow test reads the real
Debian ``wordnet-base`` package when it is on this machine (``python -m datadiet.data.fetch_wordnet``).
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest

from datadiet.cli.main import main
from datadiet.data import BUILTIN, load_dataset
from datadiet.data import debian, fetch_wordnet
from datadiet.data.builtin import WORDNET_LEXNAMES, read_wordnet_glosses
from datadiet.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
HEADER = "".join(f"  {i} license text line {i}  \n" for i in range(1, 4)) + "  4   \n"
PLANTED = {
    "noun": [
        "00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived or known  \n",
        "01323599 05 n 01 dog 0 001 @ 02085998 n 0000 | a domesticated canine; \"the dog barked\"  \n",
        "02084071 05 n 01 cat 0 000 |   a small feline  \n",
    ],
    "verb": ["01835496 38 v 01 walk 0 000 01 + 02 00 | use one's feet to advance  \n"],
    "adj": [
        "00001740 00 a 01 able 0 000 | having the necessary means  \n",
        "00002098 44 s 01 broken 0 000 | physically damaged  \n",
    ],
    "adv": ["00001740 02 r 01 a_cappella 0 000 | without musical accompaniment  \n"],
}
EXPECTED = [
    ("that which is perceived or known", "noun.Tops"),
    ("a domesticated canine; \"the dog barked\"", "noun.animal"),
    ("a small feline", "noun.animal"),
    ("use one's feet to advance", "verb.motion"),
    ("having the necessary means", "adj.all"),
    ("physically damaged", "adj.ppl"),
    ("without musical accompaniment", "adv.all"),
]


def plant(folder: Path, lines: dict[str, list[str]] = PLANTED) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for pos, rows in lines.items():
        (folder / f"data.{pos}").write_text(HEADER + "".join(rows), encoding="utf-8")
    return folder


@pytest.fixture
def no_system_wordnet(tmp_path, monkeypatch):
    """No system install and an empty cache, whatever this machine has."""
    monkeypatch.setattr(debian, "SYSTEM_ROOT", tmp_path / "system")
    monkeypatch.setenv("DATADIET_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_planted_folder_parses_into_glosses_and_lexnames(tmp_path):
    df = read_wordnet_glosses(plant(tmp_path / "wn"))
    assert list(zip(df["text"], df["label"])) == EXPECTED


def test_lexname_table_has_45_files_in_number_order():
    assert len(WORDNET_LEXNAMES) == len(set(WORDNET_LEXNAMES)) == 45
    assert WORDNET_LEXNAMES[0] == "adj.all" and WORDNET_LEXNAMES[3] == "noun.Tops"
    assert WORDNET_LEXNAMES[43] == "verb.weather" and WORDNET_LEXNAMES[44] == "adj.ppl"


def test_registered_as_a_classification_dataset():
    spec = BUILTIN["wordnet_glosses"]
    assert spec.task == "classification" and "wordnet-base" in spec.source
    assert spec.test_size == 10000  # leaves over 100,000 training glosses of the 117,024 distinct ones


def test_loads_from_the_cache_through_load_dataset(no_system_wordnet):
    plant(no_system_wordnet / "debs" / "wordnet-base" / "usr" / "share" / "wordnet")
    assert fetch_wordnet.wordnet_dir() == no_system_wordnet / "debs/wordnet-base/usr/share/wordnet"
    d = load_dataset("wordnet_glosses", test_size=0.4)
    assert sorted(d.label_names) == sorted({label for _, label in EXPECTED})
    assert len(d.train) + len(d.test) == len(EXPECTED)
    got = {(t, d.label_names[y]) for split in (d.train, d.test) for t, y in zip(split.texts, split.labels)}
    assert got == set(EXPECTED)


def test_a_system_install_is_found_first(tmp_path, no_system_wordnet):
    system = plant(tmp_path / "system" / "usr" / "share" / "wordnet")
    plant(no_system_wordnet / "debs" / "wordnet-base" / "usr" / "share" / "wordnet")
    assert fetch_wordnet.wordnet_dir() == system


def test_missing_data_names_the_fix(no_system_wordnet, capsys, tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"'wordnet_glosses' is not on this machine.*python -m datadiet\.data\.fetch_wordnet"):
        load_dataset("wordnet_glosses")
    monkeypatch.chdir(tmp_path)
    code = main(["train", "-q", "--out", str(tmp_path / "runs"), "--config", str(ROOT / "configs" / "tiny.yaml"),
                 "--set", "data.name=wordnet_glosses"])
    err = capsys.readouterr().err
    assert code == 2 and "fetch_wordnet" in err and "make setup" in err and "Traceback" not in err


def test_a_malformed_line_names_the_file_and_line(tmp_path):
    folder = plant(tmp_path / "wn", {**PLANTED, "verb": ["01835496 45 v 01 walk 0 000 | an unknown lexname  \n"]})
    with pytest.raises(DataError, match=r"data\.verb:5 is not a WordNet data line"):
        read_wordnet_glosses(folder)
    plant(folder, {**PLANTED, "adv": ["00001740 02 r 01 a_cappella 0 000 no gloss bar\n"]})
    with pytest.raises(DataError, match=r"data\.adv:5"):
        read_wordnet_glosses(folder)


def test_fetch_without_apt_says_so(no_system_wordnet, monkeypatch, capsys):
    monkeypatch.setattr(debian.shutil, "which", lambda name: None)
    assert fetch_wordnet.main() == 1
    assert "apt-get and dpkg are needed to fetch the 'wordnet_glosses' dataset" in capsys.readouterr().err


@pytest.mark.slow
def test_real_wordnet_base_has_117659_glosses_in_45_lexicographer_files():
    folder = fetch_wordnet.wordnet_dir()
    if folder is None:
        pytest.skip("wordnet-base is not on this machine (python -m datadiet.data.fetch_wordnet)")
    df = read_wordnet_glosses(folder)
    assert len(df) == 117659 and df["label"].nunique() == 45
    assert df["label"].value_counts()["noun.person"] == 11087
    man = folder.parent / "man" / "man5" / "lexnames.5WN.gz"  # the table WORDNET_LEXNAMES copies
    if man.is_file():
        rows = re.findall(r"^(\d\d)\t(\S+)", gzip.decompress(man.read_bytes()).decode(), flags=re.M)
        assert [name for _, name in rows] == list(WORDNET_LEXNAMES)
        assert [int(n) for n, _ in rows] == list(range(45))
    d = load_dataset("wordnet_glosses")
    assert len(d.test) == 10000 and len(d.train) >= 100000 and len(d.label_names) == 45
