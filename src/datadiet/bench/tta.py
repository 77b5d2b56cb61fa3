"""Time to accuracy: how much wall-clock a method needs to come within reach of ``full``'s final quality.

Pure functions (standard library only): the report (:mod:`datadiet.bench.report`) draws the table
and the Pareto chart from them, and the harness stores each cell's curve with :func:`compact_curve`.

Definitions (the report's captions say the same):

* **Wall-clock axis.** A cell's curve is its intermediate evaluations (``train.eval_every``) against
  *selection seconds + cumulative training seconds*, evaluation time excluded (the run loop stops
  the training clock while it evaluates). So a prune method's curve starts at its selection cost,
  not at 0. The final evaluation is appended as the last point, at ``selection_s + train_s`` with
  the final metric: every method's time to target is at most its whole run. Intermediate
  evaluations may use a subset of the test set (``train.eval_max_examples``, evenly spaced over it);
  the final one uses all of it. Records from before the evenly spaced subset (no ``eval_subset``)
  whose evaluations were capped read the split's *first* examples, which on a class-ordered split
  cover a few classes: such a cell keeps only its final point (:func:`prefix_curve`).
* **Target** (:func:`target_for`), from ``full``'s *final* metric at the same seed: for metrics
  where higher is better (accuracy, macro-F1; fractions in [0, 1]) ``final - 0.005`` (0.5 points);
  for lower-is-better metrics (perplexity, loss) ``final * 1.005`` (0.5 % worse).
* **Time to target** (:func:`time_to_target`): the wall-clock of the *first evaluation point* at or
  beyond the target, no interpolation. It is a measured time, the one at which a run watching its
  evaluations could have stopped; the price is a resolution of one evaluation interval.
* **Medians over seeds** (:func:`time_to_accuracy`): per seed, the method's time and its ratio to
  ``full``'s time at the same seed on the same CPU (each against that seed's target); a seed that
  never reaches the target counts as infinitely slow, so a median that lands on such a seed is "not
  reached".
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from .render import num as _num  # a finite float, or None

__all__ = ["TARGET_POINTS", "TARGET_RELATIVE", "accuracy_sd", "cell_curve", "compact_curve", "curve_eval_size",
           "prefix_curve", "seed_on_cpu", "target_for", "time_to_accuracy", "time_to_target"]

#: Higher-is-better metrics: the target is full's final value minus this (0.5 accuracy points).
TARGET_POINTS = 0.005
#: Lower-is-better metrics: the target is full's final value times (1 + this) (0.5 % worse).
TARGET_RELATIVE = 0.005




def target_for(final: float, *, higher_is_better: bool) -> float:
    """The time-to-accuracy target from the reference's final metric (see the module docstring)."""
    return final - TARGET_POINTS if higher_is_better else final * (1.0 + TARGET_RELATIVE)


def target_text(metric: str, *, higher_is_better: bool) -> str:
    """The target rule in words, for captions."""
    if higher_is_better:
        return f"full's final {metric} at the same seed minus {TARGET_POINTS * 100:g} points ({TARGET_POINTS:g})"
    return f"full's final {metric} at the same seed times {1 + TARGET_RELATIVE:g} ({TARGET_RELATIVE * 100:g} % worse)"


def time_to_target(times: Sequence[float], values: Sequence[float | None], target: float, *,
                   higher_is_better: bool = True) -> float | None:
    """The time of the first point whose value is at or beyond ``target``, or None if none is.

    ``times`` and ``values`` are paired evaluation points in time order; points with a missing or
    non-finite value are ignored. "Beyond" is ``>=`` when higher is better and ``<=`` otherwise, with a
    slack of ``1e-9`` (relative to the target's size) so that float rounding of the target (``20 *
    1.005`` is 20.099999999999998) does not miss a value exactly on it. No interpolation: the answer is
    always one of ``times``.
    """
    slack = 1e-9 * max(1.0, abs(target))
    if len(times) != len(values):
        raise ValueError(f"times and values must be paired, got {len(times)} times and {len(values)} values")
    for t, v in zip(times, values):
        f = _num(v)
        if f is None:
            continue
        if (f >= target - slack) if higher_is_better else (f <= target + slack):
            return float(t)
    return None


