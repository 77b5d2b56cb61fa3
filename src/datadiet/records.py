"""Run folders and run records (one JSON file per run, written atomically)."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from .core.files import write_json_atomic  # noqa: F401  (the one atomic JSON writer; re-exported)
from .errors import RunExistsError

RECORD = "record.json"


def env_info() -> dict[str, Any]:
    """Versions, threads and device: noted with every figure."""
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
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


def prepare_run_dir(run_dir: str | Path, *, overwrite: bool) -> Path:
    """Create the run folder; refuse one that holds a finished run unless ``overwrite``.

    With ``overwrite`` the earlier record is kept beside the new one as
    ``record.<timestamp>.json``, never silently destroyed.
    """
    d = Path(run_dir)
    prev = read_record(d)
    if prev is not None and prev.get("status") == "finished":
        if not overwrite:
            raise RunExistsError(
                f"run folder {str(d)!r} already holds a finished run (accuracy/perplexity in {d / RECORD}). "
                "Choose another run_name/output_dir, or pass --overwrite (the old record is kept as a backup)."
            )
        (d / RECORD).replace(d / f"record.{time.strftime('%Y%m%d-%H%M%S')}.json")
    d.mkdir(parents=True, exist_ok=True)
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
