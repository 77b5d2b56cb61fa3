"""``datadiet`` command line: ``train``, ``demo``, ``bench``, ``report``, ``env``, ``datasets``, ``models``, ``methods``.

Every subcommand is one :class:`Command` in :data:`COMMANDS`: a name, a one-line help, a function
that adds its arguments to an ``argparse`` parser, and a handler ``(args) -> exit code``. Adding a
subcommand is writing those two functions and adding one line to :data:`COMMANDS`.

Only this module prints. User errors (:class:`~datadiet.errors.DataDietError`, a missing file, a
missing optional package) are printed as ``error: <message>`` on stderr with exit status 2, never
as a traceback; Ctrl-C exits with status 130.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataDietError

log = logging.getLogger("datadiet.cli")

EXIT_OK = 0
EXIT_USAGE = 2  # bad input: the message says what to fix
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]


# ----------------------------------------------------------------------------------- output helpers
def _out(text: str = "") -> None:
    print(text, flush=True)


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [list(columns)] + [["" if r.get(c) is None else str(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _add_json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _print_json(obj: Any) -> None:
    _out(json.dumps(obj, indent=2, default=str))


# ------------------------------------------------------------------------------------------- train
def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", metavar="FILE.yaml",
                   help="run configuration (see configs/); default: the built-in defaults "
                        "(rotten_tomatoes, minilm, full fine-tuning)")
    p.add_argument("--set", "-s", dest="overrides", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=5e-5 method.name=random_skip "
                        "method.params.rate=0.3 (values are parsed as YAML; repeatable)")
    p.add_argument("--overwrite", action="store_true",
                   help="re-run into a folder that holds a finished run (the old record is kept as a backup)")
    p.add_argument("--out", metavar="DIR", help="output folder for the run folder (config key output_dir)")


def cmd_train(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..runner import check_config, default_run_name, run

    cfg = load_config(args.config, args.overrides)
    if args.out:
        cfg.output_dir = args.out
    if args.overwrite:
        cfg.overwrite = True
    check_config(cfg)
    run_dir = Path(cfg.output_dir) / (cfg.run_name or default_run_name(cfg))
    params = ", ".join(f"{k}={v}" for k, v in cfg.method.params.items())
    log.info("train: %s | %s | method %s%s -> %s", cfg.data.name, cfg.model.name, cfg.method.name,
             f" ({params})" if params else "", run_dir)
    rec = run(cfg, progress=not args.quiet)
    _out(format_run_summary(rec, run_dir))
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
    p.add_argument("--no-bf16", dest="bf16", action="store_false", help="train in float32 instead of bf16 autocast")
    p.add_argument("--threads", type=int, default=None, metavar="T",
                   help="torch threads (default: min(2, number of CPUs))")
    p.add_argument("--seed", type=int, default=0, help="training seed (default: %(default)s)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS), metavar="M1,M2,...",
                   help="comma-separated methods (default: %(default)s; random_subset keeps 0.5, random_skip skips 0.5)")
    p.add_argument("--out", default="runs/demo", metavar="DIR",
                   help="where the run folders go (default: %(default)s; re-running keeps earlier records as backups)")


def cmd_demo(args: argparse.Namespace) -> int:
    import torch

    from ..demo import default_threads, demo_configs, format_table, run_demo

    threads = default_threads() if args.threads is None else args.threads
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    kw = dict(dataset=args.dataset, model=args.model, max_train=args.max_train, max_test=args.max_test,
              epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, bf16=args.bf16, threads=threads,
              methods=methods, out=args.out, seed=args.seed)
    cfgs = demo_configs(**kw)  # every name and value validated before printing the header
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    _out(f"datadiet demo: {args.dataset} with {args.model}, {', '.join(methods)}")
    _out(f"  up to {args.max_train} train / {args.max_test} test examples, {args.epochs} epoch(s), "
         f"batch {args.batch_size}, lr {args.lr:g}, {'bf16' if args.bf16 else 'fp32'}")
    _out(f"  torch {torch.__version__}, {threads} thread(s), {device}; runs in {args.out}")
    _out()
    rows = run_demo(cfgs, progress=not args.quiet)
    _out()
    _out(format_table(rows))
    _out()
    _out("wall-clock = selection + training (evaluation not included); "
         "speed-up = full's wall-clock / the method's.")
    _out(f"records: {args.out}/*/record.json")
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
        ("torch threads", info.get("torch_threads")),
        ("accelerator", accel),
    ]
    w = max(len(k) for k, _ in lines)
    for k, v in lines:
        _out(f"{k.ljust(w)}  {v}")
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
    _out(_table(rows, ["name", "task", "description", "source"]))
    _out()
    _out("Also works as data.name: a local CSV/TSV/JSONL/Parquet file (columns named by data.text_column and "
         "data.label_column), or a Hugging Face hub name like 'org/name' (needs network and datadiet[hf]).")
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    from ..models import describe_models

    rows = describe_models()
    if args.json:
        _print_json(rows)
        return EXIT_OK
    _out(_table(rows, ["name", "kind", "description", "source"]))
    _out()
    _out("Also works as model.name: a local Hugging Face model folder, or a hub name like 'org/model'.")
    return EXIT_OK


def cmd_methods(args: argparse.Namespace) -> int:
    from ..registry import describe_methods

    rows = describe_methods()
    if args.json:
        _print_json(rows)
        return EXIT_OK
    _out(_table(rows, ["name", "mechanism", "saves", "params"]))
    _out()
    _out("Choose one with method.name=NAME and set its parameters with method.params.KEY=VALUE.")
    return EXIT_OK


def _add_bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", required=True, metavar="NAME_OR_FILE",
                   help="a built-in suite (smoke, cpu, gpu) or a suite YAML file")
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
    cells = [c for c in suite.cells() if args.only is None or args.only in c.key]
    done = finished_cells(args.out, suite.name)
    _out(f"suite {suite.name}: {len(cells)} cells ({sum(c.key in done for c in cells)} already finished) -> {args.out}")
    if args.dry_run:
        for c in cells:
            _out(f"  {'done ' if c.key in done else 'todo '} {c.key}")
        return EXIT_OK
    t0 = _time.perf_counter()
    n_failed = 0

    def on_cell(cell, status, row):
        nonlocal n_failed
        if status == "failed":
            n_failed += 1
            _out(f"  FAILED   {cell.key} (see results.jsonl)")
        elif status in ("finished", "recovered"):
            _out(f"  {status:<8} {cell.key}: {row['metric']}={row['value']:.4f}  wall {row['wall_clock_s']:.1f}s  "
                 f"backprop {row['examples_backpropagated']}  [{_time.perf_counter() - t0:.0f}s elapsed]")

    rows = run_suite(suite, args.out, progress=not args.quiet, only=args.only, rerun=args.rerun, on_cell=on_cell)
    _out(f"{len(rows)} finished cells, {n_failed} failed, in {_time.perf_counter() - t0:.0f}s")
    if args.report and rows:
        from ..bench.report import write_report

        md, html = write_report(args.out)
        _out(f"report: {md}  {html}")
    return EXIT_OK if n_failed == 0 else 1


def _add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="a benchmark results folder (holding results.jsonl)")
    p.add_argument("--title", default=None, help="report title")


def cmd_report(args: argparse.Namespace) -> int:
    from ..bench.report import write_report

    if not (Path(args.dir) / "results.jsonl").exists():
        raise DataDietError(f"{args.dir!r} holds no results.jsonl; run `datadiet bench --suite NAME --out {args.dir}` first")
    md, html = write_report(args.dir, title=args.title)
    _out(md.read_text())
    _out(f"wrote {md} and {html}")
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
    # ---- To be added (one `_add_<name>(parser)` + one `cmd_<name>(args) -> int` + one line here each):
    # Command("select", "run an offline selector and write a selection file", _add_select, cmd_select),
    # Command("score", "score training examples with a model (losses, margins, ...)", _add_score, cmd_score),
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
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as e:  # --help, --version, or a usage error (argparse already printed it)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_USAGE)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return EXIT_USAGE
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
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
    except ImportError as e:  # a missing optional extra: the message says what to install
        _error(str(e))
        return EXIT_USAGE
    finally:
        _teardown_logging(logger, old_level)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
