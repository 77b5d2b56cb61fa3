"""The step engine: exact equivalence with a plain loop, exact counts, skipped steps, state."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datadiet.core.engine import StepEngine
from datadiet.loop import epoch_order, fit, make_optimizer
from datadiet.core.filter import Decision, OnlineFilter
from datadiet.methods.random_skip import RandomSkip

from conftest import SkipAll, make_tiny_bert, resume_vs_uninterrupted


class KeepAll(OnlineFilter):
    stage = "post_forward"
    reason = "keep_all"

    def decide(self, batch, losses):
        return Decision(keep=torch.ones(len(batch), dtype=torch.bool))


class AboveMedian(OnlineFilter):
    """Post-forward: keep the examples whose loss is above the batch median; records what it saw."""

    stage = "post_forward"
    reason = "below_median"

    def __init__(self):
        self.decided: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.observed_trained: list[int] = []

    def decide(self, batch, losses):
        keep = losses > losses.median()
        self.decided.append((batch.ids.clone(), losses.clone(), keep.clone()))
        return Decision(keep=keep)

    def observe(self, batch, losses, *, trained):
        if trained:
            self.observed_trained.extend(batch.ids.tolist())


def hand_loop(model, ds, collator, *, order, bs, lr, max_grad_norm):
    """A plain PyTorch loop written without datadiet's engine."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, fused=True)
    model.train()
    losses = []
    for start in range(0, len(order), bs):
        batch = collator([ds[i] for i in order[start : start + bs]])
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        loss = F.cross_entropy(out.logits.float(), batch["labels"], reduction="none").mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.parametrize("filters", [[], [KeepAll()]], ids=["no_filter", "keep_all_post_filter"])
def test_keep_everything_reproduces_plain_loop_exactly(tiny_cls, filters):
    _, _, ds, collator = tiny_cls
    order = epoch_order(np.arange(len(ds)), seed=5, epoch=0)
    ref = make_tiny_bert()
    ref_losses = hand_loop(ref, ds, collator, order=order, bs=8, lr=1e-3, max_grad_norm=1.0)

    model = make_tiny_bert()
    engine = StepEngine(task="classification", batch_size=8, filters=filters)
    res = fit(model, ds, engine=engine, collator=collator, epochs=1, lr=1e-3, schedule="constant",
              max_grad_norm=1.0, seed=5, weight_decay=0.0)
    assert res.losses == ref_losses  # same losses, bit for bit
    for (n, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        assert torch.equal(p, q), n
    c = engine.counts
    assert c.optimizer_steps == math.ceil(len(ds) / 8)
    assert c.examples_backpropagated == len(ds)
    assert c.examples_forwarded_grad == len(ds)
    assert c.examples_forwarded_nograd == (len(ds) if filters else 0)


def test_skipped_step_changes_no_parameter(tiny_cls):
    model, _, ds, collator = tiny_cls
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    engine = StepEngine(task="classification", batch_size=8, filters=[SkipAll()])
    opt = make_optimizer(model, lr=1e-2)
    for start in range(0, len(ds), 8):
        r = engine.step(model, opt, collator([ds[i] for i in range(start, start + 8)]), max_grad_norm=1.0)
        assert r.optimizer_steps == 0 and r.loss is None
    engine.end_epoch(model, opt)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
    assert engine.counts.optimizer_steps == 0
    assert engine.counts.examples_forwarded == 0
    assert engine.skipped() == {"skip_all": len(ds)}


def test_random_skip_counts_are_exact(tiny_cls):
    model, _, ds, collator = tiny_cls
    rate, seed, bs, epochs = 0.4, 11, 8, 2
    engine = StepEngine(task="classification", batch_size=bs, filters=[RandomSkip(rate=rate, seed=seed)])
    fit(model, ds, engine=engine, collator=collator, epochs=epochs, lr=1e-3, seed=0)
    # Replay the filter's generator: it draws one uniform per incoming example, batch by batch.
    g = torch.Generator()
    g.manual_seed(seed)
    kept_per_epoch = []
    for _ in range(epochs):
        kept = 0
        for start in range(0, len(ds), bs):
            n = min(bs, len(ds) - start)
            kept += int((torch.rand(n, generator=g) >= rate).sum())
        kept_per_epoch.append(kept)
    kept = sum(kept_per_epoch)
    c = engine.counts
    assert c.examples_seen == epochs * len(ds)
    assert c.examples_backpropagated == kept == c.examples_forwarded == c.examples_forwarded_grad
    assert engine.skipped() == {"random_skip": epochs * len(ds) - kept}
    # Kept examples are re-batched into full batches; each epoch ends with one partial flush.
    assert c.optimizer_steps == sum(math.ceil(k / bs) for k in kept_per_epoch)


def test_post_forward_filter_rebatches_and_counts(tiny_cls):
    model, _, ds, collator = tiny_cls
    f = AboveMedian()
    engine = StepEngine(task="classification", batch_size=8, filters=[f])
    opt = make_optimizer(model, lr=1e-3)
    emitted = []
    for start in range(0, len(ds), 8):
        batch = collator([ds[i] for i in range(start, start + 8)])
        ready = engine.submit(model, batch)
        for tb in ready:
            emitted.append(tb["example_id"].tolist())
            loss, _ = engine.training_loss(model, tb)
            loss.backward()
            opt.step()
            opt.zero_grad()
            engine.note_optimizer_step()
    emitted += [tb["example_id"].tolist() for tb in engine.flush()]
    kept_ids = [i for ids, _, keep in f.decided for i in ids[keep].tolist()]
    # Every training batch but the last is full-sized, and exactly the kept examples are trained on.
    assert all(len(b) == 8 for b in emitted[:-1])
    assert sorted(sum(emitted, [])) == sorted(kept_ids)
    c = engine.counts
    assert c.examples_forwarded_nograd == len(ds)
    assert c.examples_seen == len(ds)
    assert engine.skipped()["below_median"] == len(ds) - len(kept_ids)
    # The skipped examples are exactly the low-loss ones of their batch.
    for ids, losses, keep in f.decided:
        if (~keep).any() and keep.any():
            assert losses[~keep].max() <= losses[keep].min()


def test_rebatched_rows_keep_their_values(tiny_cls):
    """Re-batching trims and re-pads rows without changing any example's tokens or label."""
    model, _, ds, collator = tiny_cls
    engine = StepEngine(task="classification", batch_size=4, filters=[RandomSkip(rate=0.5, seed=1)])
    by_id = {ds[i]["example_id"]: ds[i] for i in range(len(ds))}
    for start in range(0, len(ds), 4):
        for tb in engine.submit(model, collator([ds[i] for i in range(start, start + 4)])) + engine.flush():
            for r in range(tb["input_ids"].shape[0]):
                ex = by_id[int(tb["example_id"][r])]
                L = len(ex["input_ids"])
                assert tb["input_ids"][r, :L].tolist() == ex["input_ids"]
                assert int(tb["attention_mask"][r].sum()) == L
                assert int(tb["labels"][r]) == ex["labels"]


def test_weights_scale_the_loss(tiny_cls):
    model, _, ds, collator = tiny_cls

    class Double(OnlineFilter):
        stage = "pre_forward"

        def decide(self, batch, losses):
            return Decision(keep=torch.ones(len(batch), dtype=torch.bool), weight=torch.full((len(batch),), 2.0))

    engine = StepEngine(task="classification", batch_size=8, filters=[Double()])
    batch = collator([ds[i] for i in range(8)])
    (tb,) = engine.submit(model, batch)
    loss, per = engine.training_loss(model, tb)
    torch.testing.assert_close(loss, 2 * per.mean())


def test_engine_state_round_trip_resumes_identically(tiny_cls):
    """Stop after epoch 1, restore model/optimizer/engine state, finish: same as uninterrupted."""
    _, _, ds, collator = tiny_cls

    def build():
        m = make_tiny_bert()
        e = StepEngine(task="classification", batch_size=8, filters=[RandomSkip(rate=0.3, seed=2)])
        o = make_optimizer(m, lr=1e-3)
        return m, e, o

    (m1, e1), (m3, e3) = resume_vs_uninterrupted(build, ds, collator, epochs=2, stop_after=1)
    assert e3.counts.as_dict() == e1.counts.as_dict()
    for (n, p), (_, q) in zip(m1.named_parameters(), m3.named_parameters()):
        assert torch.equal(p, q), n


def test_engine_rejects_bad_arguments():
    with pytest.raises(ValueError, match="task must be one of"):
        StepEngine(task="regression", batch_size=8)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        StepEngine(task="classification", batch_size=0)
    with pytest.raises(TypeError, match="OnlineFilter"):
        StepEngine(task="classification", batch_size=8, filters=[object()])
    with pytest.raises(ValueError, match="rate must be <"):
        RandomSkip(rate=1.0)


def test_batches_without_ids_get_a_clear_error(tiny_cls):
    model, _, ds, collator = tiny_cls
    batch = collator([ds[i] for i in range(8)])
    del batch["example_id"]
    engine = StepEngine(task="classification", batch_size=8, filters=[RandomSkip(rate=0.5)])
    with pytest.raises(ValueError, match="example_id"):
        engine.submit(model, batch)


@pytest.mark.parametrize(("kw", "message"), [
    (dict(schedule_by="example"), "schedule_by must be one of 'examples', 'steps', got 'example'"),
    (dict(schedule="cosine"), "schedule must be one of 'linear', 'constant', got 'cosine'"),
    (dict(max_steps=2, stop_after_steps=2), "give max_steps or stop_after_steps, not both"),
])
def test_fit_refuses_a_bad_argument_before_training(tiny_cls, kw, message):
    """A direct caller's typo is refused up front (``schedule_by="example"`` used to schedule by steps
    silently, and an unknown ``schedule`` failed only once warm-up was over), and nothing is trained."""
    model, _, ds, collator = tiny_cls
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    engine = StepEngine(task="classification", batch_size=8)
    with pytest.raises(ValueError, match=message):
        fit(model, ds, engine=engine, collator=collator, epochs=1, lr=1e-2, **kw)
    assert engine.counts.optimizer_steps == 0 and engine.counts.examples_seen == 0
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
