"""Run a suite: every cell in one sitting, resumable, one ``results.jsonl`` line per finished cell.

Resumption: a cell whose finished line is already in ``results.jsonl`` is skipped; a cell whose
run record says finished but whose line is missing (a crash between the two writes) gets its line
rebuilt from the record; anything else (never started, interrupted, failed) is run again from the
start. Finished results are never overwritten or removed.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import DataDietError
from ..records import FolderLock, read_record
from .report import guard_figures
from .suite import MATCH, Cell, Suite, portable_source
from .tta import compact_curve

log = logging.getLogger(__name__)
RESULTS = "results.jsonl"


def result_row(suite: Suite, cell: Cell, record: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """The ``results.jsonl`` line of a finished cell, from its run record.

    Multistage cells with the stage-2 guard also get ``guard``: its final figures
    (:func:`~datadiet.bench.report.guard_figures`); other cells have no such key. Cells with a
    learning curve (``train.eval_every``) get ``curve``: its points' steps, cumulative training
    seconds, evaluation seconds and metric as parallel lists (:func:`~datadiet.bench.tta.compact_curve`),
    for the report's time to accuracy."""
    counts = record.get("counts", {})
    guard = guard_figures(record)
    curve = compact_curve(record.get("curve"), record.get("metric"))
    t = record.get("timings", {})
    env = record.get("env", {})
    cfg = record.get("config", {})
    return {
        "suite": suite.name,
        "cell": cell.key,
        "dataset": cell.dataset.name,
        "model": cfg.get("model", {}).get("name"),
        "method": cell.method.name,
        "label": cell.method.label,
        "params": record.get("method", {}).get("params", cell.method.params),
        "seed": cell.seed,
        "metric": record.get("metric"),
        "value": record.get("value"),
        "macro_f1": record.get("final", {}).get("macro_f1"),
        "wall_clock_s": t.get("wall_clock_s"),
        "train_s": t.get("train_s"),
        "selection_s": t.get("selection_s"),
        "eval_s": t.get("eval_s"),
        "filter_s": t.get("filter_s"),
        "examples_seen": counts.get("examples_seen"),
        "examples_forwarded": counts.get("examples_forwarded"),
        "examples_backpropagated": counts.get("examples_backpropagated"),
        "optimizer_steps": counts.get("optimizer_steps"),
        "skipped": counts.get("skipped", {}),
        "n_train": record.get("n_train"),
        "n_train_used": record.get("n_train_used"),
        "epochs": cfg.get("train", {}).get("epochs"),
        "status": "finished",
        "run_dir": run_dir,
        "torch": env.get("torch"),
        "threads": env.get("torch_threads"),
        "cpu": env.get("cpu"),
        "device": env.get("device"),
        "finished_at": record.get("finished"),
        **({} if guard is None else {"guard": guard}),
        **({} if curve is None else {"curve": curve, "eval_subset": record.get("eval_subset")}),
    }


def read_results(out_dir: str | Path) -> list[dict[str, Any]]:
    """All parseable lines of ``results.jsonl`` (a truncated last line is ignored)."""
    p = Path(out_dir) / RESULTS
    rows = []
    if p.exists():
        for i, line in enumerate(p.read_text().splitlines()):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s line %d is not valid JSON (interrupted write?); ignored", p, i + 1)
    return rows


def finished_cells(out_dir: str | Path, suite_name: str) -> dict[str, dict[str, Any]]:
    """The last finished ``results.jsonl`` line of each cell of suite ``suite_name``, by cell key."""
    return {r["cell"]: r for r in read_results(out_dir) if r.get("status") == "finished" and r.get("suite") == suite_name}


