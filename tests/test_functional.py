"""Pure functions: per-example losses, weighted mean, LR schedule, selection files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datadiet.functional import linear_warmup_decay, per_example_ce, per_example_lm_loss, weighted_mean
from datadiet import Selection, random_subset


def test_per_example_ce_matches_mean_reduction():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(6, 4, generator=g), torch.tensor([0, 1, 2, 3, 0, 1])
    per = per_example_ce(logits, labels)
    assert per.shape == (6,)
    torch.testing.assert_close(per.mean(), F.cross_entropy(logits, labels))
    torch.testing.assert_close(per[2], -torch.log_softmax(logits[2], -1)[2])


def test_per_example_lm_loss_matches_hf_loss_and_ignores_padding():
    from datadiet.models.tiny import tiny_model

    model, _ = tiny_model("tiny-gpt2", seed=0)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(6, 40, (3, 12), generator=g)
    out = model(input_ids=ids, labels=ids)
    per = per_example_lm_loss(out.logits, ids)
    torch.testing.assert_close(per.mean(), out.loss)  # equal-length sequences: mean of means = token mean
    # Padding a sequence (attention 0) does not change its loss.
    padded = torch.cat([ids[:1], torch.zeros(1, 5, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 12), torch.zeros(1, 5)], dim=1).long()
    lp = per_example_lm_loss(model(input_ids=padded, attention_mask=mask).logits, padded, mask)
    torch.testing.assert_close(lp[0], per[0], rtol=1e-4, atol=1e-5)


def test_weighted_mean_divides_by_batch_size():
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert float(weighted_mean(losses)) == 2.5
    assert float(weighted_mean(losses, torch.tensor([2.0, 1.0, 1.0, 0.0]))) == (2 + 2 + 3) / 4


def test_linear_schedule():
    assert linear_warmup_decay(0.0) == 1.0 and linear_warmup_decay(1.0) == 0.0
    assert linear_warmup_decay(0.5) == 0.5
    assert linear_warmup_decay(0.05, warmup=0.1) == pytest.approx(0.5)
    assert linear_warmup_decay(0.55, warmup=0.1) == pytest.approx(0.5)
    assert linear_warmup_decay(0.7, kind="constant") == 1.0
    with pytest.raises(ValueError, match="unknown schedule"):
        linear_warmup_decay(0.1, kind="cosine-ish")


def test_random_subset_is_seeded_and_round_trips(tmp_path):
    ids = np.arange(1000, 1100)
    a = random_subset(ids, fraction=0.3, seed=1)
    b = random_subset(ids, fraction=0.3, seed=1)
    assert len(a) == 30 and np.array_equal(a.indices, b.indices)
    assert np.array_equal(a.ids, ids[a.indices]) and np.all(np.diff(a.indices) > 0)
    assert not np.array_equal(a.indices, random_subset(ids, fraction=0.3, seed=2).indices)
    p = a.save(tmp_path / "sel.json")
    c = Selection.load(p)
    assert np.array_equal(c.indices, a.indices) and c.params == {"fraction": 0.3, "seed": 1} and c.n_total == 100
    with pytest.raises(ValueError, match="fraction must be"):
        random_subset(ids, fraction=0.0, seed=0)


def test_core_imports_no_heavy_optional_package():
    import subprocess
    import sys

    code = (
        "import sys, datadiet, datadiet.loop, datadiet.core.engine, datadiet.methods.registry, datadiet.runner, "
        "datadiet.bench.harness, datadiet.bench.suite, datadiet.bench.report, datadiet.integrations\n"
        "heavy = [m for m in ('transformers', 'datasets', 'accelerate', 'sklearn', 'scipy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
