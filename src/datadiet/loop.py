"""The plain PyTorch front end: a training loop you can read in one sitting.

It owns data order, the optimizer, the LR schedule and evaluation; every batch goes through
:meth:`datadiet.core.engine.StepEngine.step`, which does the filtering, backward and optimizer step.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ._validate import check_choice
from .core.engine import StepEngine
from .core.method import PlanContext
from .errors import DataDietError
from .functional.schedule import SCHEDULE_KINDS, linear_warmup_decay

log = logging.getLogger(__name__)


def make_optimizer(model: torch.nn.Module, *, lr: float, weight_decay: float = 0.0, fused: bool = True) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and normalisation weights; fused kernel when available."""
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in n.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if fused:
        try:
            return torch.optim.AdamW(groups, lr=lr, fused=True)
        except (RuntimeError, TypeError) as e:  # fused kernel unsupported for this device/dtype
            log.warning("fused AdamW unavailable (%s); using the default implementation", e)
    return torch.optim.AdamW(groups, lr=lr)


def epoch_order(positions: np.ndarray, *, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """The data order of one epoch: a permutation drawn from (seed, epoch) alone, so resumable."""
    if not shuffle:
        return [int(p) for p in positions]
    g = torch.Generator()
    g.manual_seed(int(seed) * 1_000_003 + int(epoch))
    perm = torch.randperm(len(positions), generator=g).numpy()
    return [int(positions[i]) for i in perm]


@dataclass
class FitResult:
    epochs: list[dict[str, Any]] = field(default_factory=list)
    # learning curve (intermediate evals): per point the counts, ``train_s`` (cumulative training
    # seconds, evaluation excluded; the clock of ``train_s`` below), ``eval_s`` (that evaluation's) and metrics
    curve: list[dict[str, Any]] = field(default_factory=list)
    train_s: float = 0.0
    eval_s: float = 0.0
    losses: list[float] = field(default_factory=list)  # training loss per optimizer step


DROPOUT_STREAM = 1_000_003 * 7919  # offset of the dropout generator's seed from the run seed


def _seeded_dropout(train):
    """Run ``train`` (``fit``) with torch's global generator seeded from the run ``seed``, then put it back.

    Dropout (and anything else a model draws at random in a training forward) takes its masks from
    torch's global generator, which each new process seeds differently: two runs of the same seed
    and config then train differently from their first step (measured: MiniLM on health_tweets,
    first-step losses 2.7613 and 2.7599). Seeding it from the run seed for the duration of training,
    on a forked state so that the caller's generator is left as it was, makes the run a function of
    its seed; the same run on the same machine and thread count is then bit-identical (tested)."""
    import functools

    @functools.wraps(train)
    def wrapper(model, dataset, **kw):
        dev = next(model.parameters()).device
        with torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else []):
            torch.manual_seed(int(kw.get("seed", 0)) + DROPOUT_STREAM)
            return train(model, dataset, **kw)

    return wrapper


