"""Optional features of the meta predictor (issue 19): label-conditioned tokens and length.

Planted truth: when an example's hardness depends on its label *and* a keyword together, text alone
says nothing (the guard keeps stage 2 off) and the label-conditioned tokens say everything (stage 2
skips the easy ones); when hardness depends on length, the length feature carries it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datadiet.core.engine import StepEngine
from datadiet.core.method import PlanContext
from datadiet.errors import ConfigError
from datadiet.methods.multistage.loss_threshold import LossThresholdMethod
from datadiet.methods.multistage.meta_predictor import (
    LENGTH_EDGES,
    MetaPredictor,
    label_token_presence,
    length_bucket,
)
from datadiet.methods.multistage.method import MultistageMethod
from datadiet.methods.registry import build_method

from test_multistage import EASY, planted_token_batches


def test_label_token_features_pair_each_token_with_the_label():
    ids = torch.tensor([[3, 4, 3, 0], [3, 4, 0, 0], [3, 4, 0, 0]])
    am = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 0, 0]])
    rows, feats = label_token_presence(ids, am, torch.tensor([0, 0, 1]), base=100, buckets=1 << 16)
    got = {}
    for r, f in zip(rows.tolist(), feats.tolist()):
        got.setdefault(r, set()).add(f)
    assert all(len(v) == 2 for v in got.values()), "distinct tokens once per row; padding dropped"
    assert got[0] == got[1], "same label, same tokens: same features"
    assert not got[0] & got[2], "another label: other features"
    assert all(100 <= f < 100 + (1 << 16) for f in feats.tolist())
    with pytest.raises(ValueError, match="labels must give one class per row: got 2 labels for 3 rows"):
        label_token_presence(ids, am, torch.tensor([0, 1]), base=0, buckets=8)


def test_length_buckets_follow_the_edges():
    lengths = [1, 3, 4, 7, 8, 15, 16, 100, 512, 600]
    am = torch.zeros(len(lengths), 600, dtype=torch.long)
    for i, n in enumerate(lengths):
        am[i, :n] = 1
    got = length_bucket(torch.ones_like(am), am).tolist()
    assert got == [0, 0, 1, 1, 2, 2, 3, 5, 8, 8]
    assert LENGTH_EDGES[0] == 4 and length_bucket(torch.ones(2, 9, dtype=torch.long), None).tolist() == [2, 2]


class LabelKeywordModel(torch.nn.Module):
    """A fake classifier: keyword EASY favours class 0, its absence class 1, strongly.

    So an example is easy (loss ~0.05) when its label agrees with the keyword and hard (loss ~3)
    otherwise: importance depends on label and token together, neither alone.
    """

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, input_ids, attention_mask=None, **_):
        easy0 = (input_ids == EASY).any(dim=1)
        z = torch.where(easy0, torch.tensor(3.0), torch.tensor(-3.0))
        return torch.stack([z, -z], dim=1) / 2 + 0.0 * self.w


def run_label_stream(**kw):
    n_batches = 150
    lt = LossThresholdMethod(warmup_fraction=0.05, window=64).build_filter(n_batches * 16)
    meta = MetaPredictor(threshold=lt, vocab_size=60, hash_buckets=1 << 12, switch_window=8, seed=0, **kw)
    model = LabelKeywordModel()
    engine = StepEngine(task="classification", batch_size=16, filters=[meta, lt])
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    g = torch.Generator().manual_seed(9)
    for batch, _ in planted_token_batches(n_batches, 16, seed=4):
        batch["labels"] = (torch.rand(16, generator=g) < 0.5).long()
        engine.step(model, opt, batch)
    engine.end_epoch(model, opt)
    return meta.telemetry(), engine


@pytest.mark.parametrize("predictor", ["naive_bayes", "logistic"])
def test_label_conditioned_tokens_carry_what_text_alone_cannot(predictor):
    extra = {"lr": 0.3} if predictor == "logistic" else {}
    tel, engine = run_label_stream(predictor=predictor, **extra)
    assert tel["switch"] is None and "meta_predictor" not in engine.skipped()
    assert tel["stage2_disabled_by_guard"], "text alone: no better than random, the guard keeps stage 1"
    tel, engine = run_label_stream(predictor=predictor, label_tokens=True, **extra)
    assert tel["switch"] is not None and tel["label_tokens"] is True
    assert engine.skipped()["meta_predictor"] > 0.2 * 150 * 16
    assert tel["guard"]["state"] == "skipping" and tel["guard"]["false_skip_estimate"] < 0.1


class LengthModel(torch.nn.Module):
    """A fake classifier whose loss is low for short examples (< 8 tokens) and high for long ones."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, input_ids, attention_mask=None, **_):
        short = attention_mask.sum(dim=1) < 8
        z = torch.where(short, torch.tensor(-3.0), torch.tensor(1.0))  # CE of label 0 with logits [0, z]
        return torch.stack([torch.zeros_like(z), z], dim=1) + 0.0 * self.w


