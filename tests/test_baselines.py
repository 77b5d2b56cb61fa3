"""Peer baselines behave as their papers say, on planted data."""

from __future__ import annotations

import pytest
import torch

from datadiet.core.engine import StepEngine
from datadiet.loop import fit
from datadiet.core.filter import BatchView
from datadiet.methods.infobatch import InfoBatch
from datadiet.methods.selective_backprop import SelectiveBackprop, cdf_keep_probability


def view(ids):
    ids = torch.as_tensor(ids)
    return BatchView(ids=ids, input_ids=torch.zeros(len(ids), 4, dtype=torch.long), attention_mask=None,
                     labels=torch.zeros(len(ids), dtype=torch.long))


def test_cdf_keep_probability_by_hand():
    hist = torch.tensor([1.0, 2.0, 3.0, 4.0])
    p = cdf_keep_probability(torch.tensor([0.5, 2.0, 3.5, 9.0]), hist, beta=1.0, p_min=0.0)
    torch.testing.assert_close(p, torch.tensor([0.0, 0.5, 0.75, 1.0]))
    p2 = cdf_keep_probability(torch.tensor([0.5, 2.0, 3.5]), hist, beta=2.0, p_min=0.1)
    torch.testing.assert_close(p2, torch.tensor([0.1, 0.25, 0.5625]))


def test_selective_backprop_backpropagates_high_loss_examples_more_often():
    sb = SelectiveBackprop(beta=1.0, history=1024, warmup=64, seed=0)
    g = torch.Generator().manual_seed(0)
    # Fill the history with losses spread over [0, 1].
    for _ in range(8):
        sb.decide(view(range(16)), torch.rand(16, generator=g))
    hard, easy = 0, 0
    for step in range(200):
        losses = torch.cat([torch.full((8,), 0.9), torch.full((8,), 0.1)])  # first half hard, second easy
        keep = sb.decide(view(range(16)), losses).keep
        hard += int(keep[:8].sum())
        easy += int(keep[8:].sum())
    # The history ends up holding only 0.1s and 0.9s, so CDF(0.9) = 1 and CDF(0.1) = 1/2.
    assert hard / 1600 > 0.95
    assert 0.4 < easy / 1600 < 0.6
    assert sb.telemetry()["keep_rate"] > 0.6


def test_selective_backprop_keeps_everything_during_warmup_and_round_trips_state():
    sb = SelectiveBackprop(warmup=100, seed=1)
    assert sb.decide(view(range(32)), torch.rand(32)).keep.all()
    for _ in range(5):
        sb.decide(view(range(32)), torch.rand(32))
    state = sb.state_dict()
    sb2 = SelectiveBackprop(warmup=100, seed=1)
    sb2.load_state_dict(state)
    losses = torch.rand(32)
    assert torch.equal(sb.decide(view(range(32)), losses).keep, sb2.decide(view(range(32)), losses).keep)


def test_infobatch_prunes_only_below_mean_rescales_and_anneals():
    n = 100
    ib = InfoBatch(ratio=0.5, delta=0.25, planned_examples=4 * n, seed=0)
    ids = list(range(n))
    ib.on_epoch_start(0)
    d0 = ib.decide(view(ids), None)
    assert d0.keep.all(), "no scores yet: nothing is pruned in the first epoch"
    # Planted scores: ids 0..49 easy (loss 0.1), ids 50..99 hard (loss 1.0); mean = 0.55.
    ib.observe(view(ids), torch.tensor([0.1] * 50 + [1.0] * 50), trained=True)
    ib.on_epoch_start(1)
    assert ib.threshold == pytest.approx(0.55)
    d1 = ib.decide(view(ids), None)
    assert d1.keep[50:].all(), "above-mean examples are never pruned"
    pruned = (~d1.keep[:50]).sum().item()
    assert 10 < pruned < 40  # about half of the 50 easy ones
    kept_easy = d1.keep[:50]
    torch.testing.assert_close(d1.weight[:50][kept_easy], torch.full((int(kept_easy.sum()),), 2.0))
    assert torch.all(d1.weight[50:] == 1.0)
    # Epoch 2 still prunes (seen 200 < 300); epoch 3 is inside the final 25%: no pruning.
    ib.on_epoch_start(2)
    assert not ib.decide(view(ids), None).keep.all()
    ib.on_epoch_start(3)
    d3 = ib.decide(view(ids), None)
    assert d3.keep.all() and torch.all(d3.weight == 1.0)


def test_baselines_run_on_the_engine_with_exact_counts(tiny_cls):
    model, _, ds, collator = tiny_cls
    sb = SelectiveBackprop(beta=2.0, warmup=16, seed=0)
    engine = StepEngine(task="classification", batch_size=8, filters=[sb])
    fit(model, ds, engine=engine, collator=collator, epochs=2, lr=1e-3)
    c = engine.counts
    assert c.examples_forwarded_nograd == 2 * len(ds)  # every example forwarded once without grad
    assert c.examples_backpropagated == c.examples_forwarded_grad < 2 * len(ds)
    assert c.examples_backpropagated + engine.skipped()["selective_backprop"] == 2 * len(ds)

    from conftest import make_tiny_bert

    ib = InfoBatch(ratio=0.5, delta=0.125, planned_examples=3 * len(ds), seed=0)
    engine = StepEngine(task="classification", batch_size=8, filters=[ib])
    fit(make_tiny_bert(), ds, engine=engine, collator=collator, epochs=3, lr=1e-3)
    c = engine.counts
    assert c.examples_forwarded_nograd == 0
    assert c.examples_forwarded == c.examples_backpropagated == 3 * len(ds) - engine.skipped().get("infobatch", 0)
    assert engine.skipped()["infobatch"] > 0