@_seeded_dropout
def fit(
    model: torch.nn.Module,
    dataset: torch.utils.data.Dataset,
    *,
    engine: StepEngine,
    collator: Callable[[list], dict[str, torch.Tensor]],
    epochs: int = 1,
    lr: float = 1e-4,
    weight_decay: float = 0.0,
    warmup: float = 0.0,
    schedule: str = "linear",
    schedule_by: str = "examples",
    max_grad_norm: float | None = 1.0,
    fused_adamw: bool = True,
    seed: int = 0,
    positions: Sequence[int] | None = None,
    shuffle: bool = True,
    optimizer: torch.optim.Optimizer | None = None,
    evaluate: Callable[[], dict[str, float]] | None = None,
    eval_every: int | None = None,
    eval_by: str = "steps",
    progress: bool = False,
    max_steps: int | None = None,
    stop_after_steps: int | None = None,
    progress_desc: str = "train",
    ranks: Any = None,
) -> FitResult:
    """Train ``model`` on ``dataset`` (or on ``positions`` of it) through ``engine``.

    LR schedule: the multiplier is a function of progress in [0, 1]; with ``schedule_by="examples"``
    (default) progress is the share of the planned example stream consumed, so a method that skips
    examples follows the same LR curve over its epochs as full training; with ``"steps"`` it is
    optimizer steps taken over the steps full training would take.

    ``max_steps``: train for exactly that many optimizer steps instead of ``epochs`` passes, going
    over the data as many times as needed (methods compared at equal steps, e.g. IGF against
    standard fine-tuning). Progress for the LR schedule is then steps over ``max_steps`` whatever
    ``schedule_by`` says (the example stream a filter will consume is not known in advance); kept
    examples left in the engine's buffer at an epoch's end carry over into the next pass instead of
    making a short batch, and those left when the last step is taken are counted as skipped with
    reason ``max_steps``. A pass with no optimizer step at all is an error (the filters skip
    everything), so the loop cannot spin forever.

    ``stop_after_steps``: train the first that many optimizer steps of the run ``epochs`` describes
    (its data order, its LR at every step, a partial batch at each epoch's end as usual), then stop;
    a data-diet scoring run or INGENIOUS's warm-start. Unlike ``max_steps`` the LR schedule's horizon
    stays the configured run (by ``schedule_by``), so with ``stop_after_steps`` equal to the run's
    steps this is exactly the run. Steps beyond the run's end go on with more passes, and the
    horizon is then those steps (the examples they take when nothing is skipped). Kept examples
    buffered when the last step is taken are counted as skipped with reason ``stop_after_steps``.

    ``evaluate`` / ``eval_every``: a learning curve; ``evaluate()`` is called (its time kept out of
    ``train_s``) each time training passes another ``eval_every`` optimizer steps (``eval_by="steps"``)
    or examples seen (``eval_by="examples"``, over every rank). Counted in steps, a method that skips
    most examples takes few steps and gets few points (a pass of 57,210 examples with 80% skipped is
    under 300 steps of 32); counted in examples seen, every method is evaluated at the same points of
    its pass over the data as full training, whatever it skips.

    ``ranks`` (a :class:`datadiet.core.distributed.Ranks`, with an engine built with the same):
    data-parallel training on several processes. ``model`` is wrapped in
    ``DistributedDataParallel``; every rank draws the same epoch order, and each global batch of
    ``engine.batch_size * world_size`` examples is shared out in equal contiguous slices, one per
    rank, so the run equals one process training with the global batch (tested). Progress and
    steps count the global stream. Call it on every rank with the same arguments; ``evaluate`` may
    be given on one rank only (it must run no collective).
    """
    if max_steps is not None and stop_after_steps is not None:
        raise ValueError("give max_steps or stop_after_steps, not both")
    check_choice("schedule", schedule, SCHEDULE_KINDS)
    check_choice("schedule_by", schedule_by, ("examples", "steps"))
    check_choice("eval_by", eval_by, ("steps", "examples"))
    pos = np.arange(len(dataset)) if positions is None else np.asarray(positions, dtype=np.int64)
    if len(pos) == 0:
        raise ValueError("nothing to train on: the training set (or selected subset) is empty")
    W = 1 if ranks is None else int(ranks.world_size)
    if ranks is not None:
        if engine.ranks is None or engine.world_size != W:
            raise DataDietError(f"fit(ranks=...) on {W} processes needs a StepEngine built with the same ranks "
                                "(StepEngine(..., ranks=ranks))")
        from torch.nn.parallel import DistributedDataParallel

        if not isinstance(model, DistributedDataParallel):
            dev = next(model.parameters()).device
            # broadcast_buffers=False: a text model's buffers (position ids) are constants, and a forward
            # then runs no collective, so a rank that is out of step meets the others at datadiet's checkpoints
            import inspect

            no_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in
                       inspect.signature(DistributedDataParallel).parameters else {"broadcast_buffers": False})
            model = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None, **no_sync)
        progress = progress and ranks.is_main
    elif engine.ranks is not None:
        raise DataDietError("this StepEngine was built for several processes; pass the same ranks to fit(ranks=...)")
    bs = engine.batch_size * W  # the global batch: what one process training the same run would use
    # Filters built by hand get what they were built without (InfoBatch's planned stream, a loss
    # threshold's warm-up, seed=None) from this loop's own settings; values they were given are kept.
    if engine.filters:
        all_ids = getattr(dataset, "ids", None)
        all_labels = getattr(dataset, "labels", None)
        engine.bind(PlanContext(
            ids=np.asarray(all_ids)[pos] if all_ids is not None else pos, seed=seed, task=engine.task, batch_size=bs, ranks=ranks,
            labels=np.asarray(all_labels)[pos] if all_labels is not None else None, epochs=epochs,
            max_steps=max_steps))
    per_epoch = math.ceil(len(pos) / bs)
    planned_examples = epochs * len(pos)
    planned_steps = epochs * per_epoch if max_steps is None else int(max_steps)
    stop = None if max_steps is None and stop_after_steps is None else int(
        max_steps if max_steps is not None else stop_after_steps)  # the step count that ends training
    if stop_after_steps is not None:
        # the configured run's horizon, or the stopped run's own if it goes further
        examples_at_stop = (stop // per_epoch) * len(pos) + min((stop % per_epoch) * bs, len(pos))
        planned_examples = max(planned_examples, examples_at_stop)
        planned_steps = max(planned_steps, stop)
    opt = optimizer or make_optimizer(model, lr=lr, weight_decay=weight_decay, fused=fused_adamw)
    base_lrs = [g["lr"] for g in opt.param_groups]

    def set_lr() -> None:
        if schedule_by == "examples" and max_steps is None:
            prog = engine.global_counts.examples_seen / planned_examples
        else:
            prog = engine.counts.optimizer_steps / planned_steps
        m = linear_warmup_decay(prog, warmup=warmup, kind=schedule)
        for g, b in zip(opt.param_groups, base_lrs):
            g["lr"] = b * m

    res = FitResult()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        # disable=None: no bar when stderr is not a terminal (logs stay readable).
        total, unit = (planned_examples, "ex") if stop is None else (stop, "step")
        bar = tqdm(total=total, unit=unit, desc=progress_desc, leave=False, dynamic_ncols=True, disable=None)
    model.train()
    next_eval = eval_every
    t_start = time.perf_counter()
    epoch = engine.epoch
    done = stop is not None and engine.counts.optimizer_steps >= stop
    while not done and (stop is not None or epoch < epochs):
        engine.start_epoch(epoch)
        order = epoch_order(pos, seed=seed, epoch=epoch, shuffle=shuffle)
        t_epoch = time.perf_counter()
        ep_losses: list[float] = []
        before = engine.counts.as_dict()
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            if ranks is None:
                batch = collator([dataset[i] for i in idx])
            else:  # this rank's slice of the global batch (possibly empty: a batch of zero rows)
                mine = idx[ranks.shard(len(idx))]
                batch = collator([dataset[i] for i in (mine or idx[:1])])
                if not mine:
                    batch = {k: v[:0] for k, v in batch.items()}
            r = engine.step(model, opt, batch, max_grad_norm=max_grad_norm, before_optimizer_step=set_lr)
            if r.loss is not None:
                ep_losses.append(r.loss)
                res.losses.append(r.loss)
            if bar is not None:
                bar.update(len(idx) if stop is None else r.optimizer_steps)
                bar.set_postfix(steps=engine.counts.optimizer_steps, bp=engine.counts.examples_backpropagated)
            done = stop is not None and engine.counts.optimizer_steps >= stop
            at = None if evaluate is None or next_eval is None else (
                engine.counts.optimizer_steps if eval_by == "steps" else engine.global_counts.examples_seen)
            if at is not None and at >= next_eval:
                _sync(model)  # queued device work is training time, not the evaluation's
                t0 = time.perf_counter()
                train_s = t0 - t_start  # cumulative training seconds, earlier evaluations excluded
                m = evaluate()
                model.train()
                dt = time.perf_counter() - t0
                res.eval_s += dt
                t_start += dt  # evaluation time is not training time
                g = engine.global_counts  # one process: its own counts
                res.curve.append({"optimizer_steps": g.optimizer_steps, "examples_seen": g.examples_seen,
                                  "examples_backpropagated": g.examples_backpropagated,
                                  "train_s": train_s, "eval_s": dt, **m})
                while next_eval <= at:  # one evaluation per crossing, however many thresholds a batch passed
                    next_eval += eval_every
            if done:
                break
        if max_steps is None and not done:
            r = engine.end_epoch(model, opt, max_grad_norm=max_grad_norm, before_optimizer_step=set_lr)
            if r.loss is not None:
                ep_losses.append(r.loss)
                res.losses.append(r.loss)
            if bar is not None and stop is not None:
                bar.update(r.optimizer_steps)
            done = stop is not None and engine.counts.optimizer_steps >= stop
        elif done:
            engine.drop_buffer("max_steps" if max_steps is not None else "stop_after_steps")
        after = engine.counts.as_dict()
        res.epochs.append({
            "epoch": epoch,
            "train_loss": float(np.mean(ep_losses)) if ep_losses else None,
            "seconds": time.perf_counter() - t_epoch,
            **{k: after[k] - before[k] for k in ("examples_seen", "examples_forwarded", "examples_backpropagated", "optimizer_steps")},
        })
        log.info("epoch %d: %s", epoch, res.epochs[-1])
        if stop is not None and not done and res.epochs[-1]["optimizer_steps"] == 0:
            what = f"train.max_steps={max_steps}" if max_steps is not None else f"stop_after_steps={stop}"
            raise DataDietError(
                f"{what}: a whole pass over the {len(pos)} training examples gave no optimizer "
                f"step (after {engine.counts.optimizer_steps} steps); the method's filters skip (nearly) everything. "
                "Loosen the method's threshold, or train by epochs instead")
        epoch += 1
    if bar is not None:
        bar.close()
    if ranks is not None:
        from .core.distributed import FIT_END

        ranks.agree(FIT_END, {"optimizer_steps": engine.counts.optimizer_steps,
                                                   "backward_calls": len(res.losses)})
    _sync(model)
    res.train_s = time.perf_counter() - t_start
    return res


def _sync(model: torch.nn.Module) -> None:
    """Wait for the model's queued CUDA work, so that a clock read next counts it (no-op on CPU)."""
    dev = next(model.parameters()).device
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


#: How a capped evaluation (``max_examples``) picks its examples; run records carry it as ``eval_subset``
#: so that reports can tell their curves from those of older records, which read the split's first
#: ``max_examples`` (biased on class-ordered splits).
EVAL_SUBSET = "evenly_spaced"


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module,
    dataset: torch.utils.data.Dataset,
    *,
    task: str,
    collator: Callable[[list], dict[str, torch.Tensor]],
    batch_size: int = 64,
    autocast_dtype: torch.dtype | None = None,
    num_labels: int | None = None,
    max_examples: int | None = None,
) -> dict[str, float]:
    """Accuracy and macro-F1 (classification) or perplexity (causal LM) on ``dataset``."""
    from .core.filter import NOT_MODEL_INPUTS
    from .functional.precision import autocast
    from .functional.losses import per_example_lm_loss

    was = model.training
    model.eval()
    total = len(dataset)
    n = total if max_examples is None else min(total, max_examples)
    # A capped evaluation takes evenly spaced examples over the whole split, not its first n:
    # test splits are often ordered by class, and a prefix then covers only a few classes.
    order = [(i * total) // n for i in range(n)]  # 0..n-1 when uncapped
    preds, golds = [], []
    tok_loss, tok_count = 0.0, 0
    device = next(model.parameters()).device
    for start in range(0, n, batch_size):
        batch = collator([dataset[i] for i in order[start:start + batch_size]])
        inputs = {k: v.to(device) for k, v in batch.items() if k not in NOT_MODEL_INPUTS}
        with autocast(autocast_dtype, device.type):
            logits = model(**inputs).logits
        if task == "classification":
            preds.append(logits.float().argmax(-1).cpu())
            golds.append(batch["labels"])
        else:
            per = per_example_lm_loss(logits, inputs["input_ids"], inputs.get("attention_mask"))
            counts = inputs["attention_mask"][:, 1:].sum(1) if "attention_mask" in inputs else torch.full(
                (per.shape[0],), inputs["input_ids"].shape[1] - 1)
            tok_loss += float((per * counts).sum())
            tok_count += int(counts.sum())
    model.train(was)
    if task == "classification":
        p = torch.cat(preds).numpy()
        g = torch.cat(golds).numpy()
        return {"accuracy": float((p == g).mean()), "macro_f1": macro_f1(g, p, num_labels=num_labels)}
    mean = tok_loss / max(tok_count, 1)
    return {"loss": mean, "perplexity": float(math.exp(mean))}


def macro_f1(gold: np.ndarray, pred: np.ndarray, *, num_labels: int | None = None) -> float:
    """Unweighted mean of per-class F1 over the classes present in ``gold`` or ``pred``."""
    classes = np.union1d(np.unique(gold), np.unique(pred)) if num_labels is None else np.arange(num_labels)
    f1s = []
    for c in classes:
        tp = int(((pred == c) & (gold == c)).sum())
        fp = int(((pred == c) & (gold != c)).sum())
        fn = int(((pred != c) & (gold == c)).sum())
        if tp + fp + fn == 0:
            continue
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1s)) if f1s else 0.0
