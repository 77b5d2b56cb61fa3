"""Benchmark report: ``results.jsonl`` (+ run records) -> ``report.md`` and a self-contained ``report.html``.

The benchmark harness appends one JSON line per finished (or failed) cell to ``DIR/results.jsonl``
and keeps each cell's run folder with its ``record.json``. This module turns them into

* :func:`load_results` - the finished rows, the last finished line of each cell winning;
* :func:`summarize` - one row per (suite, dataset, method label): median quality and its spread,
  median wall-clock, speed-up and quality change against ``full`` of the same dataset and suite,
  fractions of examples forwarded / backpropagated relative to ``full``, the section's noise floor
  (half the min-max range of ``full``'s quality over seeds) and, for a method with a random control
  (a label ``R@X`` with ``R`` starting with ``random``, e.g. ``random_skip@X``: random skipping at X's
  realised rate, or ``random_subset@X``: a random subset of X's size), the comparison with it paired
  by seed and a verdict (:func:`control_verdict`);
* :func:`guard_figures` - the final figures of multistage's stage-2 guard from a run record (the
  harness copies them into the cell's ``results.jsonl`` line; older lines get them from the record);
* :func:`write_report` - ``report.md`` (tables) and ``report.html`` (tables + inline SVG plots, no
  network: no scripts, styles or fonts from elsewhere). The main table shows each Δ vs ``full`` with
  the noise floor beside it; sections with random controls get a table "Against random at the same
  budget" and one sentence per method in words. Sections with ``multistage`` cells get a
  table of the guard's figures (medians over seeds) and, in the HTML, its false-skip bound and
  effective skip rate over training. Sections where ``full`` and another method have timed learning
  curves get a time-to-accuracy table (:mod:`datadiet.bench.tta`: wall-clock to ``full``'s final
  quality minus 0.5 points, as a ratio to ``full``'s) and, in the HTML, a Pareto chart (quality
  against selection + cumulative training seconds, one line per method). Sections whose run folders hold data diet
  ``scores.json`` files also get a scores view (:mod:`datadiet.bench.scores_view`: per-class score
  histograms, the highest-scoring examples, the AUROC for planted label flips).

Only the standard library is imported here (the scores view, imported when a section has scores
files, and the paired Wilcoxon tests of :mod:`datadiet.bench.stats` use numpy); the rendering pieces
both share (formatting, the page skeleton, SVG axes) live in :mod:`datadiet.bench.render`. The
report never prints (it logs).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import re
import statistics
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

from .render import DASH, Scale, esc, fmt_count, html_page, md_escape, num, svg_open, trunc, write_atomic
from .tta import (TARGET_POINTS, accuracy_sd, cell_curve, compact_curve, curve_eval_size, prefix_curve, seed_on_cpu,
                  target_for, target_text, time_to_accuracy)

log = logging.getLogger(__name__)

RESULTS = "results.jsonl"
RECORD = "record.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
REFERENCE_METHOD = "full"

#: Metrics where a smaller number is better (everything else: larger is better).
LOWER_IS_BETTER = frozenset({"perplexity", "loss", "nll", "bits_per_byte", "bpb", "error", "error_rate"})

__all__ = ["load_results", "summarize", "write_report", "guard_figures", "control_target", "control_verdict",
           "noise_floor", "LOWER_IS_BETTER"]

#: The filter whose telemetry holds multistage's stage-2 guard (``record["filters"][GUARD_FILTER]["guard"]``).
GUARD_FILTER = "MetaPredictor"
#: The guard's final figures copied into a results line (from ``SkipGuard.telemetry``).
GUARD_FIGURES = ("state", "stage2_disabled_by_guard", "false_skip_estimate", "false_skip_bound", "limit", "target",
                 "effective_skip_rate", "evidence")


def guard_figures(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """Pure: the stage-2 guard's final figures from a run record, or None (no guard: another method, or
    multistage with ``guard=false``)."""
    tel = ((record or {}).get("filters") or {}).get(GUARD_FILTER)
    g = tel.get("guard") if isinstance(tel, dict) else None
    if not isinstance(g, dict):
        return None
    return {k: g.get(k) for k in GUARD_FIGURES}


def guard_history(record: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Pure: the guard's history rows (one per check) from a run record, as dicts by column name."""
    tel = ((record or {}).get("filters") or {}).get(GUARD_FILTER)
    g = tel.get("guard") if isinstance(tel, dict) else None
    h = g.get("history") if isinstance(g, dict) else None
    if not isinstance(h, dict) or not isinstance(h.get("columns"), list):
        return []
    cols = h["columns"]
    return [dict(zip(cols, row)) for row in h.get("rows") or [] if isinstance(row, list) and len(row) == len(cols)]


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def _results_path(path: str | Path) -> Path:
    p = Path(path)
    return p / RESULTS if p.is_dir() else p


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every parseable JSON object in the file, in order; blank and corrupt lines are skipped."""
    out: list[dict[str, Any]] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines, 1):
        s = line.strip()
        if not s:
            log.warning("%s:%d: blank line skipped", path, i)
            continue
        try:
            obj = json.loads(s)
        except json.JSONDecodeError as e:
            what = "truncated last line" if i == len(lines) else "corrupt line"
            log.warning("%s:%d: %s skipped (%s)", path, i, what, e)
            continue
        if not isinstance(obj, dict):
            log.warning("%s:%d: not a JSON object, skipped", path, i)
            continue
        out.append(obj)
    return out


def _label(r: dict[str, Any]) -> str:
    return str(r.get("label") or r.get("method") or "?")


def _cell_key(r: dict[str, Any]) -> tuple:
    suite = r.get("suite")
    if r.get("cell"):
        return (suite, r["cell"])
    return (suite, r.get("dataset"), _label(r), r.get("seed"))


def _last_per_cell(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the last row of each cell (at the position of that last row)."""
    rows = list(rows)
    last: dict[tuple, int] = {}
    for i, r in enumerate(rows):
        last[_cell_key(r)] = i
    return [r for i, r in enumerate(rows) if last[_cell_key(r)] == i]


def load_results(path: str | Path) -> list[dict[str, Any]]:
    """The finished rows of ``results.jsonl`` (a file, or a folder holding one).

    If a cell appears more than once, its last *finished* line wins. Blank, corrupt and
    truncated lines (a run killed mid-write) are skipped with a logged warning. Each returned
    row is a copy with ``label`` filled in (defaulting to ``method``).
    """
    p = _results_path(path)
    if not p.exists():
        raise FileNotFoundError(f"no benchmark results at {p}")
    return _finished(_read_jsonl(p))


