"""The HTML report in a real browser (headless Debian Chromium): renders, plots marks, no console errors.

Slow and needs ``chromium`` on PATH (Debian: ``apt-get install chromium``); skipped without it.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess

import pytest

from datadiet.bench.report import write_report

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=3000", "--hide-scrollbars"]


def _build(d):
    """cls (accuracy): full/random_skip/selective_backprop x2 seeds, records with curves + skip histories;
    lm (perplexity): full/random_skip x1 seed, records with step losses only (no curves)."""
    lines = []
    specs = [("cls", "accuracy", {"full": (0.84, 100.0, 0.0), "random_skip": (0.82, 70.0, 0.3),
                                  "selective_backprop": (0.83, 65.0, 0.5)}, 2),
             ("lm", "perplexity", {"full": (25.0, 200.0, 0.0), "random_skip": (27.0, 150.0, 0.25)}, 1)]
    for ds, metric, methods, n_seeds in specs:
        for label, (val, wall, skip) in methods.items():
            for seed in range(n_seeds):
                v = val + 0.01 * seed
                bp = int(3000 * (1 - skip))
                run_dir = f"runs/{ds}/{label}/s{seed}"
                lines.append(json.dumps({
                    "suite": "browser", "cell": f"{ds}/{label}/s{seed}", "dataset": ds, "model": "tiny",
                    "method": label, "label": label, "params": {}, "seed": seed, "metric": metric, "value": v,
                    "macro_f1": v - 0.01 if metric == "accuracy" else None, "wall_clock_s": wall + seed,
                    "train_s": wall - 1, "selection_s": 1.0, "eval_s": 3.0, "filter_s": 0.2, "examples_seen": 3000,
                    "examples_forwarded": 3000, "examples_backpropagated": bp, "optimizer_steps": bp // 32,
                    "skipped": {}, "n_train": 1000, "n_train_used": 1000, "status": "finished", "run_dir": run_dir,
                    "torch": "2.5.1", "threads": 2, "device": "cpu", "finished_at": "2024-11-21T10:00:00"}))
                rec = {"skip_history": [{"batch": 4 * i, "epoch": 0, "seen": 128, "kept": int(128 * (1 - skip)),
                                         "skip_rate": skip + (0.02 * math.sin(i) if skip else 0.0)}
                                        for i in range(1, 41)],
                       "step_losses": [2.0 * math.exp(-i / 40) + 0.05 * math.sin(i) for i in range(bp // 32)]}
                if metric == "accuracy":
                    rec["curve"] = [{"optimizer_steps": 10 * k, "train_s": (wall - 1) * k / 6,
                                     "accuracy": v - 0.25 * math.exp(-k / 2), "macro_f1": None} for k in range(1, 7)]
                (d / run_dir).mkdir(parents=True)
                (d / run_dir / "record.json").write_text(json.dumps(rec))
    (d / "results.jsonl").write_text("\n".join(lines) + "\n")
    return d


def _chromium(tmp_path, *args):
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=180)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium on PATH (apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    _, html_path = write_report(_build(tmp_path / "suite"))
    url = html_path.resolve().as_uri()

    res = _chromium(tmp_path, "--dump-dom", url)
    assert res.returncode == 0, res.stderr[-3000:]
    dom = res.stdout
    assert re.search(r'<body[^>]*data-rendered="1"', dom), "the inline script did not run"
    svgs = re.findall(r"<svg\b[^>]*class=\"plot\".*?</svg>", dom, flags=re.DOTALL)
    # cls: quality vs wall-clock, vs backprop, skip rate, learning curves, time to accuracy; lm: the first
    # four with training loss
    assert len(svgs) == 9
    assert dom.count("<svg") == 9
    for svg in svgs:
        assert re.search(r'<(circle|path) class="(pt|med|ln)"', svg), svg[:300]
    assert re.search(r'id="plot-count">9<', dom)
    kinds = re.findall(r'data-kind="([^"]+)"', dom)
    assert kinds.count("curve") == 1 and kinds.count("loss") == 1 and kinds.count("skip") == 2
    assert kinds.count("tta") == 1
    console = [ln for ln in res.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not console, "\n".join(console)

    shot = tmp_path / "shot.png"
    res = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,2400", url)
    assert res.returncode == 0, res.stderr[-3000:]
    assert shot.exists() and shot.stat().st_size > 20_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
