"""Data-parallel on one machine: 2 processes x 1 thread against 1 process x 2 threads, side by side.

The same run (MiniLM classifier, Rotten Tomatoes, one epoch, global batch 16, bf16 autocast, fused
AdamW) is trained through the CLI, once as one process with 2 threads and batch 16 and once as
``--nproc 2`` with 1 thread each and batch 8 per rank, for ``full`` and one skipping method.
Runs alternate (1 proc, 2 procs, 1 proc, ...) so machine noise hits both; medians are compared.
Reported per run, from the run record (rank 0): ``train_s`` (training only, every cost of the
method included), ``sync_s`` (time in datadiet's own collectives: checkpoints, gathered batches
and losses) and throughput (examples seen per training second). Then the DDP gradient all-reduce
of MiniLM's parameters is timed alone on 2 gloo processes: the communication every optimizer
step pays on top of datadiet's.

    .venv/bin/python benchmarks/distributed_throughput.py --repeats 3 --out benchmarks/results/distributed_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def allreduce_worker(n: int, repeats: int, out: str) -> None:
    """Under torchrun: time an all-reduce of ``n`` float32 values (one DDP gradient sync of that size)."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    t = torch.ones(n)
    dist.all_reduce(t)  # warm-up
    times = []
    for _ in range(repeats):
        dist.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(t)
        times.append(time.perf_counter() - t0)
    if dist.get_rank() == 0:
        Path(out).write_text(json.dumps({"n": n, "seconds": times}))
    dist.destroy_process_group()


def one_run(method: list[str], nproc: int, out: Path, max_train: int) -> dict:
    threads, bs = (2, 16) if nproc == 1 else (1, 16 // nproc)
    sets = [f"data.max_train={max_train}", "data.max_test=64", "train.epochs=1", f"train.batch_size={bs}",
            f"train.threads={threads}", "train.bf16=true", "train.fused_adamw=true", "train.seed=0", "run_name=r",
            *method]
    cmd = [sys.executable, "-m", "datadiet", "train", "-q", "--config", "configs/rotten_tomatoes.yaml", "--out",
           str(out), "--set", *sets]
    if nproc > 1:
        cmd[4:4] = ["--nproc", str(nproc)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    subprocess.run(cmd, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    rec = json.loads((out / "r" / "record.json").read_text())
    t, c = rec["timings"], rec["counts"]
    return {"nproc": nproc, "threads": threads, "batch_per_rank": bs, "train_s": t["train_s"],
            "wall_clock_s": t["wall_clock_s"], "sync_s": t.get("sync_s", 0.0), "steps": c["optimizer_steps"],
            "seen": c["examples_seen"], "backpropagated": c["examples_backpropagated"],
            "accuracy": rec.get("value"), "torch": rec["env"].get("torch")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-train", type=int, default=640)
    ap.add_argument("--out", default=None)
    ap.add_argument("--allreduce-worker", nargs=3, metavar=("N", "REPEATS", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.allreduce_worker:
        n, r, o = args.allreduce_worker
        return allreduce_worker(int(n), int(r), o)

    methods = {"full": ["method.name=full"],
               "selective_backprop": ["method.name=selective_backprop", "method.params.beta=1.0"]}
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for name, m in methods.items():
                for nproc in (1, 2):
                    r = one_run(m, nproc, Path(tmp) / f"{name}-{nproc}-{rep}", args.max_train)
                    rows.append({"method": name, "repeat": rep, **r})
                    print(json.dumps(rows[-1]), flush=True)
        from datadiet.models import load_model

        n_params = sum(p.numel() for p in load_model("minilm", task="classification", num_labels=2).model.parameters())
        ar = Path(tmp) / "allreduce.json"
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                        __file__, "--allreduce-worker", str(n_params), "10", str(ar)], check=True, cwd=ROOT,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
        allreduce = json.loads(ar.read_text())
    summary = {}
    for name in methods:
        one = [r for r in rows if r["method"] == name and r["nproc"] == 1]
        two = [r for r in rows if r["method"] == name and r["nproc"] == 2]
        med = lambda rs, k: statistics.median(r[k] for r in rs)  # noqa: E731
        summary[name] = {
            "train_s_1proc_2threads": med(one, "train_s"), "train_s_2proc_1thread": med(two, "train_s"),
            "throughput_ratio_2proc_over_1proc": med(one, "train_s") / med(two, "train_s"),
            "steps": two[0]["steps"], "sync_s_per_step_2proc": med(two, "sync_s") / two[0]["steps"],
            "backpropagated_1proc": one[0]["backpropagated"], "backpropagated_2proc": two[0]["backpropagated"]}
    summary["ddp_allreduce_s_per_step"] = statistics.median(allreduce["seconds"])
    summary["ddp_allreduce_values"] = allreduce["n"]
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps({"runs": rows, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
