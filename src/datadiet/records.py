"""Run folders and run records (one JSON file per run, written atomically)."""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

from .core.files import write_json_atomic  # noqa: F401  (the one atomic JSON writer; re-exported)
from .errors import RunExistsError

RECORD = "record.json"

log = logging.getLogger(__name__)


def read_cpuinfo(path: str | Path = "/proc/cpuinfo") -> str:
    """The text of ``/proc/cpuinfo`` (Linux), or "" where it cannot be read: the one reader of it."""
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def cpu_model(cpuinfo: str | None = None) -> str | None:
    """The CPU's model name (``/proc/cpuinfo``'s, ``cpuinfo`` gives that text instead), else
    ``platform.processor()``, or None.

    Noted with every figure because wall-clock depends on it: two sessions of one project may run on
    different CPUs, and a speed-up is only a speed-up between runs on the same one.
    """
    for line in (read_cpuinfo() if cpuinfo is None else cpuinfo).splitlines():
        if line.lower().startswith("model name") and ":" in line:
            name = " ".join(line.split(":", 1)[1].split())
            if name:
                return name
    return platform.processor() or None


def env_info() -> dict[str, Any]:
    """Versions, threads, CPU and device: noted with every figure."""
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
    }
    for pkg in ("transformers", "accelerate", "datasets", "numpy", "datadiet"):
        try:
            from importlib.metadata import version

            info[pkg] = version(pkg)
        except Exception:  # noqa: BLE001 - not installed
            info[pkg] = None
    return info


def read_record(run_dir: str | Path) -> dict[str, Any] | None:
    p = Path(run_dir) / RECORD
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:
        return None


LOCK = ".datadiet.lock"


class FolderLock:
    """An exclusive claim on a folder (a run folder, a benchmark results folder) for one process.

    Taken with an exclusive create of ``LOCK`` holding the owner's pid and host, so two processes
    started on the same folder cannot both pass it; the second gets a :class:`RunExistsError` naming
    the owner. A lock left by a process that is gone (same host, pid not alive) is taken over.
    Released (the file removed) on exit.
    """

    def __init__(self, folder: str | Path, *, what: str, fix: str) -> None:
        self.folder, self.what, self.fix = Path(folder), what, fix
        self.path = self.folder / LOCK

    def __enter__(self) -> FolderLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        owner = f"{os.getpid()} {platform.node()} {time.strftime('%Y-%m-%dT%H:%M:%S%z')}"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                held = self._holder()
                if held is not None:
                    raise RunExistsError(
                        f"{self.what} {str(self.folder)!r} is in use by process {held} (another datadiet started on "
                        f"the same folder). Wait for it to finish, or {self.fix}.") from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(owner)
            return self
        raise RunExistsError(f"could not claim {self.what} {str(self.folder)!r}; {self.fix}")

    def _holder(self) -> str | None:
        """The live owner of the lock ("pid on host since ..."), or ``None`` if it is stale."""
        try:
            pid, host, since = self.path.read_text().split(" ", 2)
            pid_i = int(pid)
        except (OSError, ValueError):
            return "unknown (unreadable lock file)"
        if host == platform.node():
            try:
                os.kill(pid_i, 0)
            except ProcessLookupError:
                return None
            except PermissionError:
                pass
        return f"{pid_i} on {host} since {since}"

    def __exit__(self, *exc: Any) -> None:
        self.path.unlink(missing_ok=True)


BACKUP = "backup."  # prefix of the folders that keep earlier runs of a run folder


def _kept(name: str) -> bool:
    """Entries of a run folder that belong to no one run: the lock and the backups of earlier runs."""
    return name == LOCK or name.startswith(BACKUP) or (name.startswith("record.") and name.endswith(".json")
                                                       and name != RECORD)


def _free_stamp(d: Path) -> str:
    """A timestamp that names neither a backup folder nor a record backup yet (a suffix if need be)."""
    base = time.strftime("%Y%m%d-%H%M%S")
    for k in range(10_000):
        stamp = base if k == 0 else f"{base}-{k}"
        if not (d / f"{BACKUP}{stamp}").exists() and not (d / f"record.{stamp}.json").exists():
            return stamp
    raise RunExistsError(f"run folder {str(d)!r} holds too many backups of earlier runs; remove some")


def backup_run(d: Path) -> Path | None:
    """Move everything an earlier run left in ``d`` into ``d/backup.<timestamp>/`` (the lock and
    earlier backups stay put); the record is also copied beside the new one as
    ``record.<timestamp>.json``. The record moves last, so a crash midway leaves a folder that is
    backed up again on the next start: no file is ever lost. Returns the backup folder (None:
    nothing to keep)."""
    entries = sorted(p for p in d.iterdir() if not _kept(p.name))
    if not entries:
        return None
    stamp = _free_stamp(d)
    dest = d / f"{BACKUP}{stamp}"
    dest.mkdir()
    if (d / RECORD).is_file():
        shutil.copy2(d / RECORD, d / f"record.{stamp}.json")
    for p in sorted(entries, key=lambda p: p.name == RECORD):
        p.replace(dest / p.name)
    return dest


def prepare_run_dir(run_dir: str | Path, *, overwrite: bool) -> Path:
    """Create the run folder; refuse one that holds a finished run unless ``overwrite``.

    Nothing an earlier run wrote is lost: a finished run (with ``overwrite``), or what a failed or
    crashed run left, is moved whole into ``backup.<timestamp>/`` inside the folder (record,
    selection, scores and any other file), and the old record is also kept beside the new one as
    ``record.<timestamp>.json``. Call it holding the folder's :class:`FolderLock`.
    """
    d = Path(run_dir)
    prev = read_record(d)
    if prev is not None and prev.get("status") == "finished" and not overwrite:
        raise RunExistsError(
            f"run folder {str(d)!r} already holds a finished run (accuracy/perplexity in {d / RECORD}). "
            "Choose another run_name/output_dir, or pass --overwrite (the old run is kept as a backup)."
        )
    d.mkdir(parents=True, exist_ok=True)
    kept = backup_run(d)
    if kept is not None:
        log.info("run folder %s: the earlier run's files are kept in %s", d, kept)
    return d


class RunRecord:
    """The JSON record of one run; ``save()`` after every change so a crash keeps what was done."""

    def __init__(self, run_dir: Path, data: dict[str, Any]) -> None:
        self.run_dir = Path(run_dir)
        self.data = {"status": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **data}

    def update(self, **kv: Any) -> None:
        self.data.update(kv)
        self.save()

    def save(self) -> None:
        write_json_atomic(self.run_dir / RECORD, self.data)

    def finish(self, **kv: Any) -> dict[str, Any]:
        self.data.update(kv)
        self.data["status"] = "finished"
        self.data["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.save()
        return self.data

    def fail(self, error: BaseException) -> None:
        self.data["status"] = "failed"
        self.data["error"] = f"{type(error).__name__}: {error}"
        self.save()