def append_result(out_dir: Path, row: dict[str, Any]) -> None:
    p = out_dir / RESULTS
    # A previous crash may have left a partial line without newline: start on a fresh line.
    prefix = ""
    if p.exists() and p.stat().st_size > 0:
        with open(p, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                prefix = "\n"
    with open(p, "a") as fh:
        fh.write(prefix + json.dumps(row) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def realised_skip_rate(row: dict[str, Any]) -> float:
    """Share of incoming examples that were not backpropagated."""
    seen = row.get("examples_seen") or 0
    if not seen:
        raise DataDietError(f"cell {row.get('cell')} saw no examples; cannot match its skip rate")
    return 1.0 - (row.get("examples_backpropagated") or 0) / seen


def resolve_params(cell: Cell, finished: dict[str, dict[str, Any]]) -> dict[str, Any]:
    params = dict(cell.method.params)
    for k, v in params.items():
        if isinstance(v, str) and v.startswith(MATCH):
            target = f"{cell.dataset.name}/{v[len(MATCH):]}/s{cell.seed}"
            if target not in finished:
                raise DataDietError(f"cell {cell.key} matches {target}, which has not finished; run that cell first")
            rate = realised_skip_rate(finished[target])
            params[k] = min(max(rate, 0.0), 0.999)
    return params


def twin_cell(suite: Suite, cell: Cell, params: dict[str, Any], finished: dict[str, dict[str, Any]]) -> str | None:
    """The key of a finished cell of ``suite`` that runs exactly ``cell``'s configuration (same dataset,
    seed, base config, method and resolved parameters; only the label differs), or None.

    Such a cell is the same measurement: e.g. ``random_subset@ingenious_50`` and
    ``random_subset@data_diet_keep50`` are both a random half of the pool at the same seed. A finished
    cell's parameters are those its record ran with (its ``params``), so a matched rate compares as
    realised."""
    from ..methods.registry import build_method

    def plain(c: Cell, p: dict[str, Any]) -> Any:  # a config as its JSON line would hold it
        return json.loads(json.dumps(suite.cell_config(c, params=p).to_dict(), default=str))

    cfg = None
    for other in suite.cells():
        row = finished.get(other.key)
        if (other.key == cell.key or row is None or row.get("same_as") or other.seed != cell.seed
                or other.dataset.name != cell.dataset.name or other.method.name != cell.method.name):
            continue
        if cfg is None:  # every declared parameter, defaults included, as a record stores them
            cfg = plain(cell, build_method(cell.method.name, params).params())
        if plain(other, row.get("params") or {}) == cfg:
            return other.key
    return None


def _reuse(out: Path, suite: Suite, cell: Cell, twin_row: dict[str, Any]) -> dict[str, Any]:
    """Record ``cell`` as finished with its twin's result (:func:`twin_cell`): the twin's line under
    this cell's key and label, with ``same_as`` naming the twin (its ``run_dir`` stays the twin's)."""
    row = {**twin_row, "suite": suite.name, "cell": cell.key, "label": cell.method.label, "same_as": twin_row["cell"]}
    append_result(out, row)
    return row


def run_suite(
    suite: Suite,
    out_dir: str | Path,
    *,
    progress: bool = False,
    only: str | None = None,
    rerun: list[str] | None = None,
    on_cell: Callable[[Cell, str, dict[str, Any] | None], None] | None = None,
    run_fn: Callable[..., dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Run every unfinished cell of ``suite`` into ``out_dir``; return the finished rows.

    ``only``: a substring of the cell key (``dataset/label/sSEED``) to restrict the cells run.
    ``rerun``: substrings of cell keys to measure again even if finished (e.g. cells timed while
    the machine was busy): the earlier run folder is kept as ``sN.prev-<time>``, the earlier line
    stays in ``results.jsonl``, and the new line supersedes it (the report uses the last one).
    A cell whose configuration a finished cell already ran (:func:`twin_cell`; labels aside) is not run
    again: it gets that cell's result with ``same_as`` naming it, renewed at the end of any sitting that
    includes it after that cell was measured again (a cell named in ``rerun`` is measured itself).
    ``on_cell(cell, status, row)`` is called for each cell (status: skipped, recovered, reused,
    finished, failed). A failing cell is recorded as failed and the suite goes on.
    """
    from ..runner import run

    run_fn = run_fn or run
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataDietError(f"--out {str(out)!r} is a file; give a folder for the suite's results")
    with FolderLock(out, what="results folder", fix="give another --out"):
        return _run_suite(suite, out, progress=progress, only=only, rerun=rerun, on_cell=on_cell, run_fn=run_fn)


def _run_suite(suite: Suite, out: Path, *, progress, only, rerun, on_cell, run_fn) -> list[dict[str, Any]]:
    """The body of :func:`run_suite`, inside the claimed results folder."""
    (out / "suite.json").write_text(json.dumps({"name": suite.name, "source": portable_source(suite.source),
                                                "base": suite.base,
                                                "datasets": [d.__dict__ for d in suite.datasets],
                                                "methods": [m.__dict__ for m in suite.methods],
                                                "seeds": suite.seeds}, indent=1, default=str))
    finished = finished_cells(out, suite.name)
    cells = [c for c in suite.cells() if only is None or only in c.key]
    log.info("suite %s: %d cells, %d already finished", suite.name, len(cells), sum(c.key in finished for c in cells))
    for i, cell in enumerate(cells):
        remeasure = bool(rerun) and any(p in cell.key for p in rerun)
        if remeasure and cell.key in finished:
            rd = out / cell.run_dir
            if rd.exists():
                rd.rename(rd.with_name(f"{rd.name}.prev-{time.strftime('%Y%m%d-%H%M%S')}"))
            del finished[cell.key]
            log.info("re-measuring %s (earlier result kept)", cell.key)
        if cell.key in finished:
            if on_cell:
                on_cell(cell, "skipped", finished[cell.key])
            continue
        rd = out / cell.run_dir
        rec = read_record(rd)
        if rec is not None and rec.get("status") == "finished":
            row = result_row(suite, cell, rec, cell.run_dir)
            append_result(out, row)
            finished[cell.key] = row
            if on_cell:
                on_cell(cell, "recovered", row)
            continue
        t0 = time.perf_counter()
        try:
            params = resolve_params(cell, finished)
            twin = None if remeasure else twin_cell(suite, cell, params, finished)
            if twin is not None:
                finished[cell.key] = _reuse(out, suite, cell, finished[twin])
                log.info("%s has the configuration of %s, which has finished: its result is reused", cell.key, twin)
                if on_cell:
                    on_cell(cell, "reused", finished[cell.key])
                continue
            cfg = suite.cell_config(cell, params=params)
            cfg.overwrite = False
            log.info("[%d/%d] %s", i + 1, len(cells), cell.key)
            record = run_fn(cfg, progress=progress, run_dir=rd)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - one failing cell must not stop the grid
            log.error("cell %s failed: %s: %s", cell.key, type(e).__name__, e)
            append_result(out, {"suite": suite.name, "cell": cell.key, "dataset": cell.dataset.name,
                                "method": cell.method.name, "label": cell.method.label, "seed": cell.seed,
                                "params": cell.method.params, "status": "failed", "error": f"{type(e).__name__}: {e}",
                                "run_dir": cell.run_dir, "seconds": time.perf_counter() - t0})
            if on_cell:
                on_cell(cell, "failed", None)
            continue
        row = result_row(suite, cell, record, cell.run_dir)
        append_result(out, row)
        finished[cell.key] = row
        if on_cell:
            on_cell(cell, "finished", row)
    for cell in cells:  # a reused result follows its twin when that was measured again
        row = finished.get(cell.key) or {}
        twin = row.get("same_as")
        if twin in finished and finished[twin].get("finished_at") != row.get("finished_at"):
            finished[cell.key] = _reuse(out, suite, cell, finished[twin])
            if on_cell:
                on_cell(cell, "reused", finished[cell.key])
    return [finished[c.key] for c in cells if c.key in finished]
