"""The scores view of a report: where do the data diet's scores fall, and which examples top them?

A ``data_diet`` run leaves ``scores.json`` (a :class:`~datadiet.methods.data_diet.score_runs.ScoreResult`,
format ``datadiet.scores/1``) in its run folder. This module turns those files into

* per-class histograms of the mean score (inline SVG, one small chart per class; planted label
  flips stacked on top in another colour when the run record names them);
* a table of the highest-scoring training examples: rank, stable id, mean score, label, whether the
  label is a planted flip, and the text (recovered from the dataset by stable id; the scores file
  holds no texts);
* the AUROC of the mean score for the planted flips (1.0: every flipped example scores above every
  clean one; 0.5: chance).

The math is pure (:func:`score_digest`, :func:`score_bin_edges`, :func:`class_histograms`,
:func:`auroc`, :func:`top_positions`). Texts come from :func:`datadiet.runner.load_data` and only
for datasets that load offline (built-in names and local files); if they cannot be loaded the
view shows ids and labels and says why. Identical scores files (same kind, seeds, step, ids,
labels and scores) written by several cells are shown once. This module logs; it never prints.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import DataDietError
from .render import DASH, Scale, esc, fmt_count, html_page, md_escape, svg_open, trunc, write_atomic

log = logging.getLogger(__name__)

SCORES_FILE = "scores.json"
RECORD = "record.json"
TOP_N = 20
TOP_N_MD = 10
TEXT_CHARS = 200

CLEAN_COLOR = "#4c78a8"
FLIP_COLOR = "#e45756"

__all__ = ["ScoresView", "ScoresPart", "auroc", "class_histograms", "collect_scores", "default_bins",
           "html_part", "markdown_part", "read_scores", "score_bin_edges", "score_digest", "top_positions",
           "view_for_file", "write_scores_report"]


# ----------------------------------------------------------------------------------------------
# Pure math
# ----------------------------------------------------------------------------------------------


def score_digest(result) -> str:
    """sha256 of what a scores file *means*: kind, seeds, step, ids, labels and the mean and per-run
    scores. Two files with the same digest differ at most in bookkeeping (creation time, time spent,
    cache hits), so a report shows one of them."""
    h = hashlib.sha256()
    h.update(json.dumps({"kind": result.kind, "seeds": [int(s) for s in result.seeds],
                         "steps": int(result.steps)}, sort_keys=True).encode())
    for a, dt in ((result.ids, np.int64), (result.labels, np.int64), (result.scores, np.float64),
                  (result.per_seed, np.float64)):
        if a is None:
            h.update(b"none")
            continue
        arr = np.ascontiguousarray(np.asarray(a, dtype=dt))
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def default_bins(n: int) -> int:
    """Histogram bins for ``n`` scores: about sqrt(n), between 5 and 30."""
    return int(min(30, max(5, round(math.sqrt(max(n, 0))))))


def score_bin_edges(scores: np.ndarray, bins: int) -> np.ndarray:
    """``bins`` equal-width bins over the range of all ``scores`` (shared by every class's histogram)."""
    return np.histogram_bin_edges(np.asarray(scores, dtype=np.float64), bins=int(bins))


def class_histograms(scores: np.ndarray, labels: np.ndarray | None, edges: np.ndarray) -> dict[int, np.ndarray]:
    """Counts per bin of ``edges`` for each class (sorted by class); class ``-1`` holds all scores when
    there are no labels. The last bin includes its right edge, as in ``numpy.histogram``."""
    s = np.asarray(scores, dtype=np.float64)
    if labels is None:
        return {-1: np.histogram(s, bins=edges)[0]}
    lab = np.asarray(labels)
    if lab.shape != s.shape:
        raise ValueError(f"labels have shape {lab.shape} but scores have {s.shape}")
    return {int(c): np.histogram(s[lab == c], bins=edges)[0] for c in np.unique(lab)}


def auroc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """P(score of a random positive > score of a random negative), ties counting one half
    (the Mann-Whitney AUROC). None when either group is empty."""
    s = np.asarray(scores, dtype=np.float64)
    pos = np.asarray(positive, dtype=bool)
    if pos.shape != s.shape:
        raise ValueError(f"positive has shape {pos.shape} but scores have {s.shape}")
    neg = np.sort(s[~pos])
    p = s[pos]
    if len(p) == 0 or len(neg) == 0:
        return None
    below = np.searchsorted(neg, p, side="left")  # negatives strictly below each positive
    tied = np.searchsorted(neg, p, side="right") - below
    return float((below.sum() + 0.5 * tied.sum()) / (len(p) * len(neg)))


def top_positions(scores: np.ndarray, n: int) -> np.ndarray:
    """Positions of the ``n`` highest scores, highest first; ties go to the earlier position (as in the
    data diet's selectors)."""
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-s, kind="stable")
    return order[: max(0, int(n))]


