"""``datadiet`` command line: ``train``, ``demo``, ``bench``, ``report``, ``score``, ``select``, ``env``, ``datasets``,
``models``, ``methods``, ``igf``.

Every subcommand is one :class:`Command` in :data:`COMMANDS`: a name, a one-line help, a function
that adds its arguments to an ``argparse`` parser, and a handler ``(args) -> exit code``. Adding a
subcommand is writing those two functions and adding one line to :data:`COMMANDS`; a subcommand
kept in its own module (:mod:`datadiet.cli.igf_cmd`) takes the shared exit codes, output function
and config arguments from :mod:`datadiet.cli.common`, never from this module.

Only the command line prints (through :func:`datadiet.cli.common.echo`). User errors (:class:`~datadiet.errors.DataDietError`, a missing file, a
missing optional package) are printed as ``error: <message>`` on stderr with exit status 2, never
as a traceback; Ctrl-C exits with status 130.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataDietError
from . import igf_cmd
from .common import (EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, add_config_args, add_param_args, echo, load_cfg, out_dir,
                     out_file, parse_params)

log = logging.getLogger("datadiet.cli")


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]


# ----------------------------------------------------------------------------------- output helpers
def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [list(columns)] + [["" if r.get(c) is None else str(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _add_json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _print_json(obj: Any) -> None:
    echo(json.dumps(obj, indent=2, default=str))


# ------------------------------------------------------------------------------------------- train
def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", metavar="FILE.yaml",
                   help="run configuration (see configs/); default: the built-in defaults "
                        "(rotten_tomatoes, minilm, full fine-tuning)")
    p.add_argument("--set", "-s", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=5e-5 method.name=random_skip "
                        "method.params.rate=0.3 (values are parsed as YAML; repeatable)")
    p.add_argument("--overwrite", action="store_true",
                   help="re-run into a folder that holds a finished run (the old run is kept in backup.<time>/ inside it)")
    p.add_argument("--out", metavar="DIR", help="output folder for the run folder (config key output_dir)")
    p.add_argument("--nproc", type=int, default=None, metavar="N",
                   help="train data-parallel on N processes of this machine (one per GPU; on a CPU, gloo): starts "
                        "`torchrun --standalone --nproc-per-node N -m datadiet train ...` with the other arguments")


def _launch(argv: Sequence[str], nproc: int) -> int:
    """``datadiet train --nproc N``: the same command on N processes, through torchrun."""
    import os
    import subprocess

    rest, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            rest.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "--max-restarts=0", "-m", "datadiet", *rest]
    log.info("launching %d processes: %s", nproc, " ".join(cmd))
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # torchrun's own default; train.threads sets it per rank
    return subprocess.call(cmd, env=env)


def cmd_train(args: argparse.Namespace) -> int:
    import os

    from ..config import load_config
    from ..runner import check_config, default_run_name, run

    if args.nproc is not None:
        if args.nproc < 1:
            raise DataDietError(f"--nproc must be at least 1, got {args.nproc}")
        if "WORLD_SIZE" in os.environ:
            raise DataDietError("--nproc starts its own processes; under torchrun or accelerate launch leave it out")
        if args.nproc > 1:
            cfg = load_config(args.config, args.overrides)  # bad input fails here, once, not on every rank
            out_dir(args.out or cfg.output_dir, "--out" if args.out else "output_dir")
            return _launch(args.argv, args.nproc)
    cfg = load_config(args.config, args.overrides)
    if args.out:
        cfg.output_dir = args.out
    out_dir(cfg.output_dir, "--out" if args.out else "output_dir")
    if args.overwrite:
        cfg.overwrite = True
    check_config(cfg)
    run_dir = Path(cfg.output_dir) / (cfg.run_name or default_run_name(cfg))
    params = ", ".join(f"{k}={v}" for k, v in cfg.method.params.items())
    log.info("train: %s | %s | method %s%s -> %s", cfg.data.name, cfg.model.name, cfg.method.name,
             f" ({params})" if params else "", run_dir)
    rec = run(cfg, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:  # several processes: rank 0 speaks for the run
        echo(format_run_summary(rec, run_dir))
    return EXIT_OK


def format_run_summary(rec: dict[str, Any], run_dir: Path) -> str:
    final = rec.get("final") or {}
    counts = rec.get("counts") or {}
    t = rec.get("timings") or {}
    metric, value = rec.get("metric", "value"), rec.get("value")
    extra = ""
    if "macro_f1" in final:
        extra = f"  (macro-F1 {final['macro_f1']:.4f})"
    used = rec.get("n_train_used")
    n_train = rec.get("n_train")
    lines = [
        f"{metric}: {value:.4f}{extra}  on {rec.get('n_test')} test examples",
        f"wall-clock: {t.get('wall_clock_s', 0.0):.1f} s (selection {t.get('selection_s', 0.0):.1f} s + "
        f"training {t.get('train_s', 0.0):.1f} s); total {t.get('total_s', 0.0):.1f} s",
        f"train set: {n_train} examples" + (f", {used} used after selection" if used is not None and used != n_train else ""),
        f"examples forwarded: {counts.get('examples_forwarded', 0):,}  backpropagated: "
        f"{counts.get('examples_backpropagated', 0):,}  optimizer steps: {counts.get('optimizer_steps', 0):,}",
        f"run folder: {run_dir}",
    ]
    if (rec.get("world_size") or 1) > 1:
        lines.insert(2, f"processes: {rec['world_size']} ({rec.get('backend', '?')}), counts over all of them")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- demo
def _add_demo(p: argparse.ArgumentParser) -> None:
    from ..demo import DEFAULT_METHODS

    p.add_argument("--dataset", default="rotten_tomatoes", help="built-in dataset or file (default: %(default)s)")
    p.add_argument("--model", default="minilm", help="model name (default: %(default)s)")
    p.add_argument("--max-train", type=int, default=4000, metavar="N", help="training examples (default: %(default)s)")
    p.add_argument("--max-test", type=int, default=1000, metavar="N", help="test examples (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=1, metavar="E", help="epochs (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=16, metavar="B", help="batch size (default: %(default)s)")
    p.add_argument("--lr", type=float, default=1e-4, help="learning rate (default: %(default)s)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--bf16", dest="bf16", action="store_true", default=None,
                   help="bf16 autocast (default: only where it is fast: a CUDA GPU with bf16, or a CPU with native "
                        "bf16 such as AVX512-BF16/AMX; elsewhere it is emulated and slower than float32)")
    g.add_argument("--no-bf16", dest="bf16", action="store_false", help="train in float32")
    p.add_argument("--threads", type=int, default=None, metavar="T",
                   help="torch threads (default: min(2, number of CPUs))")
    p.add_argument("--seed", type=int, default=0, help="training seed (default: %(default)s)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS), metavar="M1,M2,...",
                   help="comma-separated methods (default: %(default)s; random_skip@X skips at the rate X realised, "
                        "random_subset keeps 0.5, random_skip skips 0.5)")
    p.add_argument("--out", default="runs/demo", metavar="DIR",
                   help="where the run folders go (default: %(default)s; re-running keeps earlier records as backups)")


def cmd_demo(args: argparse.Namespace) -> int:
    import torch

    from ..demo import default_threads, demo_configs, format_table, run_demo, verdict

    threads = default_threads() if args.threads is None else args.threads
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    kw = dict(dataset=args.dataset, model=args.model, max_train=args.max_train, max_test=args.max_test,
              epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, bf16=args.bf16, threads=threads,
              methods=methods, out=args.out, seed=args.seed)
    cells = demo_configs(**kw)  # every name and value validated before printing the header
    bf16 = cells[0].config.train.bf16
    out_dir(args.out)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    echo(f"datadiet demo: {args.dataset} with {args.model}, {', '.join(methods)}")
    echo(f"  up to {args.max_train} train / {args.max_test} test examples, {args.epochs} epoch(s), "
         f"batch {args.batch_size}, lr {args.lr:g}, {'bf16' if bf16 else 'fp32'}"
         + (" (bf16 is not native on this device; --bf16 forces it)" if args.bf16 is None and not bf16 else ""))
    echo(f"  torch {torch.__version__}, {threads} thread(s), {device}; runs in {args.out}")
    echo()
    rows = run_demo(cells, progress=not args.quiet)
    echo()
    echo(format_table(rows))
    echo()
    lines = verdict(rows)
    for line in lines:
        echo(line)
    if lines:
        echo()
    echo("wall-clock = selection + training (evaluation not included); "
         "speed-up = full's wall-clock / the method's.")
    echo(f"records: {args.out}/*/record.json")
    return EXIT_OK


# --------------------------------------------------------------------------------------------- env
def _add_env(p: argparse.ArgumentParser) -> None:
    _add_json_flag(p)


def cmd_env(args: argparse.Namespace) -> int:
    from ..records import env_info

    info = env_info()
    if args.json:
        _print_json(info)
        return EXIT_OK
    accel = info["device"] if info.get("cuda") else "none (CPU only)"
    lines = [
        ("datadiet", info.get("datadiet")),
        ("python", info.get("python")),
        ("platform", info.get("platform")),
        ("torch", info.get("torch")),
        ("transformers", info.get("transformers") or "not installed"),
        ("accelerate", info.get("accelerate") or "not installed"),
        ("datasets", info.get("datasets") or "not installed"),
        ("numpy", info.get("numpy")),
        ("cpus", info.get("cpu_count")),
        ("cpu", info.get("cpu") or "unknown"),
        ("torch threads", info.get("torch_threads")),
        ("accelerator", accel),
    ]
    w = max(len(k) for k, _ in lines)
    for k, v in lines:
        echo(f"{k.ljust(w)}  {v}")
    return EXIT_OK


# -------------------------------------------------------------------------------- listings (names)
def _add_listing(p: argparse.ArgumentParser) -> None:
    _add_json_flag(p)


def cmd_datasets(args: argparse.Namespace) -> int:
    from ..data import describe_builtin

    rows = describe_builtin()
    if args.json:
        _print_json(rows)
        return EXIT_OK
    echo(_table(rows, ["name", "task", "description", "source"]))
    echo()
    echo("Also works as data.name: a local CSV/TSV/JSONL/Parquet file (columns named by data.text_column and "
         "data.label_column), or a Hugging Face hub name like 'org/name' (needs network and datadiet[hf]).")
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    from ..models import describe_models

    rows = describe_models()
    if args.json:
        _print_json(rows)
        return EXIT_OK
    echo(_table(rows, ["name", "kind", "description", "source"]))
    echo()
    echo("Also works as model.name: a local Hugging Face model folder, or a hub name like 'org/model'.")
    return EXIT_OK


def cmd_methods(args: argparse.Namespace) -> int:
    from ..methods.registry import describe_methods

    rows = describe_methods()
    if args.json:
        _print_json(rows)
        return EXIT_OK
    echo(_table(rows, ["name", "mechanism", "saves", "params"]))
    echo()
    echo("Choose one with method.name=NAME and set its parameters with method.params.KEY=VALUE.")
    return EXIT_OK


def _add_bench(p: argparse.ArgumentParser) -> None:
    from ..bench.suite import builtin_suites  # light: the suite file reader, no harness

    p.add_argument("--suite", required=True, metavar="NAME_OR_FILE",
                   help=f"a built-in suite ({', '.join(sorted(builtin_suites()))}) or a suite YAML file")
    p.add_argument("--out", required=True, metavar="DIR", help="results folder (rerun the same command to resume)")
    p.add_argument("--set", "-s", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override the suite's base config, e.g. train.epochs=1")
    p.add_argument("--only", metavar="SUBSTRING", help="run only cells whose key (dataset/label/sSEED) contains this")
    p.add_argument("--rerun", nargs="+", default=None, metavar="SUBSTRING",
                   help="measure again the finished cells whose key contains any of these (earlier results are kept, "
                        "the new line supersedes them in the report)")
    p.add_argument("--dry-run", action="store_true", help="list the cells and whether they are finished, run nothing")
    p.add_argument("--no-report", dest="report", action="store_false", help="do not write report.md/report.html at the end")


def cmd_bench(args: argparse.Namespace) -> int:
    import time as _time

    from ..bench.harness import finished_cells, run_suite
    from ..bench.suite import load_suite

    suite = load_suite(args.suite, overrides=args.overrides)  # validated: bad entries fail before any work
    out_dir(args.out)
    cells = [c for c in suite.cells() if args.only is None or args.only in c.key]
    done = finished_cells(args.out, suite.name)
    echo(f"suite {suite.name}: {len(cells)} cells ({sum(c.key in done for c in cells)} already finished) -> {args.out}")
    if args.dry_run:
        for c in cells:
            echo(f"  {'done ' if c.key in done else 'todo '} {c.key}")
        return EXIT_OK
    t0 = _time.perf_counter()
    n_failed = 0

    def on_cell(cell, status, row):
        nonlocal n_failed
        if status == "failed":
            n_failed += 1
            echo(f"  FAILED   {cell.key} (see results.jsonl)")
        elif status == "reused":
            echo(f"  reused   {cell.key}: the same configuration as {row['same_as']}, which has finished: "
                 f"{row['metric']}={row['value']:.4f}")
        elif status in ("finished", "recovered"):
            echo(f"  {status:<8} {cell.key}: {row['metric']}={row['value']:.4f}  wall {row['wall_clock_s']:.1f}s  "
                 f"backprop {row['examples_backpropagated']}  [{_time.perf_counter() - t0:.0f}s elapsed]")

    rows = run_suite(suite, args.out, progress=not args.quiet, only=args.only, rerun=args.rerun, on_cell=on_cell)
    echo(f"{len(rows)} finished cells, {n_failed} failed, in {_time.perf_counter() - t0:.0f}s")
    if args.report and rows:
        from ..bench.report import write_report

        md, html = write_report(args.out)
        echo(f"report: {md}  {html}")
    return EXIT_OK if n_failed == 0 else 1


def _add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", nargs="?", default=None,
                   help="a benchmark results folder (holding results.jsonl)")
    p.add_argument("--title", default=None, help="report title")
    p.add_argument("--scores", metavar="FILE.json", default=None,
                   help="instead of DIR: write the scores view (score histograms per class, the highest-scoring "
                        "examples) of one scores file from `datadiet score` or a data_diet run folder")
    p.add_argument("--out", metavar="FILE.html", default=None,
                   help="with --scores: the page to write (default: FILE-scores.html beside the scores file)")
    p.add_argument("--config", "-c", metavar="FILE.yaml", default=None,
                   help="with --scores: the config the scores were computed with, to show the examples' texts "
                        "(default: the run record beside the scores file, if any; else ids and labels only)")
    p.add_argument("--top", type=int, default=20, metavar="N",
                   help="highest-scoring examples to list in the HTML scores view (default: %(default)s)")


def cmd_report(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise DataDietError(f"--top must be >= 1 (the number of examples to list), got {args.top}")
    if args.scores is not None:
        if args.dir is not None:
            raise DataDietError("give DIR (a benchmark results folder) or --scores FILE, not both")
        return _report_scores(args)
    if args.out is not None or args.config is not None:
        raise DataDietError("--out and --config go with --scores FILE; a benchmark report is written into DIR")
    if args.dir is None:
        raise DataDietError("give DIR (a benchmark results folder holding results.jsonl) or --scores FILE "
                            "(a scores file from `datadiet score`)")
    from ..bench.report import write_report

    if not (Path(args.dir) / "results.jsonl").exists():
        raise DataDietError(f"{args.dir!r} holds no results.jsonl; run `datadiet bench --suite NAME --out {args.dir}` first")
    md, html = write_report(args.dir, title=args.title, scores_top=args.top)
    echo(md.read_text())
    echo(f"wrote {md} and {html}")
    return EXIT_OK


def _report_scores(args: argparse.Namespace) -> int:
    from ..bench.scores_view import write_scores_report
    from ..config import load_config

    if args.out is not None:
        out_file(args.out, suffix=".html")
    cfg = load_config(args.config) if args.config else None
    html, view = write_scores_report(args.scores, args.out, config=cfg, top=args.top, title=args.title)
    r = view.result
    echo(f"{view.describe()}")
    a = view.flip_auroc()
    if a is not None:
        echo(f"planted label flips: {int(view.flipped_mask().sum())}; AUROC of the mean score for them: {a:.3f}")
    for note in view.notes:
        echo(note)
    echo(f"wrote {html} (top {min(args.top, len(r))} examples)")
    return EXIT_OK


# ------------------------------------------------------------------------------------ score / select
def _add_score(p: argparse.ArgumentParser) -> None:
    add_config_args(p, required=False)
    p.add_argument("--score", default=None, metavar="KIND",
                   help="el2n, grand (all parameters) or grand_head (final Linear layer); default: the config's "
                        "data_diet method.params.score, else el2n")
    p.add_argument("--seeds", type=int, default=None, metavar="S", help="scoring runs to average (default: 5)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--score-epochs", type=float, default=None, metavar="E",
                   help="fine-tune each scoring run this many epochs before scoring (default: 1.0)")
    g.add_argument("--score-steps", type=int, default=None, metavar="T", help="... or this many optimizer steps")
    p.add_argument("--no-cache", dest="cache", action="store_false", default=None,
                   help="neither read nor write the score cache (recompute every scoring run)")
    p.add_argument("--out", metavar="FILE.json",
                   help="scores file to write (default: OUTPUT_DIR/scores/DATA-MODEL-SCORE.json, or .parquet "
                        "with --format parquet)")
    p.add_argument("--format", choices=["json", "parquet"], default="json",
                   help="json: one scores file (default); parquet: a store folder of Parquet shards keyed by "
                        "example_id, written shard by shard (a rerun resumes) and readable by "
                        "datasets.Dataset.from_parquet; select and report --scores read both")
    g = p.add_argument_group("Ray (pip install 'datadiet[ray]')")
    g.add_argument("--engine", choices=["local", "ray"], default=None,
                   help="local: the scoring forwards in this process (default, the reference); ray: on Ray Data "
                        "actors (the scoring runs' training stays here); a killed job, rerun, resumes from its "
                        "trained runs and finished shards")
    g.add_argument("--ray-workers", type=int, default=None, metavar="N",
                   help="actors of the Ray pass, each loading the model once (default 1; a GPU each on a cluster "
                        "with GPUs); this machine's cores are shared out among them")
    g.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="join this running Ray cluster (e.g. auto or ray://host:10001) instead of starting a local "
                        "Ray with this machine's cores; default: $RAY_ADDRESS")
    g.add_argument("--ray-shard-rows", type=int, default=None, metavar="R",
                   help="rows per shard, the unit a rerun resumes from (default 4096)")


def _data_diet_from(cfg, **flags: Any):
    """A DataDiet built from the config's data_diet parameters (if any) with command-line overrides."""
    from ..methods.data_diet.method import DataDiet

    from ..methods.registry import build_method

    params = dict(cfg.method.params) if cfg.method.name == DataDiet.name else {}
    if flags.get("score_epochs") is not None or flags.get("score_steps") is not None:
        params.pop("score_epochs", None)
        params.pop("score_steps", None)
    params.update({k: v for k, v in flags.items() if v is not None})
    return build_method(DataDiet.name, params)


