"""EL2N scoring pass over a whole pool: this process against Ray Data with 1 and 2 actors, side by side.

The pass is what ``datadiet score --engine ray`` moves to Ray: one no-grad forward per example of
the MiniLM classifier (batch 64, max_length 64; float32 by default, ``--bf16`` for bf16 autocast,
which is 6x *slower* on a CPU without native bf16 such as this AVX2 EPYC: BENCHMARKS.md) over the training
examples of ``health_tweets`` (its whole training split unless ``--max-train``), giving EL2N and
head GraNd. The scoring
runs' training is the same in every mode and is left out. Each measurement is its own process
(nothing warm carried over); modes alternate within a repeat and the order rotates between repeats.

- ``local``: ``forward_scores`` in this process, 2 torch threads (the reference path);
- ``ray1``: a local Ray started with 2 CPUs, 1 actor x 2 threads;
- ``ray2``: the same Ray, 2 actors x 1 thread.

For Ray, ``pass_s`` is the whole pass as a user waits for it: building the Arrow blocks, starting
the actors (each imports torch and loads the model once), the forwards, results streaming back and
every finished shard written as Parquet to a work folder (the resumable path, as in the CLI);
``init_s`` (starting Ray itself) is reported apart and in ``total_s``. Throughput = examples / pass_s.

    .venv/bin/python benchmarks/ray_scoring_throughput.py --repeats 3 --max-train 4000 --out benchmarks/results/ray_scoring_throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = ("local", "ray1", "ray2")


def one(mode: str, max_train: int | None, out: str, bf16: bool) -> None:
    """Measure one mode in this (fresh) process; write its JSON to ``out``."""
    import logging

    import numpy as np
    import torch

    from datadiet.config import load_config
    from datadiet.methods.data_diet.scores import forward_scores
    from datadiet.runner import prepare

    torch.set_num_threads(2)
    cfg = load_config(ROOT / "configs" / "health_tweets.yaml",
                      [f"data.max_train={'null' if max_train is None else max_train}", "train.threads=2"])
    _ds, lm, train, _test, collator, _ = prepare(cfg)
    model = lm.model
    model.eval()
    n = len(train)
    res: dict = {"mode": mode, "n": n, "torch": torch.__version__, "threads_total": 2}
    dtype = torch.bfloat16 if bf16 else None
    res["bf16"] = bf16
    kw = dict(collator=collator, batch_size=64, autocast_dtype=dtype)
    if mode == "local":
        t0 = time.perf_counter()
        got = forward_scores(model, train, **kw)
        res["pass_s"] = time.perf_counter() - t0
        res["init_s"] = 0.0
    else:
        import ray

        from datadiet.core.ray_pool import PassStats, RayEngine

        workers = int(mode[3:])
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
        res["init_s"] = time.perf_counter() - t0
        res["ray"] = ray.__version__
        st = PassStats()
        with tempfile.TemporaryDirectory() as work:
            from datadiet.core.ray_pool import ray_pass
            from datadiet.methods.data_diet.scores import ForwardScorer

            t0 = time.perf_counter()
            got = ray_pass(ForwardScorer.make(autocast_dtype=dtype), model, train, collator=collator,
                           batch_size=64, engine=RayEngine(workers=workers, threads=2 // workers), work_dir=work,
                           key={"bench": mode}, stats=st)
            res["pass_s"] = time.perf_counter() - t0
        res["shards"] = st.shards
        ray.shutdown()
    res["total_s"] = res["pass_s"] + res["init_s"]
    res["examples_per_s"] = n / res["pass_s"]
    np.save(out + ".el2n.npy", got["el2n"])
    Path(out).write_text(json.dumps(res))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--max-train", type=int, default=None, help="default: the whole training split")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (default float32)")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/ray_scoring_throughput.json"))
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--one-out", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        one(a.one, a.max_train, a.one_out, a.bf16)
        return
    import numpy as np

    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="2")
    runs: list[dict] = []
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.repeats):
            order = a.modes[r % len(a.modes):] + a.modes[: r % len(a.modes)]
            for mode in order:
                out = str(Path(tmp) / f"{mode}-{r}.json")
                cmd = [sys.executable, __file__, "--one", mode, "--one-out", out]
                if a.max_train is not None:
                    cmd += ["--max-train", str(a.max_train)]
                if a.bf16:
                    cmd.append("--bf16")
                subprocess.run(cmd, check=True, env=env, cwd=ROOT)
                rec = json.loads(Path(out).read_text())
                rec["repeat"] = r
                el = np.load(out + ".el2n.npy")
                ref = Path(tmp) / f"local-{r}.json.el2n.npy"
                if mode != "local" and ref.exists():
                    rec["max_abs_el2n_diff_vs_local"] = float(np.abs(el - np.load(ref)).max())
                runs.append(rec)
                print(json.dumps(rec), flush=True)
    med = {m: {k: statistics.median(x[k] for x in runs if x["mode"] == m)
               for k in ("pass_s", "init_s", "total_s", "examples_per_s")} for m in a.modes}
    summary = {"started": started, "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": platform.node(),
               "cpus": os.cpu_count(), "processor": _cpu_name(), "repeats": a.repeats, "bf16": a.bf16, "median": med, "runs": runs}
    if "local" in med:
        summary["overhead_vs_local"] = {m: med[m]["pass_s"] / med["local"]["pass_s"] - 1 for m in med if m != "local"}
        summary["overhead_vs_local_with_init"] = {m: med[m]["total_s"] / med["local"]["pass_s"] - 1
                                                  for m in med if m != "local"}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: summary[k] for k in summary if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
