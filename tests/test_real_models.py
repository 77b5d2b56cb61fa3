"""Real pretrained models and real data (slow: run with `make test-slow` or `pytest -m slow`)."""

from __future__ import annotations

import time

import pytest

from datadiet.config import load_config
from datadiet.runner import run

pytestmark = pytest.mark.slow


def test_minilm_classifier_trains_on_rotten_tomatoes(tmp_path):
    cfg = load_config(None, ["model.name=minilm", "data.max_train=256", "data.max_test=128", "train.epochs=1",
                             "train.threads=2", f"output_dir={tmp_path}"])
    rec = run(cfg)
    assert rec["status"] == "finished" and rec["counts"]["examples_backpropagated"] == 256
    assert rec["value"] > 0.55  # above chance after 16 steps on real weights


def test_smollm2_converts_once_then_reloads_fast_and_fine_tunes_on_austen(tmp_path, monkeypatch):
    from datadiet.models import load_model
    from datadiet.models.registry import smollm2_folder

    t0 = time.perf_counter()
    folder = smollm2_folder()  # converts from the packaged GGUF on first use
    first = time.perf_counter() - t0
    assert (folder / "config.json").exists()
    t0 = time.perf_counter()
    lm = load_model("smollm2-135m", task="causal_lm")
    reload_s = time.perf_counter() - t0
    assert reload_s < 15, f"reload from the cache took {reload_s:.1f}s (first call {first:.1f}s)"
    assert sum(p.numel() for p in lm.model.parameters()) > 100e6

    cfg = load_config(None, ["model.name=smollm2-135m", "data.name=austen", "data.context_length=32",
                             "data.max_contexts=32", "data.max_test=16", "train.batch_size=8", "train.lr=5e-5",
                             "train.threads=2", "train.eval_batch_size=8", "method.name=random_skip",
                             "method.params.rate=0.5", f"output_dir={tmp_path}"])
    rec = run(cfg)
    assert rec["metric"] == "perplexity" and 1 < rec["value"] < 1e4
    c = rec["counts"]
    assert c["examples_seen"] == 32 and c["examples_backpropagated"] + c["skipped"]["random_skip"] == 32