def cmd_score(args: argparse.Namespace) -> int:
    from ..runner import plan_context, prepare

    cfg = load_cfg(args)
    if args.seeds is not None and args.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1 (the number of scoring runs), got {args.seeds}")
    if args.ray_workers is not None and args.ray_workers < 1:
        raise ConfigError(f"--ray-workers must be >= 1, got {args.ray_workers}")
    if args.ray_shard_rows is not None and args.ray_shard_rows < 1:
        raise ConfigError(f"--ray-shard-rows must be >= 1, got {args.ray_shard_rows}")
    ray_flags = [f for f in ("ray_workers", "ray_address", "ray_shard_rows") if getattr(args, f) is not None]
    dd = _data_diet_from(cfg, score=args.score, score_seeds=args.seeds, score_epochs=args.score_epochs,
                         score_steps=args.score_steps, cache=args.cache, engine=args.engine,
                         ray_workers=args.ray_workers)
    if ray_flags and dd.engine != "ray":
        raise ConfigError(f"--{ray_flags[0].replace('_', '-')} goes with --engine ray")
    engine = None
    if dd.engine == "ray":
        from ..core.ray_pool import ray_engine

        engine = ray_engine("ray", workers=dd.ray_workers, address=args.ray_address, shard_rows=args.ray_shard_rows)
    ext = ".parquet" if args.format == "parquet" else ".json"
    out = Path(args.out) if args.out else (
        Path(cfg.output_dir) / "scores" / f"{cfg.data.name.replace('/', '_')}-{cfg.model.name.replace('/', '_')}-{dd.score}{ext}")
    # checked before the scoring runs, not after them: a file for json, a folder (the store) for parquet
    (out_dir if args.format == "parquet" else out_file)(out, "--out" if args.out else "scores file")
    ds, lm, train, _test, collator, _ = prepare(cfg)
    ctx = plan_context(cfg, lm, train, collator, task=ds.task)
    log.info("score: %s | %s | %s, %d scoring run(s) of %d steps each", cfg.data.name, cfg.model.name, dd.score,
             dd.score_seeds, dd.scoring_steps(len(train), cfg.train.batch_size))
    if engine is not None:
        log.info("score: the scoring forwards on Ray, %d actor(s) x %d thread(s), shards of %d rows", engine.workers,
                 engine.threads_per_worker(), engine.shard_rows)
    res = dd.compute_scores(ctx, progress=not args.quiet, engine=engine)
    if args.format == "parquet":
        res.save_parquet(out)
    else:
        res.save(out)
    q = sorted(res.scores)
    q = (q[0], q[len(q) // 2], q[-1])
    hits = sum(res.cached)
    echo(f"{res.kind} scores of {len(res)} examples, mean of {len(res.seeds)} scoring run(s) "
         f"(seeds {', '.join(map(str, res.seeds))}) at step {res.steps}: min {q[0]:.4f}  median {q[1]:.4f}  max {q[2]:.4f}")
    echo(f"cost: {res.cost_s:.1f} s of scoring runs" + (f" ({hits} run(s) from the cache, {res.reused_s:.1f} s paid earlier; "
         f"{res.spent_s:.1f} s spent now)" if hits else ""))
    echo(f"scores {'store' if args.format == 'parquet' else 'file'}: {out}")
    echo(f"select with: datadiet select --scores {out} -p mode=top keep=0.7 --out selection.json")
    return EXIT_OK


def _add_convert(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SOURCE",
                   help="a JSON scores file (from `datadiet score`) or an embedding cache entry (a .npz under the "
                        "embeddings cache folder, `datadiet env` shows where)")
    p.add_argument("--out", required=True, metavar="FOLDER", help="the Parquet store folder to write (created)")
    p.add_argument("--float16", action="store_true", help="embeddings only: store the vectors as float16 (half the size)")
    p.add_argument("--shard-rows", type=int, default=None, metavar="N", help="rows per Parquet shard")


def cmd_convert(args: argparse.Namespace) -> int:
    """A JSON scores file -> a score store; an embedding cache entry (.npz) -> an embedding store."""
    src = Path(args.source)
    if not src.is_file():
        raise DataDietError(f"{str(src)!r} is not a file; give a JSON scores file or an embedding cache entry (.npz)")
    if args.shard_rows is not None and args.shard_rows < 1:
        raise ConfigError(f"--shard-rows must be >= 1, got {args.shard_rows}")
    out = out_dir(Path(args.out), "--out")
    if src.suffix.lower() == ".npz":
        from ..methods.ingenious.store import SHARD_ROWS, read_npz_entry, write_embedding_store

        e = read_npz_entry(src)
        write_embedding_store(e["ids"], e["vectors"], out, key=e["key"], cost_s=e["cost_s"],
                              dtype="float16" if args.float16 else "float32",
                              shard_rows=args.shard_rows or SHARD_ROWS)
        n, d = e["vectors"].shape if e["vectors"].ndim == 2 else (len(e["ids"]), 0)
        echo(f"embedding store: {out} ({n} examples x {d} dims, {'float16' if args.float16 else 'float32'})")
        echo(f"use it with: -p embeddings_store={out}  (method ingenious), or datasets.Dataset.from_parquet"
             f"('{out}/*.parquet')")
        return EXIT_OK
    if args.float16:
        raise ConfigError("--float16 applies to embeddings (.npz); a scores file keeps float64 scores")
    from ..methods.data_diet.score_runs import ScoreResult
    from ..methods.data_diet.store import SHARD_ROWS

    res = ScoreResult.load(src)
    res.save_parquet(out, shard_rows=args.shard_rows or SHARD_ROWS)
    echo(f"score store: {out} ({res.kind} scores of {len(res)} examples)")
    echo(f"select with: datadiet select --scores {out} -p mode=top keep=0.7 --out selection.json")
    return EXIT_OK


def _add_select(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scores", metavar="FILE.json", help="a scores file from `datadiet score` (no model needed)")
    add_config_args(p, required=False)
    p.add_argument("--method", "-m", default=None, metavar="NAME",
                   help="an offline selection method (mechanism prune, see `datadiet methods`); default: the "
                        "config's method if it is one, else data_diet")
    add_param_args(p, "method parameter, e.g. -p mode=offset offset=0.05 keep=0.7 stratified=true "
                      "(values parsed as YAML; override the config's method.params)")
    p.add_argument("--out", metavar="FILE.json",
                   help="selection file to write (default: beside the scores file, or OUTPUT_DIR/selections/...)")


def _prune_methods() -> list[str]:
    from ..methods.registry import METHODS

    return [n for n, c in METHODS.items() if getattr(c, "mechanism", None) == "prune"]


def _check_prune_method(name: str) -> None:
    from ..errors import unknown_name
    from ..methods.registry import METHODS

    if name not in METHODS:
        raise unknown_name("method", name, METHODS)
    mech = getattr(METHODS[name], "mechanism", None)
    if mech != "prune":
        raise DataDietError(f"method {name!r} is not an offline selector (its mechanism is {mech!r}); "
                            f"choose one of: {', '.join(_prune_methods())}")


def cmd_select(args: argparse.Namespace) -> int:
    from ..methods.registry import build_method

    params = parse_params(args.params)
    if args.out:
        out_file(args.out)  # before the selection work, not after it
    if args.scores and (args.config or args.overrides):
        raise DataDietError("give --scores FILE or --config FILE, not both (a scores file already fixes the data)")
    if not args.scores and not args.config:
        raise DataDietError("give --scores FILE (from `datadiet score`) or --config FILE (scores are computed, or "
                            "taken from the cache, for that config)")
    if args.scores:
        from ..methods.data_diet.score_runs import ScoreResult

        name = args.method or "data_diet"
        _check_prune_method(name)
        res = ScoreResult.load(args.scores)
        scoring = {"score_seeds", "score_epochs", "score_steps", "cache", "grand_chunk_size"}
        bad = sorted(scoring & set(params))
        if bad:
            raise DataDietError(f"-p {', '.join(bad)}: these set how scores are computed, and --scores already holds "
                                f"them; drop them, or recompute with `datadiet score`")
        from ..methods.registry import METHODS

        if not hasattr(METHODS[name], "select_from_scores"):
            raise DataDietError(f"method {name!r} cannot select from a scores file; use --config FILE instead "
                                "(or -p mode=random with data_diet for the random baseline)")
        params.setdefault("score", res.kind)
        method = build_method(name, params)
        sel = method.select_from_scores(res)
        out = Path(args.out) if args.out else Path(args.scores).with_name(Path(args.scores).stem + f"-{name}-selection.json")
    else:
        from ..runner import plan_context, prepare

        cfg = load_cfg(args)
        name = args.method or (cfg.method.name if cfg.method.name in _prune_methods() else "data_diet")
        _check_prune_method(name)
        base = dict(cfg.method.params) if cfg.method.name == name else {}
        method = build_method(name, {**base, **params})
        if getattr(method, "reselect_every", None) is not None:
            raise DataDietError(f"method {name!r} with reselect_every={method.reselect_every} draws a new subset "
                                "during training, which a selection file cannot hold; drop reselect_every here "
                                "(-p reselect_every=null writes the first subset) or train with the method itself")
        ds, lm, train, _test, collator, _ = prepare(cfg)
        ctx = plan_context(cfg, lm, train, collator, task=ds.task)
        # methods whose selection does long work (embedding, scoring) may show a progress bar
        kw = {"progress": not args.quiet} if "progress" in inspect.signature(method.plan).parameters else {}
        plan = method.plan(ctx, **kw)
        if plan.selection is None:
            raise DataDietError(f"method {name!r} returned no selection for this config; choose one of: "
                                f"{', '.join(_prune_methods())}")
        sel = plan.selection
        out = Path(args.out) if args.out else (
            Path(cfg.output_dir) / "selections" / f"{cfg.data.name.replace('/', '_')}-{cfg.model.name.replace('/', '_')}-{name}.json")
    sel.save(out)
    echo(f"{sel.method}: kept {len(sel)} of {sel.n_total} examples ({sel.fraction:.1%})"
         + (f"; classes {sel.info['class_counts']}" if "class_counts" in sel.info else ""))
    cost = sel.info.get("cost")
    if isinstance(cost, dict) and "cost_s" in cost:
        reused = float(cost.get("reused_s", 0.0))
        echo(f"selection cost: {cost['cost_s']:.1f} s" + (f" ({reused:.1f} s of it paid earlier, taken from the cache)"
                                                          if reused > 0 else ""))
    echo(f"selection file: {out}")
    echo(f"train on it with: datadiet train --config CONFIG --set data.selection={out}")
    return EXIT_OK


# -------------------------------------------------------------------------------------- registration
COMMANDS: list[Command] = [
    Command("train", "train and evaluate one configuration", _add_train, cmd_train),
    Command("demo", "full fine-tuning vs random_subset vs random_skip on one dataset, as a table", _add_demo, cmd_demo),
    Command("env", "versions, threads and accelerator", _add_env, cmd_env),
    Command("datasets", "list the built-in datasets", _add_listing, cmd_datasets),
    Command("models", "list the built-in models", _add_listing, cmd_models),
    Command("methods", "list the methods, their mechanism, what they save and their parameters", _add_listing, cmd_methods),
    Command("bench", "run a benchmark suite (datasets x methods x seeds), resumable", _add_bench, cmd_bench),
    Command("report", "turn a benchmark's results.jsonl into report.md and a self-contained report.html", _add_report, cmd_report),
    Command("score", "score training examples (EL2N / GraNd after S short fine-tuning runs), cached, into a scores file",
            _add_score, cmd_score),
    Command("select", "run an offline selector (scores file or config) and write a selection file", _add_select, cmd_select),
    Command("convert", "turn a JSON scores file or an embedding cache entry (.npz) into a Parquet store keyed by "
            "example_id", _add_convert, cmd_convert),
    Command("igf", "collect IG pairs and train IGF's secondary learner once (cached) into a reusable learner file",
            igf_cmd.add_igf, igf_cmd.cmd_igf),
]


def _add_verbosity(p: argparse.ArgumentParser, *, top: bool) -> None:
    # On subparsers the defaults are suppressed so that `datadiet -q train` is not undone.
    d = {} if top else {"default": argparse.SUPPRESS}
    g = p.add_mutually_exclusive_group()
    g.add_argument("-v", "--verbose", action="store_true", help="debug logging", **({"default": False} if top else d))
    g.add_argument("-q", "--quiet", action="store_true", help="warnings and results only, no progress bars",
                   **({"default": False} if top else d))


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="datadiet",
        description="Data-efficient fine-tuning: train on the examples that matter, skip or prune the rest.",
        epilog="Run `datadiet <command> --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"datadiet {__version__}")
    _add_verbosity(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for c in COMMANDS:
        sp = sub.add_parser(c.name, help=c.help, description=c.help[:1].upper() + c.help[1:] + ".")
        c.add_arguments(sp)
        _add_verbosity(sp, top=False)
        sp.set_defaults(handler=c.handler)
    return parser


# ------------------------------------------------------------------------------------------ logging
_handler: logging.Handler | None = None


def _setup_logging(level: int) -> tuple[logging.Logger, int]:
    """A compact stderr handler on the ``datadiet`` logger (CLI only; the library never prints)."""
    global _handler
    logger = logging.getLogger("datadiet")
    if _handler is not None:
        logger.removeHandler(_handler)
    _handler = logging.StreamHandler(sys.stderr)  # the current stderr (pytest may swap it)
    _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname).1s %(message)s", datefmt="%H:%M:%S"))
    old = logger.level
    logger.addHandler(_handler)
    logger.setLevel(level)
    return logger, old


def _teardown_logging(logger: logging.Logger, old_level: int) -> None:
    global _handler
    if _handler is not None:
        logger.removeHandler(_handler)
        _handler = None
    logger.setLevel(old_level)


def _error(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``datadiet`` command line; returns the exit status (0 ok, 2 bad input, 130 Ctrl-C)."""
    parser = build_parser()
    try:
        argv = list(argv) if argv is not None else sys.argv[1:]
        args = parser.parse_args(argv)
        args.argv = argv
    except SystemExit as e:  # --help, --version, or a usage error (argparse already printed it)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_USAGE)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return EXIT_USAGE
    import os

    # several processes (torchrun): rank 0 tells the story, the others only warn
    quiet = args.quiet or int(os.environ.get("RANK", "0") or 0) > 0
    level = logging.DEBUG if args.verbose else logging.WARNING if quiet else logging.INFO
    logger, old_level = _setup_logging(level)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early: not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except (DataDietError, ConfigError) as e:
        _error(str(e))
        return EXIT_USAGE
    except FileNotFoundError as e:
        name = f" {e.filename}" if getattr(e, "filename", None) else ""
        _error(f"file not found:{name}" + ("" if name else f" {e}") + "; check the path")
        return EXIT_USAGE
    except (IsADirectoryError, NotADirectoryError, FileExistsError, PermissionError) as e:
        # a path in the way that no earlier check caught: still one line, naming the path
        what = next(w for t, w in ((IsADirectoryError, "is a folder, but a file is expected there"),
                                   (NotADirectoryError, "is (under) a file, but a folder is expected there"),
                                   (FileExistsError, "already exists as a file, but a folder is expected there"),
                                   (PermissionError, "cannot be written (permission denied)")) if isinstance(e, t))
        _error(f"{e.filename2 or e.filename or e} {what}; check the path")
        return EXIT_USAGE
    except ImportError as e:  # a missing optional extra: the message says what to install
        _error(str(e))
        return EXIT_USAGE
    finally:
        _teardown_logging(logger, old_level)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
