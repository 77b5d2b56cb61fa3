"""The cases the multi-process tests train, shared by the torchrun workers and the one-process references."""

from __future__ import annotations

import json
import os
import zlib
from typing import Any

import numpy as np
import torch

N_EXAMPLES = 57  # 7 global batches of 8, then 1 example: the last global batch leaves one rank with no rows
EPOCHS = 2
LR = 1e-3

# method -> parameters (cheap settings; every one skips different examples on each rank)
LOOP_CASES: dict[str, dict[str, Any]] = {
    "full": {},
    "random_skip": {"rate": 0.4},
    "selective_backprop": {"warmup": 16, "history": 64},
    "infobatch": {"ratio": 0.5},
    "loss_threshold": {"chance_guard": False},
    # unguarded: stage 2 skips before the forward within these few batches (the guard would wait for evidence)
    "multistage": {"switch_window": 2, "meta_loss_threshold": 5.0, "chance_guard": False, "guard": False},
    "data_diet_dynamic": {"keep": 0.5},  # re-scores the pool (sharded) at epoch 1
    "ingenious": {"fraction": 0.5, "cache": False, "embedding": "model", "reselect_every": 2},  # re-selects
}


def planted(n: int = N_EXAMPLES):
    from conftest import planted_texts
    from datadiet.data.collate import Collator, TokenizedSplit
    from datadiet.data.types import TextSplit
    from datadiet.models.tiny import tiny_model

    texts, labels = planted_texts(n)
    split = TextSplit(ids=np.arange(100, 100 + n), texts=texts, labels=labels)
    model, tok = tiny_model("tiny-bert", num_labels=2, seed=0)
    return model, TokenizedSplit(split, tok, max_length=32), Collator(pad_token_id=tok.pad_token_id)


def loop_run(case: str, *, ranks=None, per_rank_batch: int, rate_by_rank: bool = False,
             extra_batches_on_rank1: bool = False):
    """Train ``case`` through the plain loop (``ranks``: on several processes); returns (model, engine, fit result)."""
    from datadiet.core.engine import StepEngine
    from datadiet.core.method import PlanContext
    from datadiet.loop import fit
    from datadiet.methods.registry import build_method

    model, ds, collator = planted()
    params = dict(LOOP_CASES[case])
    rank = 0 if ranks is None else ranks.rank
    W = 1 if ranks is None else ranks.world_size
    if rate_by_rank:
        params["rate"] = 0.4 if rank == 0 else 0.3
    positions = np.arange(len(ds))
    if extra_batches_on_rank1 and rank == 0:
        positions = positions[:-16]
    ctx = PlanContext(ids=np.asarray(ds.ids)[positions], labels=np.asarray(ds.labels)[positions], seed=0,
                      task="classification", batch_size=per_rank_batch * W, epochs=EPOCHS, model=model,
                      train_dataset=ds, collator=collator, ranks=ranks, lr=LR)
    plan = build_method(case, params).plan(ctx)
    engine = StepEngine(task="classification", batch_size=per_rank_batch, filters=plan.filters,
                        pad_token_id=collator.pad_token_id, ranks=ranks)
    # a learning curve on the main rank only (as the runner does), every 12 examples seen over every rank
    main = ranks is None or ranks.is_main
    res = fit(model, ds, engine=engine, collator=collator, epochs=EPOCHS, lr=LR, weight_decay=0.0,
              schedule="linear", max_grad_norm=1.0, fused_adamw=True, seed=0, positions=positions, ranks=ranks,
              evaluate=(lambda: {"accuracy": 0.0}) if main else None, eval_every=12, eval_by="examples")
    return model, engine, res


CURVE_KEYS = ("optimizer_steps", "examples_seen", "examples_backpropagated")


def curve_counts(res) -> list[dict[str, int]]:
    """A fit result's learning-curve points without their times (which differ between runs)."""
    return [{k: int(p[k]) for k in CURVE_KEYS} for p in res.curve]


def _plain(obj: Any) -> Any:
    """A filter's state as JSON-able values, without its timings (wall-clock differs between ranks)."""
    if torch.is_tensor(obj):
        return obj.tolist()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))
                if not (str(k).endswith("_s") or "seconds" in str(k))}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.generic,)):
        return obj.item()
    return obj


def state_fingerprint(engine) -> dict[str, Any]:
    """Every filter's state (a checksum of it, and the state itself when small)."""
    states = [_plain(f.state_dict()) for f in engine.filters]
    text = json.dumps(states, sort_keys=True)
    return {"crc": zlib.crc32(text.encode()), "size": len(text)}


