"""The README's main job: full fine-tuning vs. two cheap baselines, side by side.

:func:`demo_configs` builds one validated config per method and :func:`run_demo` trains the same
model on the same data once per config (``full``,
``random_subset`` at fraction 0.5 and ``random_skip`` at rate 0.5 by default) and returns one row
per method; :func:`format_table` turns the rows into a plain-text table. Nothing here prints:
progress goes to the ``datadiet`` logger and the CLI (``datadiet demo``) prints the table.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .config import RunConfig
from .errors import ConfigError

log = logging.getLogger(__name__)

#: Methods the demo knows how to parameterise, with the parameters it uses for each.
DEMO_PARAMS: dict[str, dict[str, Any]] = {
    "full": {},
    "random_subset": {"fraction": 0.5},
    "random_skip": {"rate": 0.5},
}
DEFAULT_METHODS: tuple[str, ...] = ("full", "random_subset", "random_skip")


def default_threads() -> int:
    """Torch threads the demo uses by default: 2, or fewer on a smaller machine."""
    return max(1, min(2, os.cpu_count() or 1))


def demo_configs(
    *,
    dataset: str = "rotten_tomatoes",
    model: str = "minilm",
    max_train: int | None = 4000,
    max_test: int | None = 1000,
    epochs: int = 1,
    batch_size: int = 16,
    lr: float = 1e-4,
    bf16: bool = True,
    threads: int | None = None,
    methods: Sequence[str] = DEFAULT_METHODS,
    out: str | Path = "runs/demo",
    seed: int = 0,
    params: dict[str, dict[str, Any]] | None = None,
) -> list[RunConfig]:
    """One validated :class:`RunConfig` per method (same data, model, seed and settings).

    ``params`` overrides the per-method parameters in :data:`DEMO_PARAMS`. Each run writes to
    ``out/<dataset>-<model>-<method>-s<seed>``; the demo may re-run into its own folders
    (``overwrite``), the earlier record being kept beside the new one.
    """
    from .runner import check_config

    methods = [m.strip() for m in methods if m and m.strip()]
    if not methods:
        raise ConfigError("the demo needs at least one method, e.g. --methods full,random_subset,random_skip")
    dup = sorted({m for m in methods if methods.count(m) > 1})
    if dup:
        raise ConfigError(f"method(s) {', '.join(map(repr, dup))} listed twice; list each method once")
    merged = {k: dict(v) for k, v in DEMO_PARAMS.items()}
    for k, v in (params or {}).items():
        merged[k] = {**merged.get(k, {}), **v}
    cfgs = []
    for m in methods:
        cfg = RunConfig.from_dict({
            "data": {"name": dataset, "max_train": max_train, "max_test": max_test},
            "model": {"name": model},
            "train": {"epochs": epochs, "batch_size": batch_size, "lr": lr, "bf16": bf16,
                      "threads": default_threads() if threads is None else threads, "seed": seed},
            "method": {"name": m, "params": merged.get(m, {})},
            "output_dir": str(out),
            "overwrite": True,
        })
        check_config(cfg)  # every name checked before the first run starts
        cfgs.append(cfg)
    return cfgs


def run_demo(
    cfgs: Sequence[RunConfig],
    *,
    progress: bool = False,
    on_start: Callable[[str, int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Train once per config (from :func:`demo_configs`) and return one row per method (see :func:`summarise`).

    ``on_start(method, i, n)`` is called before each run (the CLI uses it for a status line).
    Rows carry ``speedup_vs_full`` (full's wall-clock / this method's) when ``full`` is among
    the methods, else ``None``.
    """
    from .runner import run

    rows = []
    for i, cfg in enumerate(cfgs):
        log.info("demo %d/%d: %s", i + 1, len(cfgs), cfg.method.name)
        if on_start is not None:
            on_start(cfg.method.name, i, len(cfgs))
        rows.append(summarise(run(cfg, progress=progress)))
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


__all__ = ["DEFAULT_METHODS", "DEMO_PARAMS", "add_speedup", "default_threads", "demo_configs", "format_table",
           "run_demo", "summarise"]
