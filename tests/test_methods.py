"""Every registered method runs end to end through the runner and its counts add up."""

from __future__ import annotations

import pytest

from datadiet.config import load_config
from datadiet.methods.registry import METHODS, build_method, describe_methods
from datadiet.errors import ConfigError
from datadiet.runner import run

# Parameters that make each method do something on a 96-example, 2-epoch tiny run.
QUICK_PARAMS = {
    "full": {},
    "random_subset": {"fraction": 0.5},
    "random_skip": {"rate": 0.4},
    "selective_backprop": {"warmup": 16},
    "infobatch": {},
    "loss_threshold": {},
    "multistage": {"switch_window": 2, "meta_loss_threshold": 5.0},
    "data_diet": {"score_seeds": 1, "score_steps": 2, "keep": 0.5, "cache": False},
    "data_diet_dynamic": {"keep": 0.5},
    "ingenious": {"fraction": 0.5, "cache": False},
    # causal LM only: runs on a small text file with tiny-gpt2 (see _lm_overrides)
    "igf": {"objective_docs": 3, "objective_length": 8, "n_pairs": 16, "learner_epochs": 1, "learner_batch_size": 8,
            "cache": False, "threshold_units": "pool"},
}
CAUSAL_ONLY = {"igf"}


def _lm_overrides(tmp_path) -> list[str]:
    words = "the quick brown fox jumps over a lazy dog while it rains on my green hat".split()
    rows = [f'"{" ".join(words[i % 7:] + words[:i % 7])} {" ".join(words[: i % 5 + 3])} {i}",doc{i}' for i in range(24)]
    csv = tmp_path / "notes.csv"
    csv.write_text("text,doc\n" + "\n".join(rows) + "\n")
    return [f"data.name={csv}", "model.name=tiny-gpt2", "data.context_length=12", "data.max_test=3"]


def test_every_method_has_quick_params():
    assert set(QUICK_PARAMS) == set(METHODS)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_method_runs_and_counts_add_up(name, tmp_path):
    cfg = load_config(None, [
        "model.name=tiny-bert", "model.max_length=24", "data.max_train=96", "data.max_test=32",
        "train.epochs=2", "train.batch_size=16", "train.bf16=false", "train.lr=1e-3", "train.threads=1",
        f"method.name={name}", f"output_dir={tmp_path}",
    ] + [f"method.params.{k}={v}" for k, v in QUICK_PARAMS[name].items()]
        + (_lm_overrides(tmp_path) if name in CAUSAL_ONLY else []))
    rec = run(cfg)
    c = rec["counts"]
    used = rec["n_train_used"]
    assert c["examples_seen"] == 2 * used
    assert c["examples_forwarded"] == c["examples_forwarded_nograd"] + c["examples_forwarded_grad"]
    assert c["examples_backpropagated"] == c["examples_forwarded_grad"]
    assert c["examples_backpropagated"] + sum(c["skipped"].values()) == c["examples_seen"]
    cls = METHODS[name]
    if cls.mechanism in ("skip_post_forward", "skip_pre_and_post_forward"):
        # at most one scoring forward per example; none during a warm-up (loss_threshold, multistage),
        # none for examples skipped before the forward (multistage's stage 2)
        assert 0 < c["examples_forwarded_nograd"] <= c["examples_seen"]
        if name == "selective_backprop":
            assert c["examples_forwarded_nograd"] == c["examples_seen"]
    else:
        assert c["examples_forwarded_nograd"] == 0
    if name != "full":
        assert c["examples_backpropagated"] < 2 * rec["n_train"], "the method saved nothing"
    assert rec["status"] == "finished"
    assert rec["value"] > 1 if name in CAUSAL_ONLY else 0 <= rec["value"] <= 1  # perplexity / accuracy
    assert rec["timings"]["wall_clock_s"] == pytest.approx(rec["timings"]["selection_s"] + rec["timings"]["train_s"])


def test_methods_are_described_and_validate_parameters():
    names = [d["name"] for d in describe_methods()]
    assert names == list(METHODS)
    with pytest.raises(ConfigError, match="has no parameter 'fracton'. Did you mean 'fraction'"):
        build_method("random_subset", {"fracton": 0.3})
    with pytest.raises(ConfigError, match="ratio must be <"):
        build_method("infobatch", {"ratio": 1.0})