def compact_curve(curve: Any, metric: str | None) -> dict[str, list[float]] | None:
    """A run record's learning curve as parallel lists for ``results.jsonl``, or None.

    Keeps the points that carry ``train_s`` and the run's ``metric``: ``optimizer_steps``,
    ``train_s`` (cumulative training seconds, evaluation excluded), ``eval_s`` (that point's
    evaluation, None in records written before it was kept) and ``value``. None when no point has
    both (a run without ``train.eval_every``, or a record from before curves carried times).
    """
    if not metric or not isinstance(curve, list):
        return None
    out: dict[str, list[Any]] = {"optimizer_steps": [], "train_s": [], "eval_s": [], "value": []}
    for c in curve:
        if not isinstance(c, dict):
            continue
        t, v = _num(c.get("train_s")), _num(c.get(metric))
        if t is None or v is None:
            continue
        out["optimizer_steps"].append(c.get("optimizer_steps"))
        out["train_s"].append(round(t, 4))
        out["eval_s"].append(None if _num(c.get("eval_s")) is None else round(float(c["eval_s"]), 4))
        out["value"].append(v)
    return out if out["train_s"] else None


def cell_curve(row: dict[str, Any], record: dict[str, Any] | None = None) -> tuple[list[float], list[float]] | None:
    """(wall-clock seconds, metric values) of one finished cell, the final evaluation last; or None.

    The curve comes from the ``results.jsonl`` line (``row["curve"]``, written by the harness) or,
    for older lines, from the run record's ``curve``. Times are ``selection_s`` + each point's
    cumulative training seconds; the final point is (``selection_s + train_s``, ``value``). None when
    the cell has no curve point with a training time: it has no time-to-accuracy. Exception: a run that
    asked for a learning curve (its record's ``train.eval_every``) but ended before the first
    evaluation (a skipping method takes few optimizer steps) has its final evaluation as its only point,
    and so has a cell whose intermediate evaluations read a prefix of the test split (:func:`prefix_curve`).
    """
    c = row.get("curve")
    if not (isinstance(c, dict) and isinstance(c.get("train_s"), list) and isinstance(c.get("value"), list)):
        c = compact_curve((record or {}).get("curve"), row.get("metric") or (record or {}).get("metric"))
    if (c is None and _asked_for_curve_but_got_none(record)) or (c is not None and prefix_curve(row, record)):
        c = {"train_s": [], "value": []}  # the final evaluation is its only point
    if c is None or len(c["train_s"]) != len(c["value"]):
        return None
    timings = (record or {}).get("timings") or {}
    sel = _num(row.get("selection_s"))
    sel = _num(timings.get("selection_s")) if sel is None else sel
    sel = sel or 0.0
    pts = [(sel + _num(t), _num(v)) for t, v in zip(c["train_s"], c["value"]) if _num(t) is not None]
    train_s, final = _num(row.get("train_s")), _num(row.get("value"))
    if not pts and (train_s is None or final is None):
        return None
    if train_s is not None and final is not None and (not pts or sel + train_s >= pts[-1][0]):
        pts.append((sel + train_s, final))
    pts.sort(key=lambda p: p[0])
    return [t for t, _ in pts], [v for _, v in pts]


def prefix_curve(row: dict[str, Any], record: dict[str, Any] | None) -> bool:
    """True when a cell's intermediate evaluations read the test split's first ``eval_max_examples``
    examples: its record has intermediate evaluations, predates ``eval_subset`` (the evenly spaced
    subset), and its config capped the evaluation below the test split's size. Such points are not
    the split's accuracy (a class-ordered split's prefix covers a few classes), so the cell counts by
    its final evaluation. False when the run record is missing (nothing says the evaluation was
    capped) or has no intermediate evaluation (nothing was read on a prefix)."""
    if not isinstance(record, dict) or not record.get("curve") or row.get("eval_subset") or record.get("eval_subset"):
        return False
    return _eval_cap(record) is not None


def _eval_cap(record: dict[str, Any]) -> int | None:
    """The record's ``train.eval_max_examples`` where it is below its test split's size (so the
    intermediate evaluations read only part of the split), else None."""
    cap = ((record.get("config") or {}).get("train") or {}).get("eval_max_examples")
    n_test = record.get("n_test")
    if isinstance(cap, int) and not isinstance(cap, bool) and isinstance(n_test, int) and cap < n_test:
        return cap
    return None


def _asked_for_curve_but_got_none(record: dict[str, Any] | None) -> bool:
    """A run record whose config set ``train.eval_every`` and whose curve is an empty list."""
    if not isinstance(record, dict) or record.get("curve") != []:
        return False
    train = (record.get("config") or {}).get("train") or {}
    return isinstance(train, dict) and bool(train.get("eval_every"))


