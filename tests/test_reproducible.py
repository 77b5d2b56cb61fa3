"""Same seed, same result: dropout is seeded from the run seed, so a rerun is bit-identical; the caller's
global generator is left alone; ``train.deterministic`` turns on torch's deterministic algorithms."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import make_tiny_bert
from datadiet.config import load_config
from datadiet.core.engine import StepEngine
from datadiet.errors import ConfigError
from datadiet.loop import fit
from datadiet.runner import run

ROOT = Path(__file__).resolve().parents[1]


def with_dropout(model: torch.nn.Module, p: float = 0.3) -> torch.nn.Module:
    n = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = p
            n += 1
    assert n > 0
    return model


def train_once(tiny_cls, *, seed: int):
    _, _, ds, collator = tiny_cls
    model = with_dropout(make_tiny_bert(0))
    res = fit(model, ds, engine=StepEngine(task="classification", batch_size=8), collator=collator, epochs=1,
              lr=1e-3, seed=seed)
    return res.losses, [p.detach().clone() for p in model.parameters()]


def test_a_rerun_with_dropout_is_bit_identical_and_the_seed_matters(tiny_cls):
    torch.manual_seed(123)  # whatever the caller's generator holds...
    la, pa = train_once(tiny_cls, seed=0)
    torch.manual_seed(456)  # ...does not reach the run's dropout masks
    lb, pb = train_once(tiny_cls, seed=0)
    assert la == lb
    assert all(torch.equal(x, y) for x, y in zip(pa, pb))
    lc, _ = train_once(tiny_cls, seed=1)
    assert lc != la  # another seed, other masks (and another data order)


def test_training_leaves_the_callers_generator_where_it_was(tiny_cls):
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    train_once(tiny_cls, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_dropout_is_really_on_in_these_runs(tiny_cls):
    """The check above would pass trivially with dropout off: two masks of one seed must differ."""
    _, _, ds, collator = tiny_cls
    model = with_dropout(make_tiny_bert(0)).train()
    batch = collator([ds[i] for i in range(8)])
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    assert not torch.equal(model(**inputs).logits, model(**inputs).logits)


def _cfg(tmp_path, name: str, *extra: str):
    return load_config(str(ROOT / "configs" / "tiny.yaml"),
                       ["data.max_train=48", "data.max_test=16", "train.bf16=false", "train.threads=1",
                        f"output_dir={tmp_path}", f"run_name={name}", *extra])


def test_deterministic_mode_runs_and_is_restored(tmp_path):
    a = run(_cfg(tmp_path, "a", "train.deterministic=true"))
    assert not torch.are_deterministic_algorithms_enabled()  # put back after the run
    b = run(_cfg(tmp_path, "b", "train.deterministic=true"))
    c = run(_cfg(tmp_path, "c"))
    assert a["step_losses"] == b["step_losses"] == c["step_losses"]  # on CPU the default is reproducible too
    assert a["value"] == b["value"] == c["value"]
    assert json.loads((tmp_path / "a" / "record.json").read_text())["config"]["train"]["deterministic"] is True
    with pytest.raises(ConfigError, match="train.deterministic"):
        _cfg(tmp_path, "d", "train.deterministic=maybe")
