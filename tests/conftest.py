"""Shared fixtures: tiny models and tiny planted datasets (offline, fast)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(1)


def planted_texts(n: int = 64, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Half the examples say 'good ...' (label 1), half 'bad ...' (label 0); random filler words."""
    rng = np.random.default_rng(seed)
    words = ["the", "movie", "plot", "actor", "scene", "film", "story", "music", "cast", "ending"]
    texts, labels = [], []
    for i in range(n):
        lab = i % 2
        filler = " ".join(rng.choice(words, size=rng.integers(2, 8)))
        texts.append(f"{'good' if lab else 'bad'} {filler} {i}")
        labels.append(lab)
    return texts, np.asarray(labels, dtype=np.int64)


@pytest.fixture
def tiny_cls():
    """(model, tokenizer, TokenizedSplit, Collator) for a 64-example planted classification set."""
    from datadiet.data.collate import Collator, TokenizedSplit
    from datadiet.data.types import TextSplit
    from datadiet.models.tiny import tiny_model

    texts, labels = planted_texts(64)
    split = TextSplit(ids=np.arange(100, 164), texts=texts, labels=labels)
    model, tok = tiny_model("tiny-bert", num_labels=2, seed=0)
    ds = TokenizedSplit(split, tok, max_length=32)
    return model, tok, ds, Collator(pad_token_id=tok.pad_token_id)


def make_tiny_bert(seed: int = 0):
    from datadiet.models.tiny import tiny_model

    return tiny_model("tiny-bert", num_labels=2, seed=seed)[0]


def _skip_all_filter():
    from datadiet.core.filter import Decision, OnlineFilter

    class SkipAll(OnlineFilter):
        """Skips every example before its forward."""

        stage = "pre_forward"
        reason = "skip_all"

        def decide(self, batch, losses):
            return Decision(keep=torch.zeros(len(batch), dtype=torch.bool))

    return SkipAll


SkipAll = _skip_all_filter()


def resume_vs_uninterrupted(build, ds, collator, *, epochs: int, stop_after: int = 1, lr: float = 1e-3):
    """Train ``epochs`` epochs straight, and again stopped after ``stop_after`` epochs with model,
    optimizer and engine state restored into fresh objects from ``build() -> (model, engine, opt)``.

    Returns ``((model, engine), (model, engine))``: uninterrupted, resumed.
    """
    from datadiet.loop import fit

    kw = dict(collator=collator, lr=lr, seed=0, schedule="constant")
    m1, e1, o1 = build()
    fit(m1, ds, engine=e1, epochs=epochs, optimizer=o1, **kw)
    m2, e2, o2 = build()
    fit(m2, ds, engine=e2, epochs=stop_after, optimizer=o2, **kw)
    saved = {"model": {k: v.clone() for k, v in m2.state_dict().items()}, "opt": o2.state_dict(),
             "engine": e2.state_dict()}
    m3, e3, o3 = build()
    m3.load_state_dict(saved["model"])
    o3.load_state_dict(saved["opt"])
    e3.load_state_dict(saved["engine"])
    assert e3.epoch == stop_after
    fit(m3, ds, engine=e3, epochs=epochs, optimizer=o3, **kw)
    return (m1, e1), (m3, e3)


def cli_error(capsys, argv) -> str:
    """Run ``datadiet`` with ``argv``; assert exit 2 and exactly one clean ``error:`` line; return it."""
    from datadiet.cli.main import main

    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "error: " in err and "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


class RecordingAdamW(torch.optim.AdamW):
    """AdamW that records ``(examples seen by engine, lr)`` at every step in ``trace``."""

    def __init__(self, params, engine, **kw):
        super().__init__(params, **kw)
        self.engine = engine
        self.trace = []  # (examples seen when stepping, lr)

    def step(self, closure=None):
        self.trace.append((self.engine.counts.examples_seen, self.param_groups[0]["lr"]))
        return super().step(closure)