def curve_eval_size(record: dict[str, Any] | None) -> int | None:
    """How many test examples each intermediate evaluation of a run read: ``train.eval_max_examples``
    capped at the test split's size, or the whole split when uncapped. None when the record does not
    say (no record, no ``n_test``, or no intermediate evaluation)."""
    if not isinstance(record, dict) or not record.get("curve"):
        return None
    n_test = record.get("n_test")
    if not isinstance(n_test, int) or isinstance(n_test, bool) or n_test <= 0:
        return None
    cap = _eval_cap(record)
    return cap if cap is not None and cap > 0 else n_test


def accuracy_sd(p: float, n: int) -> float:
    """The binomial standard deviation of an accuracy ``p`` (a fraction) measured on ``n`` examples:
    how far one evaluation of the same model on another sample of that size would typically land."""
    if not 0.0 <= p <= 1.0 or n <= 0:
        raise ValueError(f"accuracy_sd needs 0 <= p <= 1 and n > 0, got p={p!r}, n={n!r}")
    return math.sqrt(p * (1.0 - p) / n)


def seed_on_cpu(row: dict[str, Any]) -> tuple:
    """(seed, CPU) of a results row: two cells' wall-clock pair only when these are equal. An unrecorded
    CPU (results from before the field) counts as one CPU."""
    return (row.get("seed"), row.get("cpu") or None)


def _median_inf(xs: Sequence[float]) -> float | None:
    """Median with ``inf`` for "not reached"; None for no values, None also when it lands on ``inf``."""
    if not xs:
        return None
    m = statistics.median(xs)
    return None if math.isinf(m) or math.isnan(m) else float(m)


def time_to_accuracy(by_label: dict[str, list[dict[str, Any]]], reference: str, *, higher_is_better: bool,
                     records: dict[int, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Per method label of one dataset: time to ``full``'s target and its ratio to ``full``'s time.

    ``by_label``: label -> finished ``results.jsonl`` rows; ``reference``: the label of ``full``;
    ``records``: ``id(row)`` -> its run record (for lines without a ``curve``). A seed counts when
    both this label and the reference have a curve at it, the reference's final value is known, and
    both ran on the same CPU (the rows' ``cpu``; unrecorded counts as one CPU): a ratio of times taken
    on two machines would measure the machines.
    Each returned row: ``label``, ``seeds`` (counted seeds), ``reached`` (seeds reaching the target),
    ``median_time_s`` and ``median_ratio`` (None: not reached at the median, or no seeds), and
    ``per_seed``: [{seed, target, time_s, full_time_s, ratio}] (None where not reached). Labels
    without any counted seed are left out; the reference comes first.
    """
    records = records or {}
    ref_rows = {seed_on_cpu(r): r for r in by_label.get(reference, [])}
    ref_at: dict[tuple, tuple[float, float | None]] = {}  # (seed, cpu) -> (target, full's time to it)
    for key, r in ref_rows.items():
        final = _num(r.get("value"))
        curve = cell_curve(r, records.get(id(r)))
        if final is None or curve is None:
            continue
        target = target_for(final, higher_is_better=higher_is_better)
        ref_at[key] = (target, time_to_target(*curve, target, higher_is_better=higher_is_better))
    out = []
    labels = [reference] + [k for k in by_label if k != reference]
    for label in labels:
        per_seed = []
        for r in by_label.get(label, []):
            key = seed_on_cpu(r)
            if key not in ref_at:
                continue
            curve = cell_curve(r, records.get(id(r)))
            if curve is None:
                continue
            target, full_t = ref_at[key]
            t = time_to_target(*curve, target, higher_is_better=higher_is_better)
            ratio = t / full_t if t is not None and full_t else None
            per_seed.append({"seed": r.get("seed"), "target": target, "time_s": t, "full_time_s": full_t,
                             "ratio": ratio})
        if not per_seed:
            continue
        inf = math.inf
        out.append({
            "label": label,
            "seeds": len(per_seed),
            "reached": sum(p["time_s"] is not None for p in per_seed),
            "median_time_s": _median_inf([inf if p["time_s"] is None else p["time_s"] for p in per_seed]),
            "median_ratio": _median_inf([inf if p["ratio"] is None else p["ratio"] for p in per_seed]),
            "per_seed": per_seed,
        })
    return out
