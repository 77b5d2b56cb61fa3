"""Fetch Jane Austen's novels from Debian's ``r-cran-janeaustenr`` into the user cache.

Installing that package would pull all of R, so we download the ``.deb`` with ``apt-get download``
and unpack it with ``dpkg -x``. Run as ``python -m datadiet.data.fetch_austen``.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .assets import cache_dir

log = logging.getLogger(__name__)
DEB = "r-cran-janeaustenr"
REL = "usr/lib/R/site-library/janeaustenr/data"


def austen_data_dir() -> Path | None:
    """Where the R lazy-load database lies, if present (system install or our cache)."""
    for root in (Path("/"), cache_dir("debs", DEB)):
        d = root / REL
        if (d / "Rdata.rdb").exists() and (d / "Rdata.rdx").exists():
            return d
    return None


def fetch() -> Path:
    found = austen_data_dir()
    if found is not None:
        return found
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise RuntimeError("apt-get and dpkg are needed to fetch the 'austen' dataset (Debian/Ubuntu only)")
    dest = cache_dir("debs", DEB)
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run(["apt-get", "download", DEB], cwd=tmp, capture_output=True, text=True)
        if r.returncode != 0:
            # The package lists may be missing on a fresh machine.
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, text=True)
            r = subprocess.run(["apt-get", "download", DEB], cwd=tmp, capture_output=True, text=True)
        debs = list(Path(tmp).glob("*.deb"))
        if r.returncode != 0 or not debs:
            raise RuntimeError(f"`apt-get download {DEB}` failed: {r.stderr.strip()[-500:]}")
        subprocess.run(["dpkg", "-x", str(debs[0]), str(dest)], check=True)
    found = austen_data_dir()
    if found is None:
        raise RuntimeError(f"unpacked {DEB} but found no R data under {dest / REL}")
    return found


def main() -> int:
    try:
        print(f"austen data: {fetch()}", file=sys.stderr)
        return 0
    except Exception as e:  # noqa: BLE001 - a setup helper reports and carries on
        print(f"could not fetch the 'austen' dataset: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
