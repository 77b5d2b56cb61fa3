"""Fetch the WordNet 3.0 database from Debian's ``wordnet-base`` into the user cache.

The package needs root to install, so we download the ``.deb`` with ``apt-get download`` and
unpack it with ``dpkg -x`` (see :mod:`datadiet.data.debian`); an installed ``wordnet-base`` is used
as is. Run as ``python -m datadiet.data.fetch_wordnet``.
"""

from __future__ import annotations

from pathlib import Path

from .debian import fetch_deb, fetch_main, find_deb_dir

DEB = "wordnet-base"
REL = "usr/share/wordnet"
POS = ("noun", "verb", "adj", "adv")
FILES = tuple(f"data.{p}" for p in POS)


def wordnet_dir() -> Path | None:
    """The folder holding ``data.noun``, ``data.verb``, ``data.adj``, ``data.adv``, if present."""
    return find_deb_dir(DEB, REL, FILES)


def fetch() -> Path:
    return fetch_deb(DEB, REL, FILES, what="the 'wordnet_glosses' dataset")


def main() -> int:
    return fetch_main(fetch, label="wordnet", dataset="wordnet_glosses")


if __name__ == "__main__":
    raise SystemExit(main())