# ----------------------------------------------------------------------------------------------
# Collecting the views
# ----------------------------------------------------------------------------------------------


@dataclass
class ScoresView:
    """One distinct scores file, with what the report needs to show it."""

    result: Any  # ScoreResult
    digest: str
    sources: list[str]
    cells: list[str] = field(default_factory=list)
    dataset: str | None = None
    label_names: list[str] = field(default_factory=list)
    flipped_ids: frozenset[int] | None = None  # planted label flips, None when unknown
    flip_source: str = ""
    texts: dict[int, str] | None = None
    original_labels: dict[int, int] | None = None  # the dataset's labels (before any planted flip)
    notes: list[str] = field(default_factory=list)

    # derived numbers -------------------------------------------------------------------------
    def flipped_mask(self) -> np.ndarray | None:
        if self.flipped_ids is None:
            return None
        return np.isin(np.asarray(self.result.ids, dtype=np.int64),
                       np.fromiter(self.flipped_ids, dtype=np.int64, count=len(self.flipped_ids)))

    def flip_auroc(self) -> float | None:
        m = self.flipped_mask()
        return None if m is None else auroc(self.result.scores, m)

    def flip_auroc_per_run(self) -> list[float]:
        m = self.flipped_mask()
        if m is None:
            return []
        return [a for a in (auroc(row, m) for row in np.asarray(self.result.per_seed)) if a is not None]

    def class_name(self, c: int) -> str:
        if c < 0:
            return "all examples"
        if 0 <= c < len(self.label_names):
            return str(self.label_names[c])
        return f"class {c}"

    def describe(self) -> str:
        r = self.result
        seeds = ", ".join(str(s) for s in r.seeds)
        runs = f"{len(r.seeds)} scoring run{'s' if len(r.seeds) != 1 else ''}"
        return (f"{r.kind} scores, mean of {runs} (seed{'s' if len(r.seeds) != 1 else ''} {seeds}) at step "
                f"{r.steps}, {fmt_count(len(r))} examples")


@dataclass
class ScoresPart:
    """The scores of one report section: its distinct scores files and the files that could not be read."""

    views: list[ScoresView] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def read_scores(path: str | Path):
    """A scores file as a ``ScoreResult`` (DataDietError with the fix when it is missing or damaged)."""
    from ..methods.data_diet.score_runs import ScoreResult

    return ScoreResult.load(path)


class _Unavailable(Exception):
    """Texts cannot be loaded; the message says why."""


def _config_from(obj: Any):
    from ..config import RunConfig

    if obj is None:
        raise _Unavailable("no run configuration to load the dataset from")
    if isinstance(obj, RunConfig):
        return obj
    if not isinstance(obj, dict):
        raise _Unavailable("the run record holds no usable configuration")
    try:
        return RunConfig.from_dict(obj)
    except DataDietError as e:
        raise _Unavailable(f"the recorded configuration is not valid any more ({e})") from None


def _load_split(cfg) -> tuple[dict[int, str], dict[int, int] | None, list[str]]:
    """(id -> text, id -> dataset label or None, label names) of the training split ``cfg`` describes.

    Only datasets that load offline are tried: built-in names and local files."""
    from ..data import BUILTIN

    name = cfg.data.name
    if name not in BUILTIN and not Path(name).exists():
        raise _Unavailable(f"dataset {name!r} is neither built in nor a local file here, and the report does not "
                           "use the network")
    from ..runner import load_data

    try:
        ds = load_data(cfg)
    except Exception as e:  # noqa: BLE001 - any loader failure (missing asset package, bad file) only drops texts
        raise _Unavailable(f"loading dataset {name!r} failed ({type(e).__name__}: {str(e)[:200]})") from None
    tr = ds.train
    ids = [int(i) for i in np.asarray(tr.ids)]
    pairs = tr.texts_pair
    texts = {i: (t if pairs is None else f"{t} ‖ {pairs[k]}") for k, (i, t) in enumerate(zip(ids, tr.texts))}
    labels = None if tr.labels is None else {i: int(y) for i, y in zip(ids, np.asarray(tr.labels))}
    return texts, labels, list(ds.label_names or [])


