"""Launch a worker script on N CPU processes (gloo) with torchrun, bounded by a timeout.

Tests use :func:`launch` so that a hang fails fast: the whole process group is killed after
``timeout`` seconds and the test fails with the workers' output.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def launch(script: str | Path, *args: str, nproc: int = 2, timeout: float = 150,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``script args`` under ``torchrun --standalone --nproc-per-node nproc``; fail on timeout or error."""
    e = launch_env()
    if env:
        e.update(env)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "--max-restarts=0", str(script), *args]
    return run_bounded(cmd, env=e, timeout=timeout, what=f"{nproc} processes")


def run_bounded(cmd: list[str], *, env: dict[str, str], timeout: float, what: str = "the command"
                ) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own session; on timeout kill it and every process it started, and fail."""
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and every worker: they share its new session
        stdout, stderr = proc.communicate()
        raise AssertionError(f"{what} did not finish in {timeout} s (a hang?):\n{stdout[-3000:]}\n{stderr[-3000:]}") from None
    p = subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
    if p.returncode != 0:
        raise AssertionError(f"{what} exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-6000:]}")
    return p


def launch_env() -> dict[str, str]:
    """The environment of a launched test process: offline, one thread, the checkout's sources."""
    e = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
             TOKENIZERS_PARALLELISM="false", PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]))
    e.pop("CUDA_VISIBLE_DEVICES", None)
    return e


def read_ranks(out: Path, nproc: int = 2) -> list[dict]:
    """The JSON result each rank wrote to ``out/rank{r}.json``."""
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(nproc)]


def write_and_leave(out: Path, rank: int, result: dict) -> None:
    """In a worker: write this rank's result, wait for the other ranks, and exit at once.

    The results are on disk, so the worker skips the interpreter's teardown, which now and then aborts
    a gloo rank on the CPU ("terminate called without an active exception", about 1 launch in 10,
    also after work that used no datadiet collective); see ``datadiet/__main__.py``."""
    import torch.distributed as dist

    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()  # leave together
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
