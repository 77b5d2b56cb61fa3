"""Rendering pieces shared by the benchmark report (:mod:`datadiet.bench.report`) and the scores
view (:mod:`datadiet.bench.scores_view`): number and Markdown formatting, the self-contained HTML
page skeleton and its style, the SVG axis scale and plot opening, and the atomic file write.

Both modules import this one; it imports neither (nor anything else of the package). Only the
standard library is used.
"""

from __future__ import annotations

import html
import math
import re
from pathlib import Path
from typing import Any, Sequence

__all__ = ["CSS", "DASH", "Scale", "esc", "fmt_count", "html_page", "md_escape", "num", "svg_open", "trunc",
           "write_atomic"]

#: HTML-escape text (``html.escape``, quotes included).
esc = html.escape

DASH = "—"


def num(v: Any) -> float | None:
    """A finite float, or None."""
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def fmt_count(v: Any) -> str:
    """A count with thousands separators (one decimal if not whole), or a dash."""
    f = num(v)
    if f is None:
        return DASH
    return f"{f:,.0f}" if f == int(f) else f"{f:,.1f}"


_MD_SPECIAL = re.compile(r"([\\`*\[\]<>|])")


def md_escape(text: Any) -> str:
    """Markdown-escape data text (pipes, HTML brackets, emphasis) and keep it on one line."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def trunc(s: str, n: int) -> str:
    """``s`` cut to at most ``n`` characters, an ellipsis marking the cut."""
    return s if len(s) <= n else s[: n - 1] + "…"


# ----------------------------------------------------------------------------------------------
# SVG plots
# ----------------------------------------------------------------------------------------------


class Scale:
    """Maps data values to pixels; linear or log10, with 'nice' ticks."""

    def __init__(self, values: Sequence[float], p0: float, p1: float, *, log: bool = False,
                 fixed: tuple[float, float] | None = None, pad: float = 0.08):
        self.log = log and all(v > 0 for v in values) and bool(values)
        vs = [math.log10(v) for v in values] if self.log else list(values)
        if fixed is not None:
            lo, hi = fixed
        elif not vs:
            lo, hi = 0.0, 1.0
        else:
            lo, hi = min(vs), max(vs)
            if hi - lo < 1e-12 * max(1.0, abs(hi)):
                d = abs(hi) * 0.05 or 0.5
                lo, hi = lo - d, hi + d
            span = hi - lo
            lo, hi = lo - pad * span, hi + pad * span
        self.lo, self.hi, self.p0, self.p1 = lo, hi, p0, p1

    def __call__(self, v: float) -> float:
        x = math.log10(v) if self.log else v
        return self.p0 + (x - self.lo) / (self.hi - self.lo) * (self.p1 - self.p0)

    def ticks(self, n: int = 5) -> list[tuple[float, str]]:
        if self.log:
            return self._log_ticks()
        out: list[tuple[float, str]] = []
        for target in (n, n + 2, n + 5):  # at least 3 labelled ticks where possible
            out = self._linear_ticks(self.lo, self.hi, target)
            if len(out) >= 3:
                break
        return out

    @staticmethod
    def _linear_ticks(lo: float, hi: float, n: int) -> list[tuple[float, str]]:
        step = _nice_step((hi - lo) / n)
        start = math.ceil(lo / step - 1e-9) * step
        out = []
        k = 0
        while True:
            v = start + k * step
            if v > hi + 1e-9 * step:
                break
            v = 0.0 if abs(v) < step * 1e-9 else v
            out.append((v, _tick_label(v, step)))
            k += 1
        return out

    def _log_ticks(self) -> list[tuple[float, str]]:
        lo, hi = self.lo, self.hi
        best: list[tuple[float, str]] = []
        for mults in ((1, 2, 3, 5), (1, 2, 5), (1, 3), (1,)):
            out = []
            for e in range(math.floor(lo) - 1, math.ceil(hi) + 1):
                for m in mults:
                    v = m * 10.0 ** e
                    if lo - 1e-9 <= math.log10(v) <= hi + 1e-9:
                        out.append((v, _tick_label(v, v)))
            if len(out) <= 8:
                best = out
                break
        if len(best) >= 3:
            return best
        # a narrow log range (< a decade or so): ordinary ticks placed on the log axis
        return [t for t in self._linear_ticks(10 ** lo, 10 ** hi, 5) if t[0] > 0]


def _nice_step(raw: float) -> float:
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * mag >= raw * (1 - 1e-9):
            return m * mag
    return 10 * mag


def _tick_label(v: float, step: float) -> str:
    a = abs(v)
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= div and a >= 10_000:
            return _tick_label(v / div, step / div) + suf
    if step >= 1 and float(v).is_integer():
        return f"{v:.0f}"
    digits = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 2
    if round(step * 10 ** digits, 6) % 1:  # e.g. 2.5 steps need one more digit
        digits += 1
    return f"{v:.{min(digits, 6)}f}"


def svg_open(kind: str, title: str, *, width: int, height: int, left: float, title_y: int, title_size: int,
             title_chars: int) -> list[str]:
    """The opening of every inline plot: the svg element, its accessible title, background and heading."""
    return [f'<svg class="plot" data-kind="{esc(kind)}" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="{esc(title)}" font-family="system-ui, -apple-system, '
            f'Segoe UI, Roboto, DejaVu Sans, Arial, sans-serif">',
            f"<title>{esc(title)}</title>",
            f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>',
            f'<text x="{left}" y="{title_y}" font-size="{title_size}" font-weight="600" fill="#111">'
            f'{esc(trunc(title, title_chars))}</text>']


# ----------------------------------------------------------------------------------------------
# HTML page
# ----------------------------------------------------------------------------------------------


CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif; margin: 24px;
       color: #1b1b1b; background: #fafafa; line-height: 1.4; }
h1 { font-size: 24px; margin: 0 0 8px; } h2 { font-size: 19px; margin: 32px 0 6px; border-bottom: 1px solid #ddd;
padding-bottom: 4px; } h3 { font-size: 15px; margin: 18px 0 6px; }
.meta { display: grid; grid-template-columns: max-content auto; gap: 2px 14px; font-size: 13px; margin: 8px 0 16px; }
.meta dt { color: #666; } .meta dd { margin: 0; }
.note { color: #555; font-size: 13px; }
table { border-collapse: collapse; font-size: 13px; background: #fff; margin: 6px 0 12px; }
th, td { border: 1px solid #ddd; padding: 4px 8px; } th { background: #f0f0f0; font-weight: 600; vertical-align: bottom; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.ref td { background: #f7f7f7; }
tr.control td.label { font-style: italic; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 6px; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 16px; max-width: 1600px; }
.plots figure { margin: 0; background: #fff; border: 1px solid #e2e2e2; border-radius: 4px; padding: 4px; }
.plots svg { display: block; width: 100%; height: auto; }
td.label { white-space: nowrap; }
.plots svg .pt:hover, .plots svg .med:hover { stroke: #000; stroke-width: 2; }
.plots svg .ln:hover { stroke-width: 3; opacity: 1; }
details { margin: 6px 0 12px; } summary { cursor: pointer; color: #333; font-size: 13px; }
pre.err { white-space: pre-wrap; font-size: 12px; background: #fff4f4; border: 1px solid #f0caca; padding: 6px; }
"""


def html_page(title: str, meta_dl: str, body: str, *, css: str = "") -> str:
    """A self-contained report page: the shared style (plus ``css``), a heading, the meta list and ``body``."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<style>{CSS}{css}</style>
</head>
<body>
<h1>{esc(title)}</h1>
<dl class="meta">{meta_dl}</dl>
{body}
</body>
</html>
"""


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