def _data_key(cfg) -> str:
    return json.dumps(vars(cfg.data), sort_keys=True, default=str)


def attach_texts(view: ScoresView, config: Any, *, memo: dict[str, Any] | None = None) -> None:
    """Fill ``view.texts`` (and the dataset's own labels and label names) from the dataset ``config``
    names; on any failure leave them empty and add a note saying why."""
    try:
        cfg = _config_from(config)
        key = _data_key(cfg)
        if memo is not None and key in memo:
            got = memo[key]
        else:
            try:
                got = _load_split(cfg)
            except _Unavailable as e:
                got = e
            if memo is not None:
                memo[key] = got
        if isinstance(got, _Unavailable):
            raise got
    except _Unavailable as e:
        log.info("scores view: texts not shown (%s)", e)
        view.notes.append(f"Texts not shown: {e}. Ids and labels are from the scores file.")
        return
    texts, labels, names = got
    ids = [int(i) for i in view.result.ids]
    missing = [i for i in ids if i not in texts]
    if len(missing) == len(ids):
        view.notes.append(f"Texts not shown: none of the {len(ids)} ids of the scores file is in the training split "
                          f"of dataset {cfg.data.name!r} as configured (a different dataset or split settings?).")
        return
    if missing:
        view.notes.append(f"{len(missing)} of {len(ids)} ids of the scores file are not in the training split of "
                          f"dataset {cfg.data.name!r} as configured; their texts are not shown.")
    view.texts = texts
    view.original_labels = labels
    if not view.label_names and names:
        view.label_names = names
    if view.dataset is None:
        view.dataset = cfg.data.name


def _flips_from_record(rec: dict[str, Any] | None) -> frozenset[int] | None:
    ln = (rec or {}).get("label_noise")
    if not isinstance(ln, dict) or not isinstance(ln.get("flipped_ids"), list):
        return None
    try:
        return frozenset(int(i) for i in ln["flipped_ids"])
    except (TypeError, ValueError):
        return None


def _cell_name(row: dict[str, Any]) -> str:
    return str(row.get("cell") or f"{row.get('dataset')}/{row.get('label') or row.get('method')}/s{row.get('seed')}")


def collect_scores(root: str | Path, rows: Sequence[dict[str, Any]], records: dict[int, dict[str, Any]], *,
                   load_texts: bool = True) -> dict[tuple, ScoresPart]:
    """(suite, dataset) -> the distinct scores files that the finished ``rows`` left in their run folders.

    ``records`` maps ``id(row)`` to its run record (label names, planted flips, the config that loads
    the texts). Unreadable scores files are listed, not fatal; so is a dataset that cannot be loaded.
    """
    root = Path(root)
    out: dict[tuple, ScoresPart] = {}
    memo: dict[str, Any] = {}
    configs: dict[int, Any] = {}
    for r in rows:
        rd = r.get("run_dir")
        if not rd:
            continue
        p = root / str(rd) / SCORES_FILE
        if not p.is_file():
            continue
        key = (r.get("suite"), r.get("dataset"))
        part = out.setdefault(key, ScoresPart())
        rel = str(Path(str(rd)) / SCORES_FILE)
        try:
            res = read_scores(p)
        except (DataDietError, OSError) as e:
            log.warning("scores view: %s skipped (%s)", p, e)
            part.unreadable.append(f"{rel}: {e}")
            continue
        digest = score_digest(res)
        view = next((v for v in part.views if v.digest == digest), None)
        if view is not None:
            view.sources.append(rel)
            view.cells.append(_cell_name(r))
            continue
        rec = records.get(id(r)) or {}
        names = rec.get("label_names") if isinstance(rec.get("label_names"), list) else []
        flips = _flips_from_record(rec)
        view = ScoresView(result=res, digest=digest, sources=[rel], cells=[_cell_name(r)],
                          dataset=None if r.get("dataset") is None else str(r.get("dataset")),
                          label_names=[str(n) for n in names], flipped_ids=flips,
                          flip_source="the run record's label_noise.flipped_ids" if flips is not None else "")
        part.views.append(view)
        configs[id(view)] = rec.get("config")
    if load_texts:
        for part in out.values():
            for v in part.views:
                attach_texts(v, configs.get(id(v)), memo=memo)
    n = sum(len(p.views) for p in out.values())
    if n:
        log.info("scores view: %d distinct scores file(s) in %d section(s)", n, len(out))
    return out


