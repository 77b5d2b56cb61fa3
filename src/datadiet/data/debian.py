"""Fetch a Debian package's files into the user cache without installing it.

Some built-in datasets ship as Debian packages whose installation would pull in far more than the
data (all of R for ``r-cran-janeaustenr``) or needs root. We ``apt-get download`` the ``.deb`` and
unpack it with ``dpkg -x`` into ``<cache>/debs/<package>/``. A system install of the same package
is used as is: its files lie under ``/`` at the same relative path as in the unpacked ``.deb``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from .assets import cache_dir

SYSTEM_ROOT = Path("/")  # where dpkg installs a package's files (a test points it elsewhere)


def deb_roots(package: str) -> list[Path]:
    """Where the package's files may lie: the system root (installed with dpkg), then our cache."""
    return [SYSTEM_ROOT, cache_dir("debs", package)]


def find_deb_dir(package: str, rel: str, files: tuple[str, ...]) -> Path | None:
    """The folder ``rel`` of ``package`` that holds every one of ``files``, or None."""
    for root in deb_roots(package):
        d = root / rel
        if all((d / f).is_file() for f in files):
            return d
    return None


def fetch_deb(package: str, rel: str, files: tuple[str, ...], *, what: str) -> Path:
    """Find ``rel`` (holding ``files``) of ``package``, downloading and unpacking it if needed."""
    found = find_deb_dir(package, rel, files)
    if found is not None:
        return found
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise RuntimeError(f"apt-get and dpkg are needed to fetch {what} (Debian/Ubuntu only)")
    dest = cache_dir("debs", package)
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run(["apt-get", "download", package], cwd=tmp, capture_output=True, text=True)
        if r.returncode != 0:
            # The package lists may be missing on a fresh machine.
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, text=True)
            r = subprocess.run(["apt-get", "download", package], cwd=tmp, capture_output=True, text=True)
        debs = list(Path(tmp).glob("*.deb"))
        if r.returncode != 0 or not debs:
            raise RuntimeError(f"`apt-get download {package}` failed: {r.stderr.strip()[-500:]}")
        subprocess.run(["dpkg", "-x", str(debs[0]), str(dest)], check=True)
    found = find_deb_dir(package, rel, files)
    if found is None:
        raise RuntimeError(f"unpacked {package} but found no {', '.join(files)} under {dest / rel}")
    return found


def fetch_main(fetch: Callable[[], Path], *, label: str, dataset: str) -> int:
    """A fetch module's ``main``: fetch, print where the data lies (or why not) on stderr, exit 0 or 1."""
    try:
        print(f"{label} data: {fetch()}", file=sys.stderr)
        return 0
    except Exception as e:  # noqa: BLE001 - a setup helper reports and carries on
        print(f"could not fetch the {dataset!r} dataset: {e}", file=sys.stderr)
        return 1