def test_length_feature_lets_the_predictor_skip_short_easy_examples():
    method = MultistageMethod(warmup_fraction=0.05, window=64, switch_window=8, vocab_size=60, seed=0,
                              predictor="logistic", lr=0.3, length_feature=True)
    meta, lt = method.build_filters(n_first_epoch=150 * 16, seed=0)
    engine = StepEngine(task="classification", batch_size=16, filters=[meta, lt])
    model = LengthModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    g = torch.Generator().manual_seed(3)
    short_ids, skipped = set(), []

    class Recording(MetaPredictor):
        def decide(self, batch, losses):
            d = super().decide(batch, losses)
            skipped.extend(batch.ids[~d.keep].tolist())
            return d

    meta.__class__ = Recording
    for b in range(150):
        n_tok = torch.where(torch.rand(16, generator=g) < 0.5, torch.randint(2, 6, (16,), generator=g),
                            torch.randint(12, 30, (16,), generator=g))
        am = (torch.arange(32).unsqueeze(0) < n_tok.unsqueeze(1)).long()
        ids = torch.randint(10, 60, (16, 32), generator=g).masked_fill(am == 0, 0)
        eid = torch.arange(b * 16, b * 16 + 16)
        short_ids.update(eid[n_tok < 8].tolist())
        engine.step(model, opt, {"input_ids": ids, "attention_mask": am, "labels": torch.zeros(16, dtype=torch.long),
                                 "example_id": eid})
    engine.end_epoch(model, opt)
    tel = meta.telemetry()
    assert tel["switch"] is not None and tel["length_feature"] is True
    assert len(skipped) > 0.3 * 150 * 16 and np.mean([i in short_ids for i in skipped]) > 0.99


def test_feature_options_are_checked():
    with pytest.raises(ConfigError, match="label_tokens must be true or false"):
        build_method("multistage", {"label_tokens": "yes"})
    with pytest.raises(ConfigError, match="length_feature must be true or false"):
        build_method("multistage", {"length_feature": 1})
    ctx = PlanContext(ids=np.arange(50), labels=None, seed=0, task="causal_lm", batch_size=8, epochs=1)
    with pytest.raises(ConfigError, match="label_tokens needs a classification task.*Set label_tokens=false"):
        build_method("multistage", {"label_tokens": True}).plan(ctx)
    with pytest.raises(ConfigError, match="needs vocab_size .* label_tokens or length_feature"):
        MultistageMethod(length_feature=True).build_filters(n_first_epoch=10, seed=0)
    meta, _ = MultistageMethod(label_tokens=True, vocab_size=60).build_filters(n_first_epoch=10, seed=0)
    from datadiet.core.filter import BatchView

    view = BatchView(ids=torch.arange(2), input_ids=torch.ones(2, 3, dtype=torch.long), attention_mask=None,
                     labels=None)
    with pytest.raises(ConfigError, match="label_tokens needs one class label per example"):
        meta._features(view.ids, view.input_ids, None, labels=None)
