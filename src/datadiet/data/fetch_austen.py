"""Fetch Jane Austen's novels from Debian's ``r-cran-janeaustenr`` into the user cache.

Installing that package would pull all of R, so we download the ``.deb`` with ``apt-get download``
and unpack it with ``dpkg -x`` (see :mod:`datadiet.data.debian`). Run as
``python -m datadiet.data.fetch_austen``.
"""

from __future__ import annotations

from pathlib import Path

from .debian import fetch_deb, fetch_main, find_deb_dir

DEB = "r-cran-janeaustenr"
REL = "usr/lib/R/site-library/janeaustenr/data"
FILES = ("Rdata.rdb", "Rdata.rdx")


def austen_data_dir() -> Path | None:
    """Where the R lazy-load database lies, if present (system install or our cache)."""
    return find_deb_dir(DEB, REL, FILES)


def fetch() -> Path:
    return fetch_deb(DEB, REL, FILES, what="the 'austen' dataset")


def main() -> int:
    return fetch_main(fetch, label="austen", dataset="austen")


if __name__ == "__main__":
    raise SystemExit(main())
