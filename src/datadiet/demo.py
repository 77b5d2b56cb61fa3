"""The README's main job: full fine-tuning, the product's best measured method, and its random control.

:func:`demo_configs` builds one validated config per method and :func:`run_demo` trains the same
model on the same data once per config and returns one row per method; :func:`format_table` turns
the rows into a plain-text table and :func:`verdict` says, in words, whether the method beat the
random control at its own budget and by how much. Nothing here prints: progress goes to the
``datadiet`` logger and the CLI (``datadiet demo``) prints the table.

The default methods come from a measurement at the demo's own size (``datadiet bench --suite
demo_pick``, see ``BENCHMARKS.md``): ``full``, :data:`BEST_METHOD`, and ``random_skip@`` that method,
random skipping at the skip rate the method realised in this very demo run (so both backpropagate
about the same number of examples). A method ``random_skip@X`` needs ``X`` earlier in the list.

bf16: by default (``bf16=None``) bf16 autocast is used only where it is fast: a CUDA device that
supports it, or a CPU with native bf16 instructions (AVX512-BF16 or AMX); on other CPUs (AVX2,
most laptops) bf16 autocast is emulated and several times slower than float32.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import RunConfig
from .errors import ConfigError

log = logging.getLogger(__name__)

#: Methods the demo knows how to parameterise, with the parameters it uses for each (a label of the
#: form ``NAME_SETTING`` names method ``NAME`` with these parameters, as in the benchmark suites).
DEMO_PARAMS: dict[str, dict[str, Any]] = {
    "full": {},
    "random_subset": {"fraction": 0.5},
    "random_skip": {"rate": 0.5},
    "multistage_d30": {"predictor": "logistic", "ngrams": 2, "loss_memory": True, "meta_skill_threshold": 0.02,
                       "decision_threshold": 0.3},
    "multistage_moving_d30": {"predictor": "logistic", "ngrams": 2, "loss_memory": True,
                              "meta_skill_threshold": 0.02, "decision_threshold": 0.3, "tau_mode": "moving"},
}
#: method name of each label that is not itself a method name
DEMO_LABELS: dict[str, str] = {"multistage_d30": "multistage", "multistage_moving_d30": "multistage"}
#: The method the demo shows: chosen from the ``demo_pick`` suite's measurement (BENCHMARKS.md).
BEST_METHOD = "selective_backprop"
MATCHED = "random_skip@"
DEFAULT_METHODS: tuple[str, ...] = ("full", BEST_METHOD, MATCHED + BEST_METHOD)


@dataclass(frozen=True)
class DemoCell:
    """One demo run: its label (the table's row name), its config, and for ``random_skip@X`` the label X
    whose realised skip rate it matches (its ``rate`` is set from X's record just before it runs)."""

    label: str
    config: RunConfig
    matches: str | None = None


def default_threads() -> int:
    """Torch threads the demo uses by default: 2, or fewer on a smaller machine."""
    return max(1, min(2, os.cpu_count() or 1))


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU executes bf16 natively (x86 AVX512-BF16 or AMX-BF16, read from /proc/cpuinfo's
    flags; ``cpuinfo`` gives that text instead). False where it cannot be told (no /proc/cpuinfo)."""
    if cpuinfo is None:
        from .records import read_cpuinfo

        cpuinfo = read_cpuinfo()
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[-1].split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def bf16_is_fast() -> bool:
    """The demo's default for bf16 autocast: a CUDA device with bf16, or a CPU with native bf16."""
    import torch

    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    return cpu_has_native_bf16()


def demo_configs(
    *,
    dataset: str = "rotten_tomatoes",
    model: str = "minilm",
    max_train: int | None = 4000,
    max_test: int | None = 1000,
    epochs: int = 1,
    batch_size: int = 16,
    lr: float = 1e-4,
    bf16: bool | None = None,
    threads: int | None = None,
    methods: Sequence[str] = DEFAULT_METHODS,
    out: str | Path = "runs/demo",
    seed: int = 0,
    params: dict[str, dict[str, Any]] | None = None,
) -> list[DemoCell]:
    """One validated run per method label (same data, model, seed and settings).

    ``params`` overrides the per-method parameters in :data:`DEMO_PARAMS`. ``bf16=None``: bf16
    autocast where it is fast (:func:`bf16_is_fast`). Each run writes to
    ``out/<dataset>-<model>-<label>-s<seed>`` (``@`` written ``_at_``); the demo may re-run into its
    own folders (``overwrite``), the earlier record being kept beside the new one.
    """
    from .runner import check_config

    methods = [m.strip() for m in methods if m and m.strip()]
    if not methods:
        raise ConfigError(f"the demo needs at least one method, e.g. --methods {','.join(DEFAULT_METHODS)}")
    dup = sorted({m for m in methods if methods.count(m) > 1})
    if dup:
        raise ConfigError(f"method(s) {', '.join(map(repr, dup))} listed twice; list each method once")
    merged = {k: dict(v) for k, v in DEMO_PARAMS.items()}
    for k, v in (params or {}).items():
        merged[k] = {**merged.get(k, {}), **v}
    if bf16 is None:
        bf16 = bf16_is_fast()
    cells = []
    for i, label in enumerate(methods):
        matches = None
        if label.startswith(MATCHED):
            matches = label[len(MATCHED):]
            if matches not in methods[:i]:
                raise ConfigError(f"{label!r} skips at the rate {matches!r} realised, so {matches!r} must come "
                                  f"earlier in the list, e.g. --methods full,{matches},{label}")
            name, mparams = "random_skip", dict(merged["random_skip"])  # its rate is set after `matches` ran
        else:
            name, mparams = DEMO_LABELS.get(label, label), merged.get(label, {})
        cfg = RunConfig.from_dict({
            "data": {"name": dataset, "max_train": max_train, "max_test": max_test},
            "model": {"name": model},
            "train": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "bf16": bf16,
                      "threads": default_threads() if threads is None else threads, "seed": seed},
            "method": {"name": name, "params": mparams},
            "output_dir": str(out),
            "run_name": f"{dataset}-{model}-{label}-s{seed}".replace("/", "_").replace("@", "_at_"),
            "overwrite": True,
        })
        check_config(cfg)  # every name checked before the first run starts
        cells.append(DemoCell(label=label, config=cfg, matches=matches))
    return cells


def run_demo(
    cells: Sequence[DemoCell],
    *,
    progress: bool = False,
    on_start: Callable[[str, int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Train once per cell (from :func:`demo_configs`) and return one row per label (see :func:`summarise`).

    ``on_start(label, i, n)`` is called before each run (the CLI uses it for a status line).
    Rows carry ``speedup_vs_full`` (full's wall-clock / this method's) when ``full`` is among
    the methods, else ``None``. A ``random_skip@X`` cell skips at the rate X realised (1 - examples
    backpropagated / examples seen, from X's record).
    """
    from .runner import run

    rows: list[dict[str, Any]] = []
    for i, cell in enumerate(cells):
        cfg = cell.config
        if cell.matches is not None:
            target = next(r for r in rows if r["method"] == cell.matches)
            rate = min(max(target["skip_rate"], 0.0), 1.0 - 1e-6)
            cfg = RunConfig.from_dict({**cfg.to_dict(), "method": {"name": "random_skip", "params": {"rate": rate}}})
        log.info("demo %d/%d: %s", i + 1, len(cells), cell.label)
        if on_start is not None:
            on_start(cell.label, i, len(cells))
        row = summarise(run(cfg, progress=progress))
        row["method"] = cell.label
        rows.append(row)
    return add_speedup(rows)


def summarise(record: dict[str, Any]) -> dict[str, Any]:
    """One table row from a finished run record."""
    final = record.get("final") or {}
    counts = record.get("counts") or {}
    timings = record.get("timings") or {}
    cfg = record.get("config") or {}
    return {
        "method": (record.get("method") or {}).get("name") or cfg.get("method", {}).get("name"),
        "accuracy": final.get("accuracy"),
        "macro_f1": final.get("macro_f1"),
        "perplexity": final.get("perplexity"),
        "wall_clock_s": timings.get("wall_clock_s"),
        "examples_forwarded": counts.get("examples_forwarded"),
        "examples_backpropagated": counts.get("examples_backpropagated"),
        "optimizer_steps": counts.get("optimizer_steps"),
        "n_train": record.get("n_train"),
        "n_train_used": record.get("n_train_used"),
        "skip_rate": (1.0 - counts["examples_backpropagated"] / counts["examples_seen"])
        if counts.get("examples_seen") and counts.get("examples_backpropagated") is not None else None,
        "speedup_vs_full": None,
    }


def add_speedup(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fill ``speedup_vs_full`` (wall-clock of ``full`` / wall-clock of the row) in place."""
    full = next((r for r in rows if r.get("method") == "full"), None)
    base = full.get("wall_clock_s") if full else None
    for r in rows:
        w = r.get("wall_clock_s")
        r["speedup_vs_full"] = base / w if base and w else None
    return rows


_COLUMNS: list[tuple[str, str, str]] = [  # key, header, format
    ("method", "method", "{}"),
    ("accuracy", "accuracy", "{:.4f}"),
    ("macro_f1", "macro_f1", "{:.4f}"),
    ("perplexity", "perplexity", "{:.2f}"),
    ("wall_clock_s", "wall-clock s", "{:.2f}"),
    ("examples_forwarded", "fwd examples", "{:,}"),
    ("examples_backpropagated", "bwd examples", "{:,}"),
    ("optimizer_steps", "opt steps", "{:,}"),
    ("speedup_vs_full", "speed-up vs full", "{:.2f}x"),
]


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of demo rows; columns that are empty in every row are left out."""
    cols = [c for c in _COLUMNS if c[0] == "method" or any(r.get(c[0]) is not None for r in rows)]
    cells = [[h for _, h, _ in cols]]
    for r in rows:
        line = []
        for key, _, fmt in cols:
            v = r.get(key)
            line.append("-" if v is None else fmt.format(v))
        cells.append(line)
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]

    def render(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    out = [render(cells[0]), "  ".join("-" * w for w in widths)]
    out += [render(row) for row in cells[1:]]
    return "\n".join(out)


def verdict(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Sentences comparing each method with its ``random_skip@`` control (and with ``full``): which won
    the accuracy at the same budget, by how many points, and the wall-clock ratio. Pure."""
    by = {r["method"]: r for r in rows}
    full = by.get("full")
    out = []
    for r in rows:
        label = r["method"]
        if not label.startswith(MATCHED) or label[len(MATCHED):] not in by:
            continue
        m = by[label[len(MATCHED):]]
        if m.get("accuracy") is None or r.get("accuracy") is None:
            continue
        d = 100 * (m["accuracy"] - r["accuracy"])
        who = (f"{m['method']} beat random skipping at its budget by {d:.2f} accuracy points" if d > 0 else
               f"{m['method']} did not beat random skipping at its budget ({d:+.2f} accuracy points)")
        skip = m.get("skip_rate")
        line = who + ("" if skip is None else f" (both skipped the backward of about {100 * skip:.0f}% of the examples)")
        if m.get("wall_clock_s") and r.get("wall_clock_s"):
            line += f"; it took {m['wall_clock_s'] / r['wall_clock_s']:.2f}x random skipping's wall-clock"
        out.append(line + ".")
        if full is not None and full.get("accuracy") is not None and m.get("speedup_vs_full"):
            out.append(f"Against full fine-tuning: {100 * (m['accuracy'] - full['accuracy']):+.2f} accuracy points "
                       f"at {m['speedup_vs_full']:.2f}x its speed.")
    if out:
        out.append("One seed: differences of about a point are within seed-to-seed noise (BENCHMARKS.md has 3 seeds).")
    return out


__all__ = ["BEST_METHOD", "DEFAULT_METHODS", "DEMO_PARAMS", "DemoCell", "add_speedup", "bf16_is_fast",
           "cpu_has_native_bf16", "default_threads", "demo_configs", "format_table", "run_demo", "summarise",
           "verdict"]