# Trainer cases: (method, parameters, gradient accumulation steps)
TRAINER_CASES: dict[str, tuple[str, dict[str, Any], int]] = {
    "random_skip": ("random_skip", {"rate": 0.4}, 1),
    "selective_backprop_ga2": ("selective_backprop", {"warmup": 16, "history": 64}, 2),
    "multistage": ("multistage", {"switch_window": 2, "meta_loss_threshold": 5.0, "chance_guard": False,
                                   "guard": False}, 1),
    "random_subset": ("random_subset", {"fraction": 0.5}, 1),
}


def trainer_run(case: str, out_dir, *, per_rank_batch: int = 4, save_steps: int | None = None,
                resume: str | None = None):
    """Train ``case`` with ``DataDietTrainer`` (DDP when launched on several processes); returns the trainer.
    ``save_steps``: checkpoint every that many steps; ``resume``: a checkpoint folder to resume from."""
    from transformers import TrainingArguments

    from datadiet.integrations.hf import DataDietTrainer

    method, params, ga = TRAINER_CASES[case]
    model, ds, collator = planted(64)
    saving = {"save_strategy": "no"} if save_steps is None else {"save_strategy": "steps", "save_steps": save_steps}
    args = TrainingArguments(
        output_dir=str(out_dir), use_cpu=True, report_to=[], **saving, per_device_train_batch_size=per_rank_batch,
        gradient_accumulation_steps=ga, num_train_epochs=2, learning_rate=LR, lr_scheduler_type="linear",
        weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch_fused", logging_strategy="steps", logging_steps=2,
        seed=0, dataloader_num_workers=0, disable_tqdm=True,
        ddp_backend="gloo" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None)
    trainer = DataDietTrainer(model=model, args=args, train_dataset=ds, data_collator=collator, method=method,
                              method_params=params)
    trainer.train(resume_from_checkpoint=resume)
    return trainer


# Cases trained on a causal LM through the runner's preparation (method, parameters)
LM_CASES: dict[str, dict[str, Any]] = {
    "igf": {"objective_docs": 3, "objective_length": 8, "n_pairs": 16, "learner_epochs": 1, "learner_batch_size": 8,
            "cache": False, "threshold_units": "pool", "switch_step": 1},
}


def lm_csv(folder, rank: int = 0) -> str:
    from pathlib import Path

    words = "the quick brown fox jumps over a lazy dog while it rains on my green hat".split()
    rows = [f'"{" ".join(words[i % 7:] + words[:i % 7])} {" ".join(words[: i % 5 + 3])} {i}",doc{i}' for i in range(24)]
    path = Path(folder) / f"notes{rank}.csv"  # one file per rank: no rank reads a file another is writing
    path.write_text("text,doc\n" + "\n".join(rows) + "\n")
    return str(path)


def lm_loop_run(case: str, folder, *, ranks=None, per_rank_batch: int):
    """Train an LM case through ``runner.prepare`` + ``plan_context`` + ``loop.fit``; returns (model, engine, result)."""
    from datadiet.config import load_config
    from datadiet.core.engine import StepEngine
    from datadiet.loop import fit
    from datadiet.methods.registry import build_method
    from datadiet.runner import plan_context, prepare

    W = 1 if ranks is None else ranks.world_size
    cfg = load_config(None, [
        "model.name=tiny-gpt2", f"data.name={lm_csv(folder, 0 if ranks is None else ranks.rank)}", "data.context_length=12", "data.max_contexts=48",
        "data.max_test=3", "train.threads=1", "train.bf16=false", f"train.batch_size={per_rank_batch}",
        f"train.epochs={EPOCHS}", f"train.lr={LR}", "train.seed=0", "train.device=cpu", f"method.name={case}",
        *[f"method.params.{k}={v}" for k, v in LM_CASES[case].items()]])
    ds, lm, train, _test, collator, _ = prepare(cfg, torch.device("cpu"))
    ctx = plan_context(cfg, lm, train, collator, task=ds.task, ranks=ranks)
    assert ctx.batch_size == W * per_rank_batch  # the plan sees the global batch
    plan = build_method(case, cfg.method.params).plan(ctx)
    engine = StepEngine(task=ds.task, batch_size=per_rank_batch, filters=plan.filters, pad_token_id=lm.pad_token_id,
                        ranks=ranks)
    res = fit(lm.model, train, engine=engine, collator=collator, epochs=EPOCHS, lr=LR, weight_decay=0.0,
              max_grad_norm=1.0, fused_adamw=True, seed=0, ranks=ranks)
    return lm.model, engine, res