def view_for_file(path: str | Path, *, config: Any = None, load_texts: bool = True) -> ScoresView:
    """A view of one scores file (``datadiet report --scores``).

    ``config`` (a RunConfig) names the dataset for the texts. Without it, a ``record.json`` beside the
    scores file (a run folder) supplies the config, label names and planted flips; with neither, the
    view shows ids and labels only. With a config whose ``data.label_noise`` is set, the planted
    flips are the examples whose label in the scores file differs from the dataset's.
    """
    p = Path(path)
    res = read_scores(p)
    view = ScoresView(result=res, digest=score_digest(res), sources=[str(p)])
    rec = None
    if config is None:
        rp = p.with_name(RECORD)
        if rp.is_file():
            try:
                rec = json.loads(rp.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                log.info("scores view: %s not used (%s)", rp, e)
                rec = None
            if not isinstance(rec, dict):
                rec = None
    if rec is not None:
        names = rec.get("label_names")
        view.label_names = [str(n) for n in names] if isinstance(names, list) else []
        view.flipped_ids = _flips_from_record(rec)
        if view.flipped_ids is not None:
            view.flip_source = "the run record's label_noise.flipped_ids"
        view.notes.append(f"Config, label names and planted flips from the run record beside the scores file ({rp}).")
        config = rec.get("config")
    if not load_texts:
        return view
    if config is None:
        view.notes.append("Texts not shown: no config given (pass -c CONFIG, the config the scores were computed "
                          "with). Ids and labels are from the scores file.")
        return view
    attach_texts(view, config)
    cfg_noise = getattr(getattr(config, "data", None), "label_noise", None)
    if (view.flipped_ids is None and cfg_noise and view.original_labels is not None
            and res.labels is not None):
        trained = {int(i): int(y) for i, y in zip(res.ids, res.labels)}
        view.flipped_ids = frozenset(i for i, y in trained.items()
                                     if i in view.original_labels and view.original_labels[i] != y)
        view.flip_source = "labels in the scores file that differ from the dataset's (the config sets data.label_noise)"
    return view


# ----------------------------------------------------------------------------------------------
# HTML
# ----------------------------------------------------------------------------------------------

SCORES_CSS = """
.hists { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 10px; max-width: 1600px; }
.hists figure { margin: 0; background: #fff; border: 1px solid #e2e2e2; border-radius: 4px; padding: 4px; }
.hists svg { display: block; width: 100%; height: auto; }
.hists svg .bar:hover { opacity: 0.7; }
table.top td.text { max-width: 760px; }
tr.flip td { background: #fdecea; }
h4 { font-size: 14px; margin: 14px 0 6px; }
.scores .key { display: inline-block; width: 10px; height: 10px; margin: 0 4px 0 10px; border-radius: 2px; }
"""


def _hist_svg(view: ScoresView, c: int, edges: np.ndarray, counts: np.ndarray, flips: np.ndarray | None,
              *, width: int = 380, height: int = 230) -> str:
    """One class's histogram: clean examples as bars, planted flips stacked on top."""
    name = view.class_name(c)
    total = int(counts.sum())
    n_flip = int(flips.sum()) if flips is not None else 0
    title = f"{name}: {total:,} example{'s' if total != 1 else ''}"
    if flips is not None:
        title += f", {n_flip:,} planted flips"
    left, right, top, bottom = 52, width - 12, 34, height - 44
    sx = Scale([float(edges[0]), float(edges[-1])], left, right, fixed=(float(edges[0]), float(edges[-1])))
    ymax = max(1, int(counts.max()) if len(counts) else 1)
    sy = Scale([0.0, float(ymax)], bottom, top, fixed=(0.0, ymax * 1.08))
    o = svg_open("score-hist", title, width=width, height=height, left=left, title_y=20, title_size=12, title_chars=52)
    for v, t in sx.ticks(4):
        px = sx(v)
        o.append(f'<line x1="{px:.1f}" y1="{bottom}" x2="{px:.1f}" y2="{bottom + 4}" stroke="#444"/>')
        o.append(f'<text x="{px:.1f}" y="{bottom + 16}" font-size="10" text-anchor="middle" fill="#333">{esc(t)}</text>')
    for v, t in sy.ticks(4):
        py = sy(v)
        o.append(f'<line x1="{left}" y1="{py:.1f}" x2="{right}" y2="{py:.1f}" stroke="#eee"/>')
        o.append(f'<text x="{left - 6}" y="{py + 3:.1f}" font-size="10" text-anchor="end" fill="#333">{esc(t)}</text>')
    last = len(counts) - 1
    for i, n in enumerate(counts):
        n = int(n)
        if n == 0:
            continue
        f = int(flips[i]) if flips is not None else 0
        x0, x1 = sx(float(edges[i])), sx(float(edges[i + 1]))
        w = max(0.5, x1 - x0 - 0.6)
        rng = f"[{edges[i]:.4g}, {edges[i + 1]:.4g}{']' if i == last else ')'}"
        tip = f"{name}, score {rng}: {n:,} example{'s' if n != 1 else ''}"
        if flips is not None:
            tip += f" ({f:,} planted flips)"
        y_clean = sy(float(n - f))
        o.append(f'<g class="bar"><title>{esc(tip)}</title>')
        if n - f > 0:
            o.append(f'<rect x="{x0 + 0.3:.1f}" y="{y_clean:.1f}" width="{w:.1f}" height="{bottom - y_clean:.1f}" '
                     f'fill="{CLEAN_COLOR}"/>')
        if f > 0:
            y_top = sy(float(n))
            o.append(f'<rect class="flipbar" x="{x0 + 0.3:.1f}" y="{y_top:.1f}" width="{w:.1f}" '
                     f'height="{y_clean - y_top:.1f}" fill="{FLIP_COLOR}"/>')
        o.append("</g>")
    o.append(f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" stroke="#444"/>')
    o.append(f'<text x="{(left + right) / 2:.1f}" y="{height - 10}" font-size="11" text-anchor="middle" fill="#111">'
             f'mean {esc(view.result.kind)} score (larger = harder)</text>')
    o.append(f'<text transform="translate(13 {(top + bottom) / 2:.1f}) rotate(-90)" font-size="11" '
             f'text-anchor="middle" fill="#111">examples</text>')
    o.append("</svg>")
    return "\n".join(o)


def _histograms(view: ScoresView) -> list[str]:
    r = view.result
    scores = np.asarray(r.scores, dtype=np.float64)
    if len(scores) == 0:
        return []
    edges = score_bin_edges(scores, default_bins(len(scores)))
    hists = class_histograms(scores, r.labels, edges)
    mask = view.flipped_mask()
    fl = None
    if mask is not None:
        fl = class_histograms(scores[mask], None if r.labels is None else np.asarray(r.labels)[mask], edges)
    return [_hist_svg(view, c, edges, counts,
                      None if fl is None else fl.get(c, np.zeros_like(counts)))
            for c, counts in hists.items()]


def _text_of(view: ScoresView, i: int, limit: int) -> str | None:
    if view.texts is None:
        return None
    t = view.texts.get(i)
    return None if t is None else trunc(" ".join(str(t).split()), limit)


def _flip_text(view: ScoresView, i: int) -> str:
    if view.flipped_ids is None or i not in view.flipped_ids:
        return ""
    orig = (view.original_labels or {}).get(i)
    return "planted flip" + (f" (was {view.class_name(orig)})" if orig is not None else "")


def _rows(view: ScoresView, n: int) -> list[dict[str, Any]]:
    r = view.result
    out = []
    for rank, pos in enumerate(top_positions(r.scores, n), 1):
        i = int(r.ids[pos])
        out.append({"rank": rank, "id": i, "score": float(r.scores[pos]),
                    "label": DASH if r.labels is None else view.class_name(int(r.labels[pos])),
                    "flip": _flip_text(view, i), "position": int(pos)})
    return out


def _summary_line(view: ScoresView, n_top: int) -> str:
    """Plain text: what the scores are and how well they find the planted flips."""
    parts = [view.describe()]
    if view.flipped_ids is not None:
        mask = view.flipped_mask()
        a = view.flip_auroc()
        per = view.flip_auroc_per_run()
        top = top_positions(view.result.scores, n_top)
        k = int(mask[top].sum()) if mask is not None else 0
        s = f"planted flips: {int(mask.sum()):,}"
        if a is not None:
            s += f"; AUROC of the mean score for them {a:.3f}"
            if len(per) > 1:
                s += f" (single runs {min(per):.3f}–{max(per):.3f})"
        s += f"; {k} of the top {min(n_top, len(view.result))}"
        parts.append(s)
    return "; ".join(parts)


def _view_html(view: ScoresView, *, top: int) -> tuple[str, int]:
    r = view.result
    o = []
    o.append(f'<p class="note">{esc(_summary_line(view, top))}.</p>')
    meta = [f"cost {r.cost_s:.1f} s of scoring runs when computed"]
    if view.cells:
        meta.append(f"cells: {', '.join(view.cells)}")
    meta.append(f"file{'s' if len(view.sources) > 1 else ''}: {', '.join(view.sources)}")
    if view.flip_source:
        meta.append(f"planted flips from {view.flip_source}")
    o.append(f'<p class="note">{esc("; ".join(meta))}.</p>')
    a = view.flip_auroc()
    if a is not None:
        o.append(f'<p class="auroc">AUROC of the mean {esc(r.kind)} score for the planted flips: '
                 f'<b class="auroc-value">{a:.3f}</b> <span class="note">(1.0: every flipped example scores above '
                 f'every clean one; 0.5: chance)</span></p>')
    for note in view.notes:
        o.append(f'<p class="note texts-note">{esc(note)}</p>')
    hists = _histograms(view)
    if hists:
        key = (f'<span class="key" style="background:{CLEAN_COLOR}"></span>examples'
               + (f'<span class="key" style="background:{FLIP_COLOR}"></span>planted flips (stacked on top)'
                  if view.flipped_ids is not None else ""))
        o.append('<p class="note">Mean score per class (the label each example was trained on); shared bins. '
                 f"{key}</p>")
        o.append('<div class="hists">' + "".join(f"<figure>{h}</figure>" for h in hists) + "</div>")
    rows = _rows(view, top)
    flips = view.flipped_ids is not None
    heads = ["rank", "id", f"mean {r.kind}", "label"] + (["planted flip"] if flips else []) + \
            (["text"] if view.texts is not None else [])
    t = [f'<h4>The {len(rows)} highest-scoring training examples</h4>',
         '<table class="top"><thead><tr>' + "".join(f"<th>{esc(h)}</th>" for h in heads) + "</tr></thead><tbody>"]
    for row in rows:
        cls = ' class="flip"' if row["flip"] else ""
        cells = [f'<td class="num">{row["rank"]}</td>', f'<td class="num">{row["id"]}</td>',
                 f'<td class="num">{row["score"]:.4f}</td>', f'<td class="label">{esc(row["label"])}</td>']
        if flips:
            cells.append(f"<td>{esc(row['flip']) or DASH}</td>")
        if view.texts is not None:
            txt = _text_of(view, row["id"], TEXT_CHARS)
            cells.append(f'<td class="text">{esc(txt) if txt is not None else DASH}</td>')
        t.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
    t.append("</tbody></table>")
    o += t
    return "\n".join(o), len(hists)


def html_part(part: ScoresPart, *, top: int = TOP_N, anchor: str = "scores",
              standalone: bool = False) -> tuple[str, int]:
    """The "Scores" part of one report section; returns (html, number of SVG plots)."""
    o = [f'<div class="scores" id="{esc(anchor)}">', "<h3>Scores</h3>",
         '<p class="note">Scores of the training examples from the data diet\'s scoring runs (larger = harder: '
         "likely label errors, ambiguous or atypical examples)."
         + ("" if standalone else " Identical scores files written by several cells are shown once.") + "</p>"]
    n_plots = 0
    views = part.views
    if len(views) > 1:
        o.append('<table class="scores-files"><thead><tr><th>#</th><th>score</th><th>scoring seeds</th><th>step</th>'
                 "<th>examples</th><th>planted flips</th><th>AUROC</th><th>cells</th></tr></thead><tbody>")
        for k, v in enumerate(views, 1):
            r = v.result
            a = v.flip_auroc()
            n_flips = DASH if v.flipped_ids is None else fmt_count(int(v.flipped_mask().sum()))
            o.append(f'<tr><td class="num">{k}</td><td>{esc(r.kind)}</td><td>{esc(", ".join(map(str, r.seeds)))}</td>'
                     f'<td class="num">{r.steps}</td><td class="num">{fmt_count(len(r))}</td>'
                     f'<td class="num">{n_flips}</td><td class="num">{DASH if a is None else f"{a:.3f}"}</td>'
                     f'<td>{esc(", ".join(v.cells))}</td></tr>')
        o.append("</tbody></table>")
    for k, v in enumerate(views, 1):
        inner, n = _view_html(v, top=top)
        n_plots += n
        if len(views) > 1:
            o.append(f'<details class="scores-file"{" open" if k == 1 else ""}><summary>#{k}: {esc(v.describe())}'
                     f"</summary>{inner}</details>")
        else:
            o.append(inner)
    if part.unreadable:
        o.append('<p class="note">Scores files not shown (unreadable): ' + esc("; ".join(part.unreadable)) + "</p>")
    o.append("</div>")
    return "\n".join(o), n_plots


def markdown_part(part: ScoresPart, *, top: int = TOP_N_MD) -> list[str]:
    """The short Markdown version: a line per distinct scores file and its top-``top`` table."""
    out = ["### Scores", ""]
    for v in part.views:
        out.append(md_escape(_summary_line(v, top)) + ". Cells: " + md_escape(", ".join(v.cells) or DASH) + ".")
        out.append("")
        for note in v.notes:
            out += [md_escape(note), ""]
        flips = v.flipped_ids is not None
        heads = ["rank", "id", f"mean {v.result.kind}", "label"] + (["planted flip"] if flips else []) + \
                (["text"] if v.texts is not None else [])
        out.append("| " + " | ".join(md_escape(h) for h in heads) + " |")
        out.append("|" + "|".join(["---:", "---:", "---:", ":---"] + [":---"] * (len(heads) - 4)) + "|")
        for row in _rows(v, top):
            cells = [str(row["rank"]), str(row["id"]), f"{row['score']:.4f}", md_escape(row["label"])]
            if flips:
                cells.append(md_escape(row["flip"]) or DASH)
            if v.texts is not None:
                txt = _text_of(v, row["id"], TEXT_CHARS)
                cells.append(DASH if txt is None else md_escape(txt))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    if part.unreadable:
        out += ["Scores files not shown (unreadable): " + md_escape("; ".join(part.unreadable)), ""]
    return out


def standalone_html(view: ScoresView, *, top: int = TOP_N, title: str | None = None,
                    generated: str | None = None) -> tuple[str, int]:
    """A self-contained page with the scores view of one file; returns (html, number of plots)."""
    title = title or f"datadiet scores: {view.dataset or Path(view.sources[0]).name} ({view.result.kind})"
    generated = generated or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    inner, n = html_part(ScoresPart(views=[view]), top=top, standalone=True)
    r = view.result
    meta = [("scores file", view.sources[0]), ("score", r.kind), ("scoring seeds", ", ".join(map(str, r.seeds))),
            ("step", str(r.steps)), ("examples", fmt_count(len(r))), ("generated", generated)]
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in meta)
    return html_page(title, dl, inner, css=SCORES_CSS), n


def write_scores_report(path: str | Path, out: str | Path | None = None, *, config: Any = None, top: int = TOP_N,
                        title: str | None = None) -> tuple[Path, ScoresView]:
    """Write the scores view of one scores file to ``out`` (default: ``<file stem>-scores.html`` beside it).

    ``config`` (a RunConfig) names the dataset to recover texts from. Returns (html path, view); the
    view's ``notes`` say what could not be shown."""
    p = Path(path)
    view = view_for_file(p, config=config)
    dest = Path(out) if out is not None else p.with_name(p.stem + "-scores.html")
    doc, n = standalone_html(view, top=top, title=title)
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(dest, doc)
    log.info("scores view: %s (%d histograms, top %d)", dest, n, top)
    return dest, view