def _finished(lines: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    finished = []
    for r in lines:
        if r.get("status") != "finished":
            continue
        r = dict(r)
        r["label"] = _label(r)
        finished.append(r)
    return _last_per_cell(finished)


def _failed_cells(lines: Iterable[dict[str, Any]], finished: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cells whose attempts all failed (their last failed line)."""
    done = {_cell_key(r) for r in finished}
    failed = [r for r in lines if r.get("status") == "failed" and _cell_key(r) not in done]
    return _last_per_cell(failed)


# ----------------------------------------------------------------------------------------------
# Summary (pure)
# ----------------------------------------------------------------------------------------------


def _values(rows: Iterable[dict[str, Any]], key: str) -> list[float]:
    return [f for f in (num(r.get(key)) for r in rows) if f is not None]


def _median(xs: Sequence[float]) -> float | None:
    return float(statistics.median(xs)) if xs else None


def _quantile(xs: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default)."""
    s = sorted(xs)
    pos = (len(s) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def higher_is_better(metric: str | None) -> bool:
    return (metric or "").lower() not in LOWER_IS_BETTER


def _groups(rows: Iterable[dict[str, Any]]) -> dict[tuple, dict[str, list[dict[str, Any]]]]:
    """(suite, dataset) -> label -> rows, all in order of first appearance."""
    g: dict[tuple, dict[str, list[dict[str, Any]]]] = {}
    for r in rows:
        g.setdefault((r.get("suite"), r.get("dataset")), {}).setdefault(_label(r), []).append(r)
    return g


def _reference_label(by_label: dict[str, list[dict[str, Any]]]) -> str | None:
    """The ``full`` label of a dataset: label ``full`` if present, else the first label of method ``full``."""
    if REFERENCE_METHOD in by_label and any(r.get("method", REFERENCE_METHOD) == REFERENCE_METHOD
                                            for r in by_label[REFERENCE_METHOD]):
        return REFERENCE_METHOD
    for label, rs in by_label.items():
        if any(r.get("method") == REFERENCE_METHOD for r in rs):
            return label
    return None


def _most_common(rows: Iterable[dict[str, Any]], key: str) -> Any:
    c = Counter(r.get(key) for r in rows if r.get(key) is not None)
    return c.most_common(1)[0][0] if c else None


def summarize(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (suite, dataset, label) of finished results (pure: reads nothing, changes nothing).

    Fields: ``suite``, ``dataset``, ``label``, ``method``, ``model``, ``metric``, ``higher_is_better``,
    ``n_seeds``, ``seeds``, ``median``/``min``/``max``/``iqr`` of the quality metric,
    ``median_macro_f1``, ``median_wall_clock_s`` (selection + training), ``median_train_s``,
    ``median_selection_s``, ``median_examples_backpropagated``, ``median_examples_forwarded``,
    ``median_optimizer_steps``, ``reference`` (the ``full`` label or None), and against that
    reference: ``speedup_vs_full`` and ``speedup_paired_seeds`` (:func:`_speedup`), ``quality_delta_vs_full``
    (this median - its median, sign as is), ``backprop_fraction_vs_full`` and
    ``forward_fraction_vs_full`` (ratios of medians). Comparisons are None without a reference.
    ``guard``: the stage-2 guard's final figures over the seeds whose rows carry them (a ``guard``
    entry, see :func:`guard_figures`): ``n_seeds``, ``median_false_skip_estimate``,
    ``median_false_skip_bound``, ``median_limit``, ``median_effective_skip_rate``, ``states``
    (state -> seeds) and ``disabled`` (seeds whose stage 2 the guard disabled); None when no seed has
    a guard. Medians: the mean of the two middle values for an even count.

    ``noise_floor`` (on every row of a section): half the min-max range over seeds of the reference's
    quality (:func:`noise_floor`; None without a reference or with fewer than 2 of its seeds).
    Random controls: a label ``R@X`` (``R`` starting with ``random``, see :func:`control_target`) whose
    ``X`` is a label of the same (suite, dataset) is X's control; its row gets ``controls``: ``X``
    (None on every other row; an ``@`` label whose ``X`` is absent is just a row). X's row gets
    ``vs_control`` (None without a control or with one in another metric; with several controls, the
    first in order of appearance):
    ``control`` (its label), ``n`` (seeds both have a value for), ``diffs`` (seed -> X - control, sign
    as is), ``median_diff``, ``wins`` (seeds where X is better in the metric's direction), ``same_as``
    (labels whose cells the control's results are, when the harness reused them),
    ``p_better``/``p_two_sided`` (exact Wilcoxon signed-rank, one-sided that X is better / two-sided;
    None under :data:`PAIRED_MIN_SEEDS` paired seeds) and ``verdict`` (:func:`control_verdict`).
    """
    rows = list(rows)
    label_of_cell = {r["cell"]: _label(r) for r in rows if r.get("cell")}
    out: list[dict[str, Any]] = []
    for (suite, dataset), by_label in _groups(rows).items():
        ref_label = _reference_label(by_label)
        metric = _most_common([r for rs in by_label.values() for r in rs], "metric")
        stats = {label: _label_stats(rs) for label, rs in by_label.items()}
        ref = stats.get(ref_label) if ref_label else None
        labels = list(by_label)
        if ref_label:
            labels.remove(ref_label)
            labels.insert(0, ref_label)
        floor = noise_floor(_values(by_label[ref_label], "value")) if ref_label else None
        controls = _controls(list(by_label))
        control_of: dict[str, str] = {}
        for c, x in controls.items():
            control_of.setdefault(x, c)
        for label in labels:
            s = stats[label]
            rs = by_label[label]
            same_metric = ref is not None and s["metric"] == ref["metric"]
            c = control_of.get(label)
            if c is not None and stats[c]["metric"] != s["metric"]:
                c = None  # a control measured in another metric does not pair
            row = {
                "suite": suite,
                "dataset": dataset,
                "label": label,
                "method": _most_common(rs, "method"),
                "model": _most_common(rs, "model"),
                "metric": s["metric"] or metric,
                "higher_is_better": higher_is_better(s["metric"] or metric),
                "reference": ref_label,
                "is_reference": label == ref_label,
                **{k: v for k, v in s.items() if k != "metric"},
                **_speedup(rs, by_label[ref_label] if ref_label else [], s, ref),
                "quality_delta_vs_full": (s["median"] - ref["median"]
                                          if same_metric and s["median"] is not None and ref["median"] is not None
                                          else None),
                "backprop_fraction_vs_full": (_ratio(s["median_examples_backpropagated"],
                                                     ref["median_examples_backpropagated"]) if ref else None),
                "forward_fraction_vs_full": (_ratio(s["median_examples_forwarded"], ref["median_examples_forwarded"])
                                             if ref else None),
                "paired_vs_full": (_paired_test(rs, by_label[ref_label])
                                   if same_metric and label != ref_label else None),
                "noise_floor": floor,
                "controls": controls.get(label),
                "vs_control": (_vs_control(rs, by_label[c], c, higher=higher_is_better(s["metric"] or metric),
                                           floor=floor, label_of_cell=label_of_cell) if c is not None else None),
            }
            out.append(row)
    return out


PAIRED_MIN_SEEDS = 5
#: A method "beats" its random control only from this many paired seeds on (one or two wins are not evidence).
BEATS_MIN_SEEDS = 3

#: A label ``R@X`` whose ``R`` starts with this is the random control of label ``X``.
CONTROL_PREFIX = "random"


def control_target(label: Any) -> str | None:
    """Pure: the label that ``label`` is the random control of - ``X`` of ``R@X`` where ``R`` starts
    with ``random`` (``random_skip@selective_backprop`` -> ``selective_backprop``) - or None."""
    r, sep, x = str(label).partition("@")
    return x if sep and x and r.startswith(CONTROL_PREFIX) else None


def _controls(labels: Sequence[str]) -> dict[str, str]:
    """control label -> the label it controls, for the controls whose target is among ``labels``."""
    out = {}
    for c in labels:
        x = control_target(c)
        if x is not None and x != c and x in labels:
            out[c] = x
    return out


def noise_floor(values: Sequence[float]) -> float | None:
    """Pure: the seed noise floor of a section - half the min-max range of the reference's quality over
    seeds - or None with fewer than 2 values."""
    return (max(values) - min(values)) / 2 if len(values) >= 2 else None


BEATS, DOES_NOT_BEAT, INCONCLUSIVE = "beats", "does not beat", "inconclusive"


def control_verdict(diffs: Sequence[float], *, higher_is_better: bool = True,
                    noise_floor: float | None = None) -> str:
    """Pure: a method against its random control, from the paired differences (method - control, one
    per seed, sign as is).

    ``"beats"`` when there are at least :data:`BEATS_MIN_SEEDS` paired seeds, every one a win (better
    in the metric's direction), and the median paired difference, in the metric's direction, is larger
    than the noise floor; ``"does not beat"`` when that median is 0 or worse; ``"inconclusive"``
    otherwise - fewer seeds, some seeds lost, a median inside the noise floor, an unknown noise floor
    (None), or no paired seeds.
    """
    d = [float(x) for x in diffs]
    if not d:
        return INCONCLUSIVE
    sign = 1.0 if higher_is_better else -1.0
    gain = sign * float(statistics.median(d))
    if gain <= 0:
        return DOES_NOT_BEAT
    if (len(d) >= BEATS_MIN_SEEDS and all(sign * x > 0 for x in d) and noise_floor is not None
            and gain > noise_floor):
        return BEATS
    return INCONCLUSIVE


def _seed_key(s: Any) -> tuple:
    return (str(type(s)), s)


def _vs_control(rs: list[dict[str, Any]], ctrl_rs: list[dict[str, Any]], control: str, *, higher: bool,
                floor: float | None, label_of_cell: dict[str, str] | None = None) -> dict[str, Any]:
    """A label against its random control, paired by seed (see :func:`summarize`). ``same_as``: the
    labels whose cells the control's results are (cells the harness did not run twice, their line's
    ``same_as``), in order; empty when the control was measured itself."""
    same = list(dict.fromkeys((label_of_cell or {}).get(r["same_as"], r["same_as"]) for r in ctrl_rs
                              if r.get("same_as")))
    mine, theirs = _seed_values(rs), _seed_values(ctrl_rs)
    common = sorted((k for k in mine if k is not None and k in theirs), key=_seed_key)
    diffs = {k: mine[k] - theirs[k] for k in common}
    d = list(diffs.values())
    p_better = p_two = None
    if len(common) >= PAIRED_MIN_SEEDS:
        p_better, p_two = _wilcoxon([mine[k] for k in common], [theirs[k] for k in common], higher=higher)
    return {"control": control, "n": len(common), "diffs": diffs, "median_diff": _median(d),
            "wins": sum((x > 0) if higher else (x < 0) for x in d), "p_better": p_better, "p_two_sided": p_two,
            "verdict": control_verdict(d, higher_is_better=higher, noise_floor=floor), "same_as": same}


def _speedup(rs: list[dict[str, Any]], ref_rs: list[dict[str, Any]], s: dict[str, Any],
             ref: dict[str, Any] | None) -> dict[str, Any]:
    """``speedup_vs_full`` and ``speedup_paired_seeds`` of a label against the reference.

    Where the label's cells and the reference's all ran on one CPU: the reference's median wall-clock
    over seeds / this label's (a ratio of medians), and ``speedup_paired_seeds`` None. Where they span
    several CPUs, a ratio of medians would divide one machine's time by another's, so instead: the
    median, over the seeds at which both ran on the same CPU, of the reference's wall-clock / this
    label's, and ``speedup_paired_seeds`` the number of those seeds (0, with no speed-up, when none pair).
    """
    if ref is None:
        return {"speedup_vs_full": None, "speedup_paired_seeds": None, "speedup_apart_seeds": 0}
    apart = _apart_seeds(rs, ref_rs)
    if len({seed_on_cpu(r)[1] for r in [*rs, *ref_rs]}) <= 1:
        return {"speedup_vs_full": _ratio(ref["median_wall_clock_s"], s["median_wall_clock_s"]),
                "speedup_paired_seeds": None, "speedup_apart_seeds": apart}
    full_at = {seed_on_cpu(r): num(r.get("wall_clock_s")) for r in ref_rs}
    ratios = [x for r in rs if seed_on_cpu(r) in full_at
              and (x := _ratio(full_at[seed_on_cpu(r)], num(r.get("wall_clock_s")))) is not None]
    return {"speedup_vs_full": _median(ratios), "speedup_paired_seeds": len(ratios), "speedup_apart_seeds": apart}


#: Two cells that finished more than this many hours apart ran in different sittings of the machine.
SITTING_GAP_H = 3.0


def _finished_time(r: dict[str, Any]) -> _dt.datetime | None:
    """A cell's ``finished_at`` as an aware datetime (no zone read as UTC), or None if absent or unreadable."""
    try:
        t = _dt.datetime.fromisoformat(str(r.get("finished_at")))
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=_dt.timezone.utc)


def _apart_txt(n: int) -> str:
    """How the speed-up and time-to-accuracy columns write :func:`_apart_seeds`' count."""
    return f"{n} >{SITTING_GAP_H:g} h apart"


def _apart_seeds(rs: list[dict[str, Any]], ref_rs: list[dict[str, Any]]) -> int:
    """How many of a label's cells finished more than :data:`SITTING_GAP_H` hours from the reference's
    cell at the same seed and CPU: their wall-clock ratio carries whatever the machine's speed did in
    between (a CPU of one name ran 8-20 % apart between sittings here). Cells without a readable
    ``finished_at`` do not count."""
    ref_at = {seed_on_cpu(r): _finished_time(r) for r in ref_rs}
    n = 0
    for r in rs:
        a, b = _finished_time(r), ref_at.get(seed_on_cpu(r))
        if a is not None and b is not None and abs((a - b).total_seconds()) > SITTING_GAP_H * 3600:
            n += 1
    return n


def _paired_test(rs: list[dict[str, Any]], ref_rs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Exact Wilcoxon signed-rank test of this label's metric against the reference's, paired by seed.

    ``None`` with fewer than :data:`PAIRED_MIN_SEEDS` common seeds (too few for any p < 0.05).
    ``p_better``: the one-sided p that this label beats the reference (in the metric's direction).
    """
    mine, ref = _seed_values(rs), _seed_values(ref_rs)
    common = sorted((k for k in mine if k in ref), key=str)
    if len(common) < PAIRED_MIN_SEEDS:
        return None
    a, b = [mine[k] for k in common], [ref[k] for k in common]
    higher = higher_is_better(_most_common(rs, "metric"))
    better, two_sided = _wilcoxon(a, b, higher=higher)
    wins = sum((x > y) if higher else (x < y) for x, y in zip(a, b))
    return {"n": len(common), "wins": int(wins), "p_better": better, "p_two_sided": two_sided}


def _seed_values(rs: list[dict[str, Any]]) -> dict[Any, float]:
    """seed -> the numeric metric value of the rows that have one (the pairing both paired tests use)."""
    return {r.get("seed"): v for r in rs if (v := num(r.get("value"))) is not None}


def _wilcoxon(a: list[float], b: list[float], *, higher: bool) -> tuple[float, float]:
    """(one-sided p that ``a`` is better than ``b`` in the metric's direction, two-sided p), exact Wilcoxon
    signed-rank on the pairs."""
    from .stats import wilcoxon_signed_rank

    w = wilcoxon_signed_rank(a, b)
    return (w.p_greater if higher else w.p_less), w.p_two_sided


def _label_stats(rs: list[dict[str, Any]]) -> dict[str, Any]:
    q = _values(rs, "value")
    seeds = sorted({r.get("seed") for r in rs if r.get("seed") is not None}, key=_seed_key)
    return {
        "metric": _most_common(rs, "metric"),
        "n_seeds": len(rs),
        "seeds": seeds,
        "median": _median(q),
        "min": min(q) if q else None,
        "max": max(q) if q else None,
        "iqr": _quantile(q, 0.75) - _quantile(q, 0.25) if len(q) >= 2 else None,
        "median_macro_f1": _median(_values(rs, "macro_f1")),
        "median_wall_clock_s": _median(_values(rs, "wall_clock_s")),
        "median_train_s": _median(_values(rs, "train_s")),
        "median_selection_s": _median(_values(rs, "selection_s")),
        "median_examples_backpropagated": _median(_values(rs, "examples_backpropagated")),
        "median_examples_forwarded": _median(_values(rs, "examples_forwarded")),
        "median_optimizer_steps": _median(_values(rs, "optimizer_steps")),
        "guard": _guard_stats(rs),
    }


def _guard_stats(rs: list[dict[str, Any]]) -> dict[str, Any] | None:
    gs = [r["guard"] for r in rs if isinstance(r.get("guard"), dict)]
    if not gs:
        return None
    return {
        "n_seeds": len(gs),
        **{f"median_{k}": _median(_values(gs, k))
           for k in ("false_skip_estimate", "false_skip_bound", "limit", "effective_skip_rate")},
        "states": dict(Counter(str(g.get("state") or "?") for g in gs)),
        "disabled": sum(bool(g.get("stage2_disabled_by_guard")) for g in gs),
    }


# ----------------------------------------------------------------------------------------------
# Formatting
# ----------------------------------------------------------------------------------------------


def _fmt(v: Any, digits: int, suffix: str = "", signed: bool = False) -> str:
    f = num(v)
    if f is None:
        return DASH
    s = f"{f:+.{digits}f}" if signed else f"{f:.{digits}f}"
    return s + suffix


def _direction(metric: str | None) -> str:
    return "higher is better" if higher_is_better(metric) else "lower is better"


def _columns(srows: Sequence[dict[str, Any]]) -> list[tuple[str, Any]]:
    """(header, row -> text) for a dataset's summary table (Markdown and HTML share them)."""
    metric = srows[0]["metric"] if srows else None
    m = metric or "quality"
    f1 = any(s["median_macro_f1"] is not None for s in srows)
    arrow = "↑" if higher_is_better(metric) else "↓"
    return [
        ("method label", lambda s: s["label"]),
        ("seeds", lambda s: str(s["n_seeds"])),
        (f"{m} median {arrow} ({_direction(metric)})", lambda s: _fmt(s["median"], 4)),
        ("min – max", lambda s: DASH if s["min"] is None else f"{_fmt(s['min'], 4)} – {_fmt(s['max'], 4)}"),
        ("IQR", lambda s: _fmt(s["iqr"], 4)),
        *([("macro-F1 median", lambda s: _fmt(s["median_macro_f1"], 4))] if f1 else []),
        ("wall-clock s median", lambda s: _fmt(s["median_wall_clock_s"], 1)),
        ("speed-up vs full", _speedup_txt),
        (f"Δ {m} vs full ({_direction(metric)}"
         + ("; ± noise floor)" if any(s.get("noise_floor") is not None for s in srows) else ")"), _delta_txt),
        ("backprop fraction vs full", lambda s: _fmt(s["backprop_fraction_vs_full"], 2)),
        ("forward fraction vs full", lambda s: _fmt(s["forward_fraction_vs_full"], 2)),
        ("optimizer steps median", lambda s: fmt_count(s["median_optimizer_steps"])),
        *([("paired vs full: wins, p (Wilcoxon)", _paired_txt)] if any(s.get("paired_vs_full") for s in srows) else []),
    ]


def _speedup_txt(s: dict[str, Any]) -> str:
    """The speed-up, followed by `` (n paired)`` where it is a median of per-seed ratios (see :func:`_speedup`)."""
    t = _fmt(s["speedup_vs_full"], 2, "x")
    n, apart = s.get("speedup_paired_seeds"), s.get("speedup_apart_seeds") or 0
    notes = ([] if n is None else [f"{n} paired"]) + ([_apart_txt(apart)] if apart else [])
    return f"{t} ({'; '.join(notes)})" if notes else t


def _delta_txt(s: dict[str, Any]) -> str:
    """Δ vs full, followed by `` (±floor)`` when the section's noise floor is known."""
    t = _fmt(s["quality_delta_vs_full"], 4, signed=True)
    if t != DASH and s.get("noise_floor") is not None:
        t += f" (±{_fmt(s['noise_floor'], 4)})"
    return t


def _paired_txt(s: dict[str, Any]) -> str:
    t = s.get("paired_vs_full")
    if not t:
        return DASH
    return f"{t['wins']}/{t['n']}, one-sided {t['p_better']:.3g}, two-sided {t['p_two_sided']:.3g}"


CONTROLS_HEADING = "Against random at the same budget"
CONTROLS_NOTE = ("Each method against its random control at the same budget (random_skip@X: random skipping "
                 "at X's realised rate, matched per seed; random_subset@X: a random subset of X's size), paired "
                 "by seed (a control marked = Y is the same configuration as Y's cells, measured once and "
                 "reused); Δ = method − control, sign as is; wins: seeds where the method is better in the "
                 f"metric's direction; p: exact Wilcoxon signed-rank test, two-sided, from {PAIRED_MIN_SEEDS} "
                 f"paired seeds on. Verdict: beats when at least {BEATS_MIN_SEEDS} seeds are paired, every one a "
                 "win, and the median paired Δ is larger than the noise floor (± beside Δ vs full); does not "
                 "beat when the median paired Δ is 0 or worse in the metric's direction; inconclusive otherwise.")


def _control_srows(srows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The summary rows of a section that have a random control."""
    return [s for s in srows if s.get("vs_control")]


def _accuracy_like(srows: Sequence[dict[str, Any]]) -> bool:
    """Whether a section's differences read as points (100 x): a higher-is-better metric with every value in [0, 1]."""
    vals = [v for s in srows for v in (s.get("min"), s.get("max")) if v is not None]
    return bool(vals) and bool(srows[0].get("higher_is_better")) and all(0.0 <= v <= 1.0 for v in vals)


def _amount(d: float, metric: str, points: bool) -> str:
    """A signed difference in words: points (100 x) of an accuracy-like metric, else the metric's own units."""
    return f"{100 * d:+.2f} points of {metric}" if points else f"{d:+.4f} {metric}"


def _floor_txt(floor: float | None, metric: str, points: bool) -> str:
    if floor is None:
        return "unknown (fewer than 2 seeds of full)"
    return f"{100 * floor:.2f} points" if points else f"{floor:.4f} {metric}"


def _control_sentence(s: dict[str, Any], points: bool) -> str:
    """One sentence in words: the method against its random control."""
    v = s["vs_control"]
    x, c, n, w = s["label"], v["control"], v["n"], v["wins"]
    metric = s["metric"] or "quality"
    if n == 0 or v["median_diff"] is None:
        return f"{x} against {c}: no seed has a value for both, so no comparison."
    seeds = f"{n} seed{'s' if n != 1 else ''}"
    amount = _amount(v["median_diff"], metric, points)
    wins = f"{w} of {n} wins"
    floor = _floor_txt(s.get("noise_floor"), metric, points)
    units = "" if points else f"; {metric} in its own units, {_direction(metric)}"
    if v["verdict"] == BEATS:
        return (f"{x} beats {c} by a median paired difference of {amount} over {seeds} "
                f"({wins}; noise floor {floor}{units}).")
    if v["verdict"] == DOES_NOT_BEAT:
        return f"{x} does not beat {c}: median paired difference {amount} over {seeds} ({wins}{units})."
    if w < n:
        why = "not every seed is a win"
    elif n < BEATS_MIN_SEEDS:
        why = f"fewer than {BEATS_MIN_SEEDS} seeds"
    elif s.get("noise_floor") is None:
        why = f"the noise floor is {floor}"
    else:
        why = f"not larger than the noise floor of {floor}"
    return f"{x} against {c} is inconclusive: median paired difference {amount} over {seeds} ({wins}; {why}{units})."


def _control_columns(srows: Sequence[dict[str, Any]]) -> list[tuple[str, Any]]:
    """(header, summary row -> text) for the table against random (Markdown and HTML share them)."""
    m = (srows[0]["metric"] if srows else None) or "quality"

    def p(s: dict[str, Any]) -> str:
        t = s["vs_control"]["p_two_sided"]
        return f"n<{PAIRED_MIN_SEEDS}" if t is None else f"{t:.3g}"

    return [
        ("method label", lambda s: s["label"]),
        ("random control", lambda s: s["vs_control"]["control"] + "".join(
            f" (= {x})" for x in s["vs_control"].get("same_as") or [])),
        ("paired seeds", lambda s: str(s["vs_control"]["n"])),
        (f"median paired Δ {m}", lambda s: _fmt(s["vs_control"]["median_diff"], 4, signed=True)),
        ("wins", lambda s: f"{s['vs_control']['wins']}/{s['vs_control']['n']}"),
        ("per-seed Δ", lambda s: ", ".join(f"s{k} {d:+.4f}" for k, d in s["vs_control"]["diffs"].items()) or DASH),
        ("p (two-sided)", p),
        ("verdict", lambda s: s["vs_control"]["verdict"]),
    ]


GUARD_NOTE = ("Stage-2 guard (multistage): the guard's figures at the end of training, medians over seeds. "
              "False-skip estimate: the share of the last held-out predicted-unimportant examples (those it skips "
              "or would skip, measured anyway) whose loss was above tau; bound: its one-sided upper confidence "
              "bound; limit: the smaller of the guard target and "
              "the lower bound of the kept examples' important rate; stage 2 skips only while bound ≤ limit. "
              "Effective skip rate: the probability that a predicted-unimportant example is skipped. "
              f"{DASH}: no guard (guard=false).")


def _guard_srows(srows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The summary rows of a section that belong in its guard table: multistage labels and any with a guard."""
    return [s for s in srows if s.get("method") == "multistage" or s.get("guard")]


def _states_txt(g: dict[str, Any] | None) -> str:
    if not g:
        return DASH
    states = sorted(g["states"].items(), key=lambda kv: (-kv[1], kv[0]))
    if len(states) == 1:
        return states[0][0]
    return ", ".join(f"{k} {n}" for k, n in states)


def _disabled_txt(g: dict[str, Any] | None) -> str:
    if not g:
        return DASH
    d, n = g["disabled"], g["n_seeds"]
    return "no" if d == 0 else "yes" if d == n else f"{d} of {n} seeds"


def _guard_columns() -> list[tuple[str, Any]]:
    """(header, summary row -> text) for the guard table (Markdown and HTML share them)."""
    def med(key: str, digits: int):
        return lambda s: _fmt((s.get("guard") or {}).get(f"median_{key}"), digits)

    return [
        ("method label", lambda s: s["label"]),
        ("guarded seeds", lambda s: str(s["guard"]["n_seeds"]) if s.get("guard") else DASH),
        ("false-skip estimate", med("false_skip_estimate", 3)),
        ("false-skip bound", med("false_skip_bound", 3)),
        ("limit", med("limit", 3)),
        ("effective skip rate", med("effective_skip_rate", 3)),
        ("state", lambda s: _states_txt(s.get("guard"))),
        ("stage 2 disabled by guard", lambda s: _disabled_txt(s.get("guard"))),
    ]


def _tta_sections(rows: list[dict[str, Any]], summary: list[dict[str, Any]],
                  records: dict[int, dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """(suite, dataset) -> its time to accuracy, for sections where ``full`` and at least one other
    method have timed learning curves: ``rows`` (:func:`~datadiet.bench.tta.time_to_accuracy`),
    ``metric``, ``higher_is_better``, ``reference`` and ``without`` (finished cells with no timed curve,
    left out: no ``train.eval_every``, or records from before curves carried times)."""
    out: dict[tuple, dict[str, Any]] = {}
    groups = _groups(rows)
    for (suite, dataset), srows in _by_section(summary).items():
        ref = srows[0]["reference"]
        by_label = groups.get((suite, dataset), {})
        if not ref or ref not in by_label:
            continue
        higher = srows[0]["higher_is_better"]
        t = time_to_accuracy(by_label, ref, higher_is_better=higher, records=records)
        if not any(x["label"] != ref for x in t):
            continue
        for x in t:  # a time ratio across sittings carries the machine's drift as a speed-up does
            counted = {p["seed"] for p in x["per_seed"]}
            x["apart"] = _apart_seeds([r for r in by_label[x["label"]] if r.get("seed") in counted], by_label[ref])
        without = sum(cell_curve(r, records.get(id(r))) is None for rs in by_label.values() for r in rs)
        prefix = sum(prefix_curve(r, records.get(id(r))) for rs in by_label.values() for r in rs)
        out[(suite, dataset)] = {"rows": t, "metric": srows[0]["metric"], "higher_is_better": higher,
                                 "reference": ref, "without": without, "prefix": prefix,
                                 "noise": _curve_noise(by_label[ref], records, srows[0]["metric"])}
    return out


def _curve_noise(ref_rows: list[dict[str, Any]], records: dict[int, dict[str, Any]],
                 metric: str | None) -> dict[str, float] | None:
    """For accuracy: how many test examples ``full``'s intermediate evaluations read and one such
    evaluation's binomial standard deviation at the target (medians over seeds), or None when no
    record says (or the metric is not an accuracy). Cells whose curve counts by its final point only
    (prefix-read) are left out."""
    if metric != "accuracy":
        return None
    ns, sds = [], []
    for r in ref_rows:
        rec = records.get(id(r))
        n, final = curve_eval_size(rec), num(r.get("value"))
        if n is None or final is None or not 0.0 <= final <= 1.0 or prefix_curve(r, rec):
            continue
        ns.append(n)
        sds.append(accuracy_sd(max(target_for(final, higher_is_better=True), 0.0), n))
    if not ns:
        return None
    return {"n": float(statistics.median(ns)), "sd": float(statistics.median(sds))}


def _tta_note(part: dict[str, Any]) -> str:
    metric = part["metric"] or "quality"
    note = (f"Time to accuracy: the wall-clock (selection + cumulative training seconds, evaluation excluded) "
            f"at the first evaluation that reaches the target, {target_text(metric, higher_is_better=part['higher_is_better'])}; "
            "evaluations are the learning curve's (every train.eval_every optimizer steps, or examples seen with train.eval_by: examples; possibly on a test subset) "
            "and the final one. Time: median over seeds; ratio: median over seeds of the method's time / full's time "
            "at the same seed (below 1 is faster). A seed that never reaches the target counts as infinitely slow: "
            "'not reached' when the median lands on one.")
    if part["without"]:
        note += f" {part['without']} finished cell(s) without a timed learning curve are left out."
    noise = part.get("noise")
    if noise:
        sd_pts = 100 * noise["sd"]
        note += (f" full's intermediate evaluations read {noise['n']:,.0f} test examples: at the target one "
                 f"evaluation's binomial standard deviation is about {sd_pts:.2f} points")
        if 2 * noise["sd"] > TARGET_POINTS:
            note += (f", so a curve on its plateau crosses a target {TARGET_POINTS * 100:g} points below full's "
                     "final early or late by chance: a ratio near 1, or one resting on a single crossing, does "
                     "not separate a method from full; the whole-run quality and wall-clock above are the firmer "
                     "figures.")
        else:
            note += "."
    if part.get("prefix"):
        note += (f" {part['prefix']} cell(s) evaluated their learning curve on the test split's first "
                 "train.eval_max_examples examples (records from before the evenly spaced evaluation subset; "
                 "on a class-ordered split that prefix covers a few classes): only their final evaluation counts.")
    return note


NOT_REACHED = "not reached"


def _tta_columns() -> list[tuple[str, Any]]:
    def secs(x: dict[str, Any]) -> str:
        return NOT_REACHED if x["median_time_s"] is None else _fmt(x["median_time_s"], 1)

    def ratio(x: dict[str, Any]) -> str:
        return NOT_REACHED if x["median_ratio"] is None else _fmt(x["median_ratio"], 2, "x")

    return [("method label", lambda x: x["label"]),
            ("time to target s (median)", secs),
            ("ratio to full (median)", ratio),
            ("seeds reached / seeds", lambda x: f"{x['reached']} / {x['seeds']}"
             + (f" ({_apart_txt(x['apart'])})" if x.get("apart") else ""))]


def _uniq(rows: Iterable[dict[str, Any]], key: str) -> list[str]:
    seen: dict[str, None] = {}
    for r in rows:
        v = r.get(key)
        if v is not None and v != "":
            seen.setdefault(str(v), None)
    return list(seen)


def _machine(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    items = [("torch", ", ".join(_uniq(rows, "torch")) or DASH),
             ("threads", ", ".join(_uniq(rows, "threads")) or DASH),
             ("device", ", ".join(_uniq(rows, "device")) or DASH)]
    items += _cpu_items(rows)
    items.append(("models", ", ".join(_uniq(rows, "model")) or DASH))
    fin = sorted(_uniq(rows, "finished_at"))
    if fin:
        items.append(("runs finished", fin[0] if len(fin) == 1 else f"{fin[0]} … {fin[-1]}"))
    return items


MIXED_MACHINES = ("these cells ran on more than one CPU (or some on one not recorded). Where a method's cells "
                  "or full's span CPUs, its speed-up vs full is not a ratio of medians but the median over seeds "
                  "of full's wall-clock / the method's where both ran on the same CPU, with the number of such "
                  "seeds beside it ('n paired'); time to accuracy pairs the same way. Compare any other "
                  "wall-clock only between cells that ran on one CPU")


def _cpu_items(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """The header's CPU line, and a warning when the cells' wall-clock comes from several CPUs.

    Nothing for results written before the CPU was recorded (no row names one), so older reports
    regenerate unchanged.
    """
    cpus = _uniq(rows, "cpu")
    if not cpus:
        return []
    missing = sum(1 for r in rows if r.get("cpu") in (None, ""))
    txt = ", ".join(cpus) + (f"; not recorded for {missing} of {len(rows)} cells" if missing else "")
    items = [("cpu", txt)]
    if len(cpus) > 1 or missing:
        items.append(("wall-clock", MIXED_MACHINES))
    return items


HOW_TO_READ = [
    "Quality is the median over seeds of the final test metric; min – max and IQR show the spread over seeds.",
    "Wall-clock is everything the method costs: selection (scoring, pruning) plus training including the "
    "per-batch filtering; evaluation is not included.",
    "Speed-up vs full = median wall-clock of `full` / median wall-clock of the method, both measured in the "
    "same suite on the same machine (the header's cpu line warns where cells ran on several); fractions are "
    "ratios of medians of examples backpropagated / forwarded.",
    f"'k >{SITTING_GAP_H:g} h apart' beside a speed-up or a time-to-accuracy seed count: at k seeds the "
    "method's cell finished more than "
    f"{SITTING_GAP_H:g} hours from full's, "
    "in another sitting of the machine; one CPU's speed can drift between sittings (8-20 % measured on one "
    "model), so those seeds' ratios carry that drift.",
    "Δ vs full = method median − full median, sign as is: for accuracy positive is better, for perplexity "
    "negative is better.",
    "Noise floor (± beside Δ vs full): the seed-to-seed spread of `full`, half the min-max range of its quality "
    "over seeds; a Δ inside it is not distinguishable from seed noise, and since runs seed dropout too, two runs "
    "of the same seed and config are bit-identical on one machine, so the seeds are the noise that remains.",
    "Time to accuracy (where `full` and other methods have learning curves, train.eval_every): the wall-clock "
    "at which a method's evaluations first reach `full`'s final quality minus 0.5 points (perplexity: times "
    "1.005), as a ratio to `full`'s time at the same seed; the chart draws quality against that wall-clock.",
    "With few seeds the spread is a rough guide, not a confidence interval.",
]


def _section_title(suite: Any, dataset: Any, multi_suite: bool) -> str:
    name = "(no dataset)" if dataset is None else str(dataset)
    return f"{name} ({suite})" if multi_suite else name


# ----------------------------------------------------------------------------------------------
# Markdown
# ----------------------------------------------------------------------------------------------


def _markdown(title: str, rows: list[dict[str, Any]], summary: list[dict[str, Any]],
              failed: list[dict[str, Any]], generated: str, scores: dict[tuple, Any] | None = None,
              tta: dict[tuple, dict[str, Any]] | None = None) -> str:
    suites = _uniq(rows, "suite")
    out = [f"# {md_escape(title)}", ""]
    out.append(f"- suite: {', '.join(md_escape(s) for s in suites) or DASH}")
    out.append(f"- generated: {generated}")
    for k, v in _machine(rows):
        out.append(f"- {k}: {md_escape(v)}")
    out.append(f"- finished cells: {len(rows)}" + (f"; failed cells: {len(failed)}" if failed else ""))
    out.append("")
    if not summary:
        out += ["No finished results.", ""]
    multi = len(suites) > 1
    for (suite, dataset), srows in _by_section(summary).items():
        metric = srows[0]["metric"]
        model = ", ".join(_uniq(srows, "model"))
        out.append(f"## {md_escape(_section_title(suite, dataset, multi))}")
        out.append("")
        out.append(f"model: {md_escape(model or DASH)}; metric: {md_escape(metric or DASH)} ({_direction(metric)})"
                   + ("" if srows[0]["reference"] else "; no `full` rows, so no comparison with full"))
        out.append("")
        cols = _columns(srows)
        out.append("| " + " | ".join(h for h, _ in cols) + " |")
        out.append("|" + "|".join([":---"] + ["---:"] * (len(cols) - 1)) + "|")
        for s in srows:
            out.append("| " + " | ".join(md_escape(f(s)) if i == 0 else f(s) for i, (_, f) in enumerate(cols)) + " |")
        out.append("")
        guarded = _guard_srows(srows)
        if guarded:
            gcols = _guard_columns()
            out += [GUARD_NOTE, ""]
            out.append("| " + " | ".join(h for h, _ in gcols) + " |")
            out.append("|" + "|".join([":---"] + ["---:"] * (len(gcols) - 3) + [":---", ":---"]) + "|")
            for s in guarded:
                out.append("| " + " | ".join(md_escape(f(s)) for _, f in gcols) + " |")
            out.append("")
        controlled = _control_srows(srows)
        if controlled:
            ccols = _control_columns(srows)
            points = _accuracy_like(srows)
            out += [f"### {CONTROLS_HEADING}", "", md_escape(CONTROLS_NOTE), ""]
            out.append("| " + " | ".join(h for h, _ in ccols) + " |")
            out.append("|" + "|".join([":---", ":---"] + ["---:"] * (len(ccols) - 4) + [":---", ":---"]) + "|")
            for s in controlled:
                out.append("| " + " | ".join(md_escape(f(s)) if i < 2 else f(s) for i, (_, f) in enumerate(ccols))
                           + " |")
            out.append("")
            out += [f"- {md_escape(_control_sentence(s, points))}" for s in controlled] + [""]
        t = (tta or {}).get((suite, dataset))
        if t is not None:
            tcols = _tta_columns()
            out += ["### Time to accuracy", "", md_escape(_tta_note(t)), ""]
            out.append("| " + " | ".join(h for h, _ in tcols) + " |")
            out.append("|" + "|".join([":---"] + ["---:"] * (len(tcols) - 1)) + "|")
            for x in t["rows"]:
                out.append("| " + " | ".join(md_escape(f(x)) if i == 0 else f(x) for i, (_, f) in enumerate(tcols))
                           + " |")
            out.append("")
        part = (scores or {}).get((suite, dataset))
        if part is not None:
            from .scores_view import markdown_part

            out += markdown_part(part)
    if failed:
        out += ["## Failed cells", ""]
        for r in failed:
            err = " ".join(str(r.get("error") or "").split())[:300]
            out.append(f"- {md_escape(r.get('cell') or _cell_key(r))}: {md_escape(err) or 'no error message'}")
        out.append("")
    out += ["## How to read", ""] + [f"- {t}" for t in HOW_TO_READ] + [""]
    return "\n".join(out)


def _by_section(summary: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    g: dict[tuple, list[dict[str, Any]]] = {}
    for s in summary:
        g.setdefault((s["suite"], s["dataset"]), []).append(s)
    return g


# ----------------------------------------------------------------------------------------------
# SVG plots
# ----------------------------------------------------------------------------------------------

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#bcbd22", "#7f7f7f", "#393b79", "#ad494a", "#637939", "#e6550d", "#7b4173", "#3182bd"]
REF_COLOR = "#222222"


def _colors(summary: list[dict[str, Any]]) -> dict[str, str]:
    """One colour per method label across the whole report (``full`` in near-black)."""
    out: dict[str, str] = {}
    i = 0
    for s in summary:
        label = s["label"]
        if label in out:
            continue
        if s["is_reference"] and REF_COLOR not in out.values():
            out[label] = REF_COLOR
        else:
            out[label] = PALETTE[i % len(PALETTE)]
            i += 1
    return out


def _svg(
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    points: list[dict[str, Any]] = (),  # type: ignore[assignment]
    lines: list[dict[str, Any]] = (),  # type: ignore[assignment]
    hlines: list[dict[str, Any]] = (),  # type: ignore[assignment]
    legend: list[tuple[str, str, str]] = (),  # type: ignore[assignment]  (label, colour, marker)
    xlog: bool = False,
    ylog: bool = False,
    yfixed: tuple[float, float] | None = None,
    kind: str = "",
    width: int = 700,
    height: int = 380,
) -> str:
    """An inline SVG scatter/line plot.

    points: {x, y, color, r, tip, median: bool}; lines: {xy: [(x, y)], color, tip, width, dash};
    hlines: {y, color, text}. All text is escaped here.
    """
    leg_w = 232 if legend else 16
    left, right, top, bottom = 70, width - leg_w, 40, height - 54
    xs = [p["x"] for p in points] + [x for ln in lines for x, _ in ln["xy"]]
    ys = [p["y"] for p in points] + [y for ln in lines for _, y in ln["xy"]] + [h["y"] for h in hlines]
    sx = Scale(xs, left, right, log=xlog)
    sy = Scale(ys, bottom, top, log=ylog, fixed=yfixed)
    o = svg_open(kind, title, width=width, height=height, left=left, title_y=22, title_size=14, title_chars=80)
    # grid + ticks
    for v, t in sx.ticks(6):
        px = sx(v)
        o.append(f'<line x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{bottom}" stroke="#e6e6e6"/>')
        o.append(f'<line x1="{px:.1f}" y1="{bottom}" x2="{px:.1f}" y2="{bottom + 5}" stroke="#444"/>')
        o.append(f'<text x="{px:.1f}" y="{bottom + 18}" font-size="11" text-anchor="middle" fill="#333">{esc(t)}</text>')
    for v, t in sy.ticks(5):
        py = sy(v)
        o.append(f'<line x1="{left}" y1="{py:.1f}" x2="{right}" y2="{py:.1f}" stroke="#e6e6e6"/>')
        o.append(f'<line x1="{left - 5}" y1="{py:.1f}" x2="{left}" y2="{py:.1f}" stroke="#444"/>')
        o.append(f'<text x="{left - 8}" y="{py + 4:.1f}" font-size="11" text-anchor="end" fill="#333">{esc(t)}</text>')
    o.append(f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" stroke="#444"/>')
    o.append(f'<text x="{(left + right) / 2:.1f}" y="{height - 12}" font-size="12" text-anchor="middle" '
             f'fill="#111">{esc(xlabel)}{" (log scale)" if sx.log else ""}</text>')
    o.append(f'<text transform="translate(16 {(top + bottom) / 2:.1f}) rotate(-90)" font-size="12" '
             f'text-anchor="middle" fill="#111">{esc(ylabel)}{" (log scale)" if sy.log else ""}</text>')
    for h in hlines:
        py = sy(h["y"])
        o.append(f'<line class="ref" x1="{left}" y1="{py:.1f}" x2="{right}" y2="{py:.1f}" stroke="{h["color"]}" '
                 f'stroke-dasharray="5 4" stroke-width="1.2" opacity="0.7"><title>{esc(h["text"])}</title></line>')
    for ln in lines:
        if not ln["xy"]:
            continue
        d = " ".join(f"{'M' if i == 0 else 'L'}{sx(x):.1f},{sy(y):.1f}" for i, (x, y) in enumerate(ln["xy"]))
        dash = f' stroke-dasharray="{ln["dash"]}"' if ln.get("dash") else ""
        o.append(f'<path class="ln" d="{d}" fill="none" stroke="{ln["color"]}" stroke-width="{ln.get("width", 1.6)}" '
                 f'stroke-linejoin="round" opacity="{ln.get("opacity", 0.85)}"{dash}><title>{esc(ln["tip"])}</title></path>')
        if len(ln["xy"]) == 1:  # a one-point line is invisible: mark it
            x, y = ln["xy"][0]
            o.append(f'<circle class="pt" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{ln["color"]}">'
                     f'<title>{esc(ln["tip"])}</title></circle>')
    for p in sorted(points, key=lambda p: p.get("median", False)):
        cx, cy = sx(p["x"]), sy(p["y"])
        if p.get("median"):
            r = p.get("r", 7.5)
            o.append(f'<path class="med" d="M{cx:.1f},{cy - r:.1f} L{cx + r:.1f},{cy:.1f} L{cx:.1f},{cy + r:.1f} '
                     f'L{cx - r:.1f},{cy:.1f} Z" fill="{p["color"]}" stroke="#fff" stroke-width="1.5">'
                     f'<title>{esc(p["tip"])}</title></path>')
        else:
            o.append(f'<circle class="pt" cx="{cx:.1f}" cy="{cy:.1f}" r="{p.get("r", 4)}" fill="{p["color"]}" '
                     f'fill-opacity="0.55" stroke="{p["color"]}" stroke-width="1"><title>{esc(p["tip"])}</title></circle>')
    if legend:
        lx = right + 16
        o.append('<g class="legend" font-size="11" fill="#222">')
        ly = top + 6
        max_items = max(1, int((bottom - top) // 17))
        for i, (label, color, marker) in enumerate(legend[:max_items]):
            y = ly + i * 17
            if marker == "line":
                sw = f'<line x1="{lx}" y1="{y:.1f}" x2="{lx + 14}" y2="{y:.1f}" stroke="{color}" stroke-width="2.5"/>'
            elif marker == "dash":
                sw = (f'<line x1="{lx}" y1="{y:.1f}" x2="{lx + 14}" y2="{y:.1f}" stroke="{color}" '
                      f'stroke-width="1.5" stroke-dasharray="4 3"/>')
            else:
                sw = (f'<path d="M{lx + 7},{y - 6:.1f} L{lx + 13},{y:.1f} L{lx + 7},{y + 6:.1f} L{lx + 1},{y:.1f} Z" '
                      f'fill="{color}"/>')
            o.append(f'<g>{sw}<text x="{lx + 20}" y="{y + 4:.1f}">{esc(trunc(label, 31))}</text>'
                     f'<title>{esc(label)}</title></g>')
        if len(legend) > max_items:
            o.append(f'<text x="{lx}" y="{ly + max_items * 17 + 4:.1f}" fill="#666">+{len(legend) - max_items} more</text>')
        o.append("</g>")
    o.append("</svg>")
    return "\n".join(o)


def _downsample(xy: list[tuple[float, float]], n: int = 400) -> list[tuple[float, float]]:
    """At most ``n`` points: bucket means (smooths noisy per-step losses too)."""
    if len(xy) <= n:
        return xy
    size = math.ceil(len(xy) / n)
    out = []
    for i in range(0, len(xy), size):
        ch = xy[i : i + size]
        out.append((sum(x for x, _ in ch) / len(ch), sum(y for _, y in ch) / len(ch)))
    return out


def _seed_txt(r: dict[str, Any]) -> str:
    return f"seed {r.get('seed')}" if r.get("seed") is not None else "seed ?"


def _scatter_plot(srows, by_label, colors, *, kind, xkey, xlabel, title, xscale=None, xtip=None):
    """Quality (y) against a per-row quantity (x): one point per seed, a diamond at the medians."""
    metric = srows[0]["metric"]
    points, legend = [], []
    ref = next((s for s in srows if s["is_reference"]), None)
    for s in srows:
        label, color = s["label"], colors[s["label"]]
        xs_seed = []
        for r in by_label.get(label, []):
            x, y = num(r.get(xkey)), num(r.get("value"))
            if x is None or y is None:
                continue
            x = x / xscale if xscale else x
            xs_seed.append(x)
            points.append({"x": x, "y": y, "color": color, "r": 4,
                           "tip": f"{label} · {_seed_txt(r)}\n{metric}: {y:.4f}\n{xtip(x)}"})
        if not xs_seed:
            continue
        mx, my = _median(xs_seed), s["median"]
        if my is not None:
            points.append({"x": mx, "y": my, "color": color, "median": True,
                           "tip": f"{label} · median of {len(xs_seed)} seed(s)\n{metric}: {my:.4f}\n{xtip(mx)}"})
        legend.append((label, color, "median"))
    if not points:
        return None
    hlines = []
    if ref is not None and ref["median"] is not None:
        hlines.append({"y": ref["median"], "color": REF_COLOR, "text": f"{ref['label']} median {metric}: {ref['median']:.4f}"})
        legend.append((f"{ref['label']} median", REF_COLOR, "dash"))
    return _svg(title=title, xlabel=xlabel, ylabel=f"{metric} ({_direction(metric)})", points=points, hlines=hlines,
                legend=legend, kind=kind, ylog=False)


def _skip_plot(srows, by_label, records, colors, title):
    lines, legend = [], []
    for s in srows:
        label, color = s["label"], colors[s["label"]]
        mine = []
        for r in by_label.get(label, []):
            hist = (records.get(id(r)) or {}).get("skip_history") or []
            xy = []
            for i, b in enumerate(hist):
                if not isinstance(b, dict):
                    continue
                y = num(b.get("skip_rate"))
                x = num(b.get("batch"))
                if y is None:
                    continue
                xy.append((x if x is not None else float(i + 1), y))
            if xy and any(y > 0 for _, y in xy):
                mine.append((r, xy))
        for r, xy in mine:
            mean = sum(y for _, y in xy) / len(xy)
            lines.append({"xy": _downsample(xy), "color": color, "width": 1.6, "opacity": 0.8,
                          "tip": f"{label} · {_seed_txt(r)}\nmean skip rate {mean:.3f}"})
        if mine:
            legend.append((label, color, "line"))
    if not lines:
        return None
    return _svg(title=title, xlabel="training batch", ylabel="skip rate (fraction not backpropagated)",
                lines=lines, legend=legend, yfixed=(-0.04, 1.04), kind="skip")


def _guard_plots(gsrows, by_label, records, colors, name) -> list[str]:
    """The guard over training, from its history rows: the false-skip bound (the limit dashed) and the
    effective skip rate against examples seen, one line per seed. Empty without histories."""
    bound, rate, legend = [], [], []
    for s in gsrows:
        label, color = s["label"], colors[s["label"]]
        n = 0
        for r in by_label.get(label, []):
            hist = guard_history(records.get(id(r)))
            pts = [(num(h.get("examples_seen")), num(h.get("false_skip_bound")), num(h.get("limit")),
                    num(h.get("effective_skip_rate"))) for h in hist]
            pts = [p for p in pts if p[0] is not None]
            xb = [(x, b) for x, b, _, _ in pts if b is not None]
            xl = [(x, lim) for x, _, lim, _ in pts if lim is not None]
            xr = [(x, e) for x, _, _, e in pts if e is not None]
            if not (xb or xr):
                continue
            n += 1
            who = f"{label} · {_seed_txt(r)}"
            if xb:
                bound.append({"xy": _downsample(xb), "color": color, "width": 1.6, "opacity": 0.85,
                              "tip": f"{who}\nlast false-skip bound {xb[-1][1]:.3f}"})
            if xl:
                bound.append({"xy": _downsample(xl), "color": color, "width": 1.2, "opacity": 0.6, "dash": "5 4",
                              "tip": f"{who}\nlast limit {xl[-1][1]:.3f}"})
            if xr:
                rate.append({"xy": _downsample(xr), "color": color, "width": 1.6, "opacity": 0.85,
                             "tip": f"{who}\nlast effective skip rate {xr[-1][1]:.3f}"})
        if n:
            legend.append((label, color, "line"))
    out = []
    if bound:
        out.append(_svg(title=f"{name}: guard's false-skip bound over training", xlabel="examples seen",
                        ylabel="false-skip bound (dashed: limit)", lines=bound,
                        legend=legend + [("limit (dashed)", "#666666", "dash")], kind="guard-bound"))
    if rate:
        out.append(_svg(title=f"{name}: guard's effective skip rate over training", xlabel="examples seen",
                        ylabel="effective skip rate (stage 2)", lines=rate, legend=legend, yfixed=(-0.04, 1.04),
                        kind="guard-skip"))
    return out


def _curve_plot(srows, by_label, records, colors, title):
    metric = srows[0]["metric"]
    lines, legend = [], []
    # learning curves (intermediate evaluations) where any record has them ...
    have_curves = any(_curve_xy(records.get(id(r)), r, metric)[0] for rs in by_label.values() for r in rs)
    for s in srows:
        label, color = s["label"], colors[s["label"]]
        n = 0
        for r in by_label.get(label, []):
            rec = records.get(id(r))
            if have_curves:
                xy, ykey = _curve_xy(rec, r, metric)
            else:
                xy = [(float(i + 1), y) for i, y in enumerate(num(v) for v in ((rec or {}).get("step_losses") or []))
                      if y is not None]
                ykey = "training loss"
            if not xy:
                continue
            n += 1
            lines.append({"xy": _downsample(xy), "color": color, "width": 1.6, "opacity": 0.8,
                          "tip": f"{label} · {_seed_txt(r)}\nlast {ykey}: {xy[-1][1]:.4f}"})
        if n:
            legend.append((label, color, "line"))
    if not lines:
        return None
    ys = [y for ln in lines for _, y in ln["xy"]]
    ylog = bool(ys) and min(ys) > 0 and max(ys) / min(ys) > 5
    if have_curves:
        return _svg(title=title, xlabel="wall-clock s (selection + training)",
                    ylabel=f"{metric} ({_direction(metric)})", lines=lines,
                    legend=legend, ylog=ylog, kind="curve")
    return _svg(title=title.replace("learning curves", "training loss"), xlabel="optimizer step",
                ylabel="training loss", lines=lines, legend=legend, ylog=ylog, kind="loss")


def _curve_xy(rec: dict[str, Any] | None, r: dict[str, Any], metric: str) -> tuple[list[tuple[float, float]], str]:
    """(wall-clock incl. selection, metric) from a record's intermediate evaluations; none where they
    read a prefix of the test split (:func:`~datadiet.bench.tta.prefix_curve`)."""
    curve = None if prefix_curve(r, rec) else compact_curve((rec or {}).get("curve"), metric)
    sel = num(r.get("selection_s")) or num(((rec or {}).get("timings") or {}).get("selection_s")) or 0.0
    return ([(sel + t, y) for t, y in zip(curve["train_s"], curve["value"])] if curve else []), metric


def _tta_plot(part: dict[str, Any], by_label, records, colors, name) -> str | None:
    """The Pareto view: quality against wall-clock (selection + cumulative training seconds), one line
    per method at one seed (the first seed at which the most methods have a timed curve), the
    final evaluation last; a circle where each method first reaches that seed's target (dashed)."""
    metric, higher = part["metric"] or "quality", part["higher_is_better"]
    covered: Counter = Counter()
    targets = {}
    for x in part["rows"]:
        for p in x["per_seed"]:
            covered[p["seed"]] += 1
            targets[p["seed"]] = p["target"]
    if not covered:
        return None
    seed = min(covered, key=lambda k: (-covered[k], str(k)))
    lines, points, legend = [], [], []
    for x in part["rows"]:
        label, color = x["label"], colors.get(x["label"], PALETTE[0])
        row = next((r for r in by_label.get(label, []) if r.get("seed") == seed), None)
        curve = None if row is None else cell_curve(row, records.get(id(row)))
        if curve is None:
            continue
        xy = [(t, v) for t, v in zip(*curve) if v is not None]
        if not xy:
            continue
        hit = next((p["time_s"] for p in x["per_seed"] if p["seed"] == seed), None)
        lines.append({"xy": _downsample(xy), "color": color, "width": 2.0 if label == part["reference"] else 1.6,
                      "opacity": 0.9, "tip": f"{label} · seed {seed}\nfinal {metric}: {xy[-1][1]:.4f} at {xy[-1][0]:.1f} s"
                      + (f"\ntarget reached at {hit:.1f} s" if hit is not None else f"\ntarget {NOT_REACHED}")})
        if hit is not None:
            y = next(v for t, v in xy if t == hit)
            points.append({"x": hit, "y": y, "color": color, "r": 5,
                           "tip": f"{label} · seed {seed}: target reached at {hit:.1f} s ({metric} {y:.4f})"})
        legend.append((label, color, "line"))
    if not lines:
        return None
    target = targets[seed]
    hlines = [{"y": target, "color": REF_COLOR,
               "text": f"target {target:.4f}: {target_text(metric, higher_is_better=higher)}"}]
    legend.append(("target", REF_COLOR, "dash"))
    return _svg(title=f"{name}: {metric} vs wall-clock, seed {seed} (time to accuracy)",
                xlabel="wall-clock s (selection + training, evaluation excluded)",
                ylabel=f"{metric} ({_direction(metric)})", lines=lines, points=points, hlines=hlines,
                legend=legend, kind="tta")


def _html_tta(part: dict[str, Any], colors: dict[str, str]) -> str:
    """The time-to-accuracy table and, folded, each seed's times."""
    cols = _tta_columns()
    o = ["<h3>Time to accuracy</h3>", f'<p class="note">{esc(_tta_note(part))}</p>',
         '<table class="tta"><thead><tr>' + "".join(f"<th>{esc(h)}</th>" for h, _ in cols) + "</tr></thead><tbody>"]
    for x in part["rows"]:
        sw = f'<span class="swatch" style="background:{colors.get(x["label"], PALETTE[0])}"></span>'
        cls = ' class="ref"' if x["label"] == part["reference"] else ""
        o.append(f"<tr{cls}>" + "".join(f'<td class="label">{sw}{esc(f(x))}</td>' if i == 0 else
                                        f'<td class="num">{esc(f(x))}</td>' for i, (_, f) in enumerate(cols)) + "</tr>")
    o.append("</tbody></table>")
    heads = ["label", "seed", "target", "time to target s", "full's time s", "ratio to full"]
    o.append("<details><summary>time to accuracy per seed</summary><table class=\"tta-cells\"><thead><tr>"
             + "".join(f"<th>{esc(h)}</th>" for h in heads) + "</tr></thead><tbody>")
    for x in part["rows"]:
        for p in x["per_seed"]:
            vals = [_fmt(p["target"], 4), NOT_REACHED if p["time_s"] is None else _fmt(p["time_s"], 1),
                    NOT_REACHED if p["full_time_s"] is None else _fmt(p["full_time_s"], 1),
                    DASH if p["ratio"] is None else _fmt(p["ratio"], 2, "x")]
            o.append(f"<tr><td>{esc(x['label'])}</td><td class=\"num\">{esc(str(p['seed']))}</td>"
                     + "".join(f'<td class="num">{esc(v)}</td>' for v in vals) + "</tr>")
    o.append("</tbody></table></details>")
    return "\n".join(o)


def _load_records(root: Path, rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """id(row) -> its run record (rows without a readable record are simply absent)."""
    out: dict[int, dict[str, Any]] = {}
    missing = 0
    for r in rows:
        rd = r.get("run_dir")
        if not rd:
            missing += 1
            continue
        p = root / str(rd)
        if p.is_dir():
            p = p / RECORD
        try:
            rec = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            log.debug("no usable record at %s: %s", p, e)
            missing += 1
            continue
        if isinstance(rec, dict):
            out[id(r)] = rec
        else:
            missing += 1
    if missing:
        log.info("%d of %d finished cells have no readable record.json (no curves/skip plots for them)",
                 missing, len(rows))
    return out


# ----------------------------------------------------------------------------------------------
# HTML
# ----------------------------------------------------------------------------------------------


def _html_table(srows: list[dict[str, Any]], colors: dict[str, str]) -> str:
    cols = _columns(srows)
    o = ["<table class=\"summary\"><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h, _ in cols) + "</tr></thead><tbody>"]
    for s in srows:
        cells = []
        for i, (_, f) in enumerate(cols):
            if i == 0:
                cells.append(f'<td class="label"><span class="swatch" style="background:{colors[s["label"]]}"></span>{esc(f(s))}</td>')
            else:
                cells.append(f'<td class="num">{esc(f(s))}</td>')
        cls = ' class="ref"' if s["is_reference"] else ""
        if s.get("controls"):
            cls = f' class="control" title="{esc("random control of " + str(s["controls"]))}"'
        o.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    o.append("</tbody></table>")
    return "\n".join(o)


def _html_controls(srows: list[dict[str, Any]], colors: dict[str, str]) -> str:
    """The table against random at the same budget and one sentence per method."""
    cols = _control_columns(srows)
    points = _accuracy_like(srows)
    o = [f"<h3>{esc(CONTROLS_HEADING)}</h3>", f'<p class="note">{esc(CONTROLS_NOTE)}</p>',
         '<table class="controls"><thead><tr>' + "".join(f"<th>{esc(h)}</th>" for h, _ in cols)
         + "</tr></thead><tbody>"]
    for s in _control_srows(srows):
        sw = f'<span class="swatch" style="background:{colors.get(s["label"], PALETTE[0])}"></span>'
        o.append("<tr>" + "".join(f'<td class="label">{sw}{esc(f(s))}</td>' if i == 0 else
                                  f'<td class="{"label" if i in (1, len(cols) - 1) else "num"}">{esc(f(s))}</td>'
                                  for i, (_, f) in enumerate(cols)) + "</tr>")
    o.append("</tbody></table>")
    o.append('<ul class="controls">' + "".join(f"<li>{esc(_control_sentence(s, points))}</li>"
                                              for s in _control_srows(srows)) + "</ul>")
    return "\n".join(o)


def _html_guard(gsrows: list[dict[str, Any]], by_label: dict[str, list[dict[str, Any]]], colors: dict[str, str]) -> str:
    """The guard table (medians over seeds) and, folded, the same figures per seed."""
    cols = _guard_columns()

    def table(rows: list[dict[str, Any]], cls: str) -> str:
        o = [f'<table class="{cls}"><thead><tr>' + "".join(f"<th>{esc(h)}</th>" for h, _ in cols)
             + "</tr></thead><tbody>"]
        for s in rows:
            sw = f'<span class="swatch" style="background:{colors[s["colour_of"]]}"></span>'
            o.append("<tr>" + "".join(f'<td class="label">{sw}{esc(f(s))}</td>' if i == 0 else
                                      f'<td class="{"num" if i < len(cols) - 2 else "label"}">{esc(f(s))}</td>'
                                      for i, (_, f) in enumerate(cols)) + "</tr>")
        o.append("</tbody></table>")
        return "\n".join(o)

    per_seed = [{"label": f"{s['label']} · {_seed_txt(r)}", "colour_of": s["label"], "guard": _guard_stats([r])}
                for s in gsrows for r in by_label.get(s["label"], [])]
    return ("<h3>Stage-2 guard (multistage)</h3>" + f'<p class="note">{esc(GUARD_NOTE)}</p>'
            + table([{**s, "colour_of": s["label"]} for s in gsrows], "guard")
            + f"<details><summary>the guard per seed ({len(per_seed)} cells)</summary>"
            + table(per_seed, "guard-cells") + "</details>")


def _cells_table(srows: list[dict[str, Any]], by_label: dict[str, list[dict[str, Any]]]) -> str:
    heads = ["label", "seed", "value", "macro-F1", "wall-clock s", "selection s", "train s", "forwarded",
             "backpropagated", "optimizer steps", "train used / n", "run folder"]
    o = ["<table class=\"cells\"><thead><tr>" + "".join(f"<th>{h}</th>" for h in heads) + "</tr></thead><tbody>"]
    for s in srows:
        for r in by_label.get(s["label"], []):
            vals = [_fmt(r.get("value"), 4), _fmt(r.get("macro_f1"), 4), _fmt(r.get("wall_clock_s"), 1),
                    _fmt(r.get("selection_s"), 1), _fmt(r.get("train_s"), 1), fmt_count(r.get("examples_forwarded")),
                    fmt_count(r.get("examples_backpropagated")), fmt_count(r.get("optimizer_steps")),
                    f"{fmt_count(r.get('n_train_used'))} / {fmt_count(r.get('n_train'))}"]
            o.append("<tr>" + f"<td>{esc(s['label'])}</td><td class=\"num\">{esc(str(r.get('seed')))}</td>"
                     + "".join(f'<td class="num">{esc(v)}</td>' for v in vals)
                     + f"<td>{esc(str(r.get('run_dir') or DASH))}</td></tr>")
    o.append("</tbody></table>")
    return "\n".join(o)


def _slug(*parts: Any) -> str:
    s = "-".join(re.sub(r"[^A-Za-z0-9]+", "-", str(p)).strip("-").lower() for p in parts)
    return s or "section"


def _html(title: str, rows: list[dict[str, Any]], summary: list[dict[str, Any]], failed: list[dict[str, Any]],
          records: dict[int, dict[str, Any]], generated: str, scores: dict[tuple, Any] | None = None,
          scores_top: int = 20, tta: dict[tuple, dict[str, Any]] | None = None) -> tuple[str, int]:
    colors = _colors(summary)
    suites = _uniq(rows, "suite")
    multi = len(suites) > 1
    groups = _groups(rows)
    body: list[str] = []
    n_plots = 0
    if not summary:
        body.append('<p class="note">No finished results.</p>')
    sections = _by_section(summary)
    ids = {key: f"ds{i}-{_slug(*key) if multi else _slug(key[1])}" for i, key in enumerate(sections, 1)}
    for (suite, dataset), srows in sections.items():
        by_label = groups.get((suite, dataset), {})
        metric = srows[0]["metric"]
        ref = next((s for s in srows if s["is_reference"]), None)
        name = _section_title(suite, dataset, multi)
        sid = ids[(suite, dataset)]
        body.append(f'<section class="dataset" id="{esc(sid)}">')
        body.append(f"<h2>{esc(name)}</h2>")
        model = ", ".join(_uniq(srows, "model")) or DASH
        body.append(f'<p class="note">model: {esc(model)}; metric: {esc(metric or DASH)} ({_direction(metric)})'
                    + ("" if ref else "; no <code>full</code> rows, so no comparison with full") + "</p>")
        body.append(_html_table(srows, colors))
        if _guard_srows(srows):
            body.append(_html_guard(_guard_srows(srows), by_label, colors))
        if _control_srows(srows):
            body.append(_html_controls(srows, colors))
        tpart = (tta or {}).get((suite, dataset))
        if tpart is not None:
            body.append(_html_tta(tpart, colors))
        plots, notes = [], []
        p = _scatter_plot(srows, by_label, colors, kind="quality-wallclock", xkey="wall_clock_s",
                          xlabel="wall-clock s (selection + training)",
                          title=f"{name}: {metric} vs wall-clock", xtip=lambda x: f"wall-clock: {x:.1f} s")
        plots.append(p) if p else notes.append("no wall-clock numbers to plot")
        ref_bp = ref["median_examples_backpropagated"] if ref else None
        if ref_bp:
            p = _scatter_plot(srows, by_label, colors, kind="quality-backprop", xkey="examples_backpropagated",
                              xscale=ref_bp, xlabel=f"examples backpropagated (fraction of {ref['label']} median)",
                              title=f"{name}: {metric} vs examples backpropagated",
                              xtip=lambda x: f"backpropagated: {x:.3f} of full")
        else:
            p = _scatter_plot(srows, by_label, colors, kind="quality-backprop", xkey="examples_backpropagated",
                              xlabel="examples backpropagated", title=f"{name}: {metric} vs examples backpropagated",
                              xtip=lambda x: f"backpropagated: {x:,.0f}")
        plots.append(p) if p else notes.append("no examples_backpropagated counts to plot")
        p = _skip_plot(srows, by_label, records, colors, f"{name}: skip rate over training")
        plots.append(p) if p else notes.append("no method skipped examples during training (or no skip history in the records)")
        p = _curve_plot(srows, by_label, records, colors, f"{name}: learning curves")
        plots.append(p) if p else notes.append("no learning curves or step losses in the run records")
        if tpart is not None:
            p = _tta_plot(tpart, by_label, records, colors, name)
            plots.append(p) if p else notes.append("no time-to-accuracy curve")
        gsrows = _guard_srows(srows)
        if any(s.get("guard") for s in gsrows):
            gp = _guard_plots(gsrows, by_label, records, colors, name)
            plots += gp
            if not gp:
                notes.append("no guard history in the multistage run records")
        n_plots += len(plots)
        body.append('<div class="plots">' + "".join(f"<figure>{p}</figure>" for p in plots) + "</div>")
        if notes:
            body.append('<p class="note">Not plotted: ' + esc("; ".join(notes)) + ".</p>")
        body.append(f"<details><summary>all {sum(len(v) for v in by_label.values())} finished cells</summary>"
                    + _cells_table(srows, by_label) + "</details>")
        part = (scores or {}).get((suite, dataset))
        if part is not None:
            from .scores_view import html_part

            html_part_, n = html_part(part, top=scores_top, anchor=f"{sid}-scores")
            body.append(html_part_)
            n_plots += n
        body.append("</section>")
    if failed:
        body.append("<h2>Failed cells</h2><ul>")
        for r in failed:
            err = str(r.get("error") or "no error message")[:2000]
            body.append(f"<li>{esc(str(r.get('cell') or _cell_key(r)))}<pre class=\"err\">{esc(err)}</pre></li>")
        body.append("</ul>")
    body.append("<h2>How to read</h2><ul class=\"note\">"
                + "".join(f"<li>{esc(t).replace('`full`', '<code>full</code>')}</li>" for t in HOW_TO_READ)
                + "<li>Plots: small circles are single seeds, diamonds the medians; hover a mark for its numbers. "
                  "The dashed line is the median of full.</li></ul>")
    meta = [("suite", ", ".join(suites) or DASH), ("generated", generated)] + _machine(rows)
    meta.append(("finished cells", str(len(rows)) + (f" (failed cells: {len(failed)})" if failed else "")))
    meta.append(("plots", f'<span id="plot-count">{n_plots}</span>'))
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{v if k == 'plots' else esc(v)}</dd>" for k, v in meta)
    toc = ""
    if len(_by_section(summary)) > 1:
        toc = "<p class=\"note\">Datasets: " + " · ".join(
            f'<a href="#{esc(ids[(su, d)])}">{esc(_section_title(su, d, multi))}</a>'
            for su, d in _by_section(summary)) + "</p>"
    extra_css = ""
    if scores:
        from .scores_view import SCORES_CSS as extra_css
    script = ("<script>(function(){var b=document.body;b.dataset.rendered='1';"
              "var n=document.querySelectorAll('svg.plot').length;var e=document.getElementById('plot-count');"
              "if(e){e.textContent=String(n);}})();</script>")
    return html_page(title, dl, f"{toc}\n{chr(10).join(body)}\n{script}", css=extra_css), n_plots


# ----------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------


def write_report(dir: str | Path, *, title: str | None = None, scores_top: int = 20) -> tuple[Path, Path]:
    """Write ``DIR/report.md`` and a self-contained ``DIR/report.html`` from ``DIR/results.jsonl``.

    Run records (``DIR/<run_dir>/record.json``) feed the skip-rate, learning-curve and guard plots
    when present (and the guard's figures and learning curves of lines that lack them); missing or
    unreadable records only drop those plots. Sections where ``full`` and another method have timed
    learning curves get the time to accuracy (a table in both files, the Pareto chart in the HTML). Sections whose run folders hold
    ``scores.json`` files (data diet runs) get a scores view: per-class histograms and the
    ``scores_top`` highest-scoring examples in the HTML, the top 10 in the Markdown. Texts are
    recovered from the dataset (offline only); without them the view shows ids and labels. Returns
    (markdown, html) paths.
    """
    root = Path(dir)
    path = root / RESULTS
    if not path.exists():
        raise FileNotFoundError(f"no benchmark results at {path}")
    lines = _read_jsonl(path)
    rows = _finished(lines)
    failed = _failed_cells(lines, rows)
    records = _load_records(root, rows)
    for r in rows:  # lines written before the harness copied the guard's figures: take them from the record
        if "guard" not in r and (g := guard_figures(records.get(id(r)))) is not None:
            r["guard"] = g
    summary = summarize(rows)
    suites = _uniq(rows, "suite") or _uniq(failed, "suite")
    if title is None:
        title = "datadiet benchmark report" + (f": {', '.join(suites)}" if suites else "")
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    scores = None
    if any(r.get("run_dir") and (root / str(r["run_dir"]) / "scores.json").is_file() for r in rows):
        from .scores_view import collect_scores

        scores = collect_scores(root, rows, records) or None
    md_path, html_path = root / REPORT_MD, root / REPORT_HTML
    tta = _tta_sections(rows, summary, records)
    write_atomic(md_path, _markdown(title, rows, summary, failed, generated, scores, tta))
    doc, n_plots = _html(title, rows, summary, failed, records, generated, scores, scores_top, tta)
    write_atomic(html_path, doc)
    log.info("report: %s, %s (%d plots, %d finished cells, %d failed)", md_path, html_path, n_plots, len(rows),
             len(failed))
    return md_path, html_path
