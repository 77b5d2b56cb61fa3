"""Run one configuration end to end: data, model, method plan, engine, training, evaluation, record.

This is what ``datadiet train``, the demo and every benchmark cell call.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import RunConfig
from .core.engine import StepEngine
from .errors import DataDietError
from .loop import EVAL_SUBSET, evaluate_model, fit
from .core.method import PlanContext
from .records import FolderLock, RunRecord, env_info, prepare_run_dir
from .methods.registry import build_method

log = logging.getLogger(__name__)


def default_run_name(cfg: RunConfig) -> str:
    return f"{cfg.data.name.replace('/', '_')}-{cfg.model.name.replace('/', '_')}-{cfg.method.name}-s{cfg.train.seed}"


def load_data(cfg: RunConfig):
    """Load and split the dataset named in ``cfg`` (raw text, no tokenizer).

    Results are memoised in-process (a benchmark suite loads the same split for every cell); the
    returned dataset is immutable.
    """
    d = cfg.data
    key = (d.name, d.text_column, d.text_pair_column, d.label_column, d.task, d.test_size, d.test_file,
           d.split_seed, d.max_train, d.max_test)
    if d.test_file is None and not Path(d.name).exists():
        return _load_data_cached(*key)
    return _load_data_cached.__wrapped__(*key)


@functools.lru_cache(maxsize=4)
def _load_data_cached(name, text_column, text_pair_column, label_column, task, test_size, test_file, seed,
                      max_train, max_test):
    from .data import load_dataset

    return load_dataset(name, text_column=text_column, text_pair_column=text_pair_column, label_column=label_column,
                        task=task, test_size=test_size, test_file=test_file, seed=seed, max_train=max_train,
                        max_test=max_test)


def tokenize_data(cfg: RunConfig, ds, loaded_model):
    """Tokenize ``ds`` for ``loaded_model``: returns ``(train, test, collator)`` torch datasets."""
    from .data import Collator, TokenizedSplit, lm_contexts

    d = cfg.data
    tok = loaded_model.tokenizer
    if ds.task == "classification":
        train = TokenizedSplit(ds.train, tok, max_length=cfg.model.max_length)
        test = TokenizedSplit(ds.test, tok, max_length=cfg.model.max_length)
    else:
        train = lm_contexts(ds.train, tok, context_length=d.context_length, max_contexts=d.max_contexts, seed=d.split_seed)
        test = lm_contexts(ds.test, tok, context_length=d.context_length, max_contexts=d.max_test, seed=d.split_seed + 1)
    return train, test, Collator(pad_token_id=loaded_model.pad_token_id)


def apply_selection_file(train, path: str | Path):
    """Restrict a tokenized training split to the examples of a selection file (matched by stable id).

    Returns ``(subset, info)``: ``subset`` is ``train.subset(positions)``, the same dataset type with
    its ``ids`` / ``labels`` (``doc_ids``, ``flipped_ids``) aligned. Every id in the file must be in
    ``train``; otherwise the file was made for other data and the error says how to recreate it.
    """
    from .core.selection import Selection

    sel = Selection.load(path)
    where = {int(i): p for p, i in enumerate(np.asarray(train.ids))}
    missing = [int(i) for i in sel.ids if int(i) not in where]
    if missing:
        raise DataDietError(
            f"selection file {str(path)!r} names {len(missing)} example ids that are not in this training set "
            f"(e.g. {missing[:5]}): it was made for other data; recreate it with `datadiet select` for this config "
            "(same data.name, data.max_train and data.split_seed)"
        )
    if sel.n_total != len(train):
        log.warning("selection file %s was made on %d examples, this training set has %d; using its %d ids",
                    path, sel.n_total, len(train), len(sel))
    pos = np.sort(np.asarray([where[int(i)] for i in sel.ids], dtype=np.int64))
    info = {"path": str(path), "method": sel.method, "params": sel.params, "n_selected": len(sel),
            "n_total": int(sel.n_total)}
    return train.subset(pos), info


def add_label_noise(train, *, fraction: float, num_classes: int | None, seed: int) -> np.ndarray:
    """Flip ``fraction`` of a tokenized classification split's labels in place; returns the flipped ids.

    Seeded by the split seed, so every training seed sees the same noisy set. The flipped ids are
    kept on the split (``train.flipped_ids``) and written to the run record.
    """
    from .data.split import flip_labels

    if getattr(train, "labels", None) is None or not num_classes:
        raise DataDietError("data.label_noise needs a classification dataset with labels; remove it for causal-LM text")
    new, pos = flip_labels(train.labels, fraction=fraction, num_classes=num_classes, seed=seed)
    for p in pos.tolist():
        train.features[p]["labels"] = int(new[p])
    train.labels = new
    train.flipped_ids = np.asarray(train.ids)[pos]
    return train.flipped_ids


def prepare(cfg: RunConfig, device: torch.device | None = None):
    """Data, model and tokenized splits for ``cfg`` (what a run, ``datadiet score`` and ``select`` share).

    Returns ``(ds, lm, train, test, collator, selection_info)``; ``lm.model`` is on ``device``; with
    ``data.selection`` the training split holds only the selected examples.
    """
    from .models import load_model

    ds = load_data(cfg)
    task, num_labels = ds.task, ds.num_labels
    lm = load_model(cfg.model.name, task=task, num_labels=num_labels if task == "classification" else None,
                    seed=cfg.train.seed)
    train, test, collator = tokenize_data(cfg, ds, lm)
    if cfg.data.label_noise:
        add_label_noise(train, fraction=cfg.data.label_noise, num_classes=num_labels, seed=cfg.data.split_seed)
    sel_info = None
    if cfg.data.selection:
        train, sel_info = apply_selection_file(train, cfg.data.selection)
    lm.model.to(device if device is not None else resolve_device(cfg.train.device))
    return ds, lm, train, test, collator, sel_info


def plan_context(cfg: RunConfig, lm, train, collator, *, task: str, run_dir: str | Path | None = None,
                 ranks: Any = None) -> PlanContext:
    """The planning context of a run: what a method may use, from ``cfg`` and the loaded model and data.

    ``ranks``: several processes; the plan then sees the run as the one-process run it equals, whose
    batch is the global batch (``train.batch_size`` per rank times the world size)."""
    t = cfg.train
    ids = np.asarray(train.ids)
    num_labels = int(getattr(getattr(lm.model, "config", None), "num_labels", 0) or 0) or None
    device = next(lm.model.parameters()).device

    def build_model(seed: int):
        from .models import load_model

        return load_model(cfg.model.name, task=task, num_labels=num_labels if task == "classification" else None,
                          seed=seed).model.to(device)

    def texts() -> list[str]:
        split = load_data(cfg).train.select_ids(ids)  # memoised: the run has loaded this split already
        if split.texts_pair is None:
            return list(split.texts)
        return [f"{a} [SEP] {b}" for a, b in zip(split.texts, split.texts_pair)]

    return PlanContext(ids=ids, labels=getattr(train, "labels", None), seed=t.seed, task=task,
                       batch_size=t.batch_size * (1 if ranks is None else ranks.world_size), ranks=ranks,
                       epochs=t.epochs, max_steps=t.max_steps, model=lm.model,
                       tokenizer=lm.tokenizer, pad_token_id=lm.pad_token_id, model_name=cfg.model.name,
                       max_length=cfg.model.max_length, train_dataset=train, collator=collator,
                       texts=texts if task == "classification" else None, build_model=build_model, lr=t.lr,
                       weight_decay=t.weight_decay, warmup=t.warmup, schedule=t.schedule, schedule_by=t.schedule_by,
                       max_grad_norm=t.max_grad_norm,
                       fused_adamw=t.fused_adamw, bf16=t.bf16, eval_batch_size=t.eval_batch_size, out_dir=run_dir)


def run(cfg: RunConfig, *, progress: bool = False, run_dir: str | Path | None = None) -> dict[str, Any]:
    """Train and evaluate one configuration; return (and write) its run record.

    Under a launcher of several processes (``torchrun --nproc-per-node N -m datadiet train ...``,
    or ``datadiet train --nproc N``) every rank calls this: they join one process group (NCCL on
    CUDA, gloo on the CPU), train data-parallel through the step engine (see
    :func:`datadiet.loop.fit`), and rank 0 alone claims the run folder, evaluates and writes the
    record (with the world size and every rank's counts)."""
    from .core.distributed import init_from_env

    t_total = time.perf_counter()
    method = build_method(cfg.method.name, cfg.method.params)  # validate before any work
    device = resolve_device(cfg.train.device)
    ranks = init_from_env(device.type)
    if ranks is not None and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    rd = Path(run_dir) if run_dir is not None else Path(cfg.output_dir) / (cfg.run_name or default_run_name(cfg))
    if ranks is None:
        with FolderLock(rd, what="run folder", fix="choose another run_name / output_dir"):
            return _run(cfg, method=method, device=device, rd=prepare_run_dir(rd, overwrite=cfg.overwrite),
                        progress=progress, t_total=t_total)
    if not ranks.is_main:  # rank 0 claims the folder; the others learn whether it could
        err = ranks.broadcast_object(None)
        if err is not None:
            raise DataDietError(f"rank 0 could not start the run: {err}")
        rec = _run(cfg, method=method, device=device, rd=rd, progress=False, t_total=t_total, ranks=ranks)
        ranks.barrier("the end of the run")
        return rec
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(FolderLock(rd, what="run folder", fix="choose another run_name / output_dir"))
            prepared = prepare_run_dir(rd, overwrite=cfg.overwrite)
        except BaseException as e:
            ranks.broadcast_object(f"{type(e).__name__}: {e}")
            raise
        ranks.broadcast_object(None)
        rec = _run(cfg, method=method, device=device, rd=prepared, progress=progress, t_total=t_total, ranks=ranks)
    ranks.barrier("the end of the run")  # the others waited while rank 0 evaluated and wrote the record
    return rec


class _QuietRecord(RunRecord):
    """The record of a rank other than 0: assembled the same way, never written."""

    def save(self) -> None:
        pass


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool, device: torch.device):
    """``train.deterministic``: torch's deterministic algorithms for the run (an op that has none raises,
    naming it), on CUDA also cuDNN's deterministic kernels and cuBLAS's fixed workspace
    (``CUBLAS_WORKSPACE_CONFIG=:4096:8`` unless set); everything is put back afterwards."""
    if not enabled:
        yield
        return
    import os

    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    env_set = device.type == "cuda" and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    if env_set:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]
        if env_set:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def _run(cfg: RunConfig, *, method, device, rd: Path, progress: bool, t_total: float, ranks: Any = None) -> dict[str, Any]:
    """The body of :func:`run`, inside the claimed run folder (with ``train.deterministic`` applied)."""
    with deterministic_algorithms(cfg.train.deterministic, device):
        return _run_body(cfg, method=method, device=device, rd=rd, progress=progress, t_total=t_total, ranks=ranks)


def _run_body(cfg: RunConfig, *, method, device, rd: Path, progress: bool, t_total: float,
              ranks: Any = None) -> dict[str, Any]:
    t = cfg.train
    if t.threads is not None:
        torch.set_num_threads(t.threads)
    main = ranks is None or ranks.is_main
    record = (RunRecord if main else _QuietRecord)(
        rd, {"config": cfg.to_dict(), "env": env_info(), "device": str(device),
             "seeds": {"train": t.seed, "split": cfg.data.split_seed},
             "world_size": 1 if ranks is None else ranks.world_size,
             **({} if ranks is None else {"backend": ranks.backend, "rank": ranks.rank})})
    record.save()
    try:
        ds, lm, train, test, collator, sel_info = prepare(cfg, device)
        task, num_labels = ds.task, ds.num_labels
        model = lm.model
        autocast = torch.bfloat16 if t.bf16 else None
        record.update(data=ds.info, label_names=ds.label_names, method={"name": cfg.method.name, "params": method.params(),
                      "mechanism": method.mechanism, "saves": method.saves})
        if sel_info is not None:
            record.update(selection_file=sel_info)
        if cfg.data.label_noise:
            flipped = getattr(train, "flipped_ids", np.zeros(0, dtype=np.int64))  # a subset: the flips it holds
            record.update(label_noise={"fraction": cfg.data.label_noise, "seed": cfg.data.split_seed,
                                       "flipped_ids": [int(i) for i in flipped]})

        t0 = time.perf_counter()
        ctx = plan_context(cfg, lm, train, collator, task=task, run_dir=rd if main else None, ranks=ranks)
        plan = method.plan(ctx)
        # Selection work reused from a cache (e.g. data_diet's scoring runs) was paid earlier: it
        # still counts, so that records compare methods at their full cost.
        reused_s = float(plan.info.get("selection_reused_s", 0.0))
        selection_s = time.perf_counter() - t0 + reused_s
        positions = None
        if plan.selection is not None:
            positions = plan.selection.indices
            if ranks is not None:  # every rank trains on rank 0's subset
                positions = np.asarray(ranks.broadcast_object([int(p) for p in positions]), dtype=np.int64)
            if main:
                plan.selection.save(rd / "selection.json")

        engine = StepEngine(task=task, batch_size=t.batch_size, filters=plan.filters,
                            pad_token_id=lm.pad_token_id, autocast_dtype=autocast, ranks=ranks)
        ev = None
        if t.eval_every and main:
            ev = lambda: evaluate_model(model, test, task=task, collator=collator, batch_size=t.eval_batch_size,  # noqa: E731
                                        autocast_dtype=autocast, num_labels=num_labels, max_examples=t.eval_max_examples)
        res = fit(model, train, engine=engine, collator=collator, epochs=t.epochs, lr=t.lr, weight_decay=t.weight_decay,
                  warmup=t.warmup, schedule=t.schedule, schedule_by=t.schedule_by, max_grad_norm=t.max_grad_norm,
                  fused_adamw=t.fused_adamw, seed=t.seed, positions=positions, evaluate=ev, eval_every=t.eval_every, eval_by=t.eval_by,
                  progress=progress, max_steps=t.max_steps, ranks=ranks)
        t0 = time.perf_counter()
        summary = engine.summary()  # several processes: a collective, so before rank 0 evaluates alone
        final = {}
        if main:
            final = evaluate_model(model, test, task=task, collator=collator, batch_size=t.eval_batch_size,
                                   autocast_dtype=autocast, num_labels=num_labels)
        eval_s = time.perf_counter() - t0 + res.eval_s
        n_train = len(train)
        metric = "accuracy" if task == "classification" else "perplexity"
        return record.finish(
            task=task,
            n_train=n_train,
            n_test=len(test),
            n_train_used=n_train if positions is None else len(positions),
            metric=metric,
            value=final.get(metric),
            final=final,
            epochs=res.epochs,
            curve=res.curve,
            eval_subset=EVAL_SUBSET,
            step_losses=res.losses,
            skip_history=_compress_history(engine.history),
            counts={k: v for k, v in summary.items() if k not in ("timings", "filters", "per_rank", "world_size")},
            **({} if ranks is None else {"per_rank_counts": summary["per_rank"]}),
            filters=summary["filters"],
            plan_info=plan.info,
            timings={
                "wall_clock_s": selection_s + res.train_s,
                "selection_s": selection_s,
                "selection_reused_s": reused_s,
                "train_s": res.train_s,
                "filter_s": summary["timings"].get("filter_s", 0.0),
                "sync_s": summary["timings"].get("sync_s", 0.0),  # several processes: datadiet's collectives
                "eval_s": eval_s,
                "total_s": time.perf_counter() - t_total,
            },
        )
    except BaseException as e:
        record.fail(e)
        raise


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; a named device that is unavailable is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DataDietError(f"train.device={name!r} but no CUDA device is available; use train.device=cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise DataDietError(f"train.device={name!r} is not a device; use auto, cpu, cuda or cuda:N") from None


def _compress_history(history: list[dict[str, float]], max_points: int = 200) -> list[dict[str, float]]:
    """Per-batch seen/kept counts, merged into at most ``max_points`` buckets (skip rate over training)."""
    if not history:
        return []
    size = max(1, int(np.ceil(len(history) / max_points)))
    out = []
    for i in range(0, len(history), size):
        chunk = history[i : i + size]
        seen = sum(r["seen"] for r in chunk)
        kept = sum(r["kept"] for r in chunk)
        out.append({"batch": i + len(chunk), "epoch": chunk[-1]["epoch"], "seen": seen, "kept": kept,
                    "skip_rate": 1 - kept / seen if seen else 0.0})
    return out


def check_config(cfg: RunConfig) -> None:
    """Validate names before any work starts (used by the CLI and the benchmark)."""
    from .data import BUILTIN
    from .models import MODELS
    from .errors import unknown_name

    build_method(cfg.method.name, cfg.method.params)
    name = cfg.data.name
    from .data.load import FILE_SUFFIXES

    sel = cfg.data.selection
    if sel and not Path(sel).exists():
        raise DataDietError(f"data.selection file {sel!r} does not exist; create one with `datadiet select` or fix the path")
    if sel:
        from .core.selection import Selection

        Selection.load(sel)  # a damaged file is refused here, before a run folder exists
    if name not in BUILTIN and Path(name).suffix.lower() in FILE_SUFFIXES and not Path(name).exists():
        raise DataDietError(f"data file {name!r} does not exist; check the path")
    tf = cfg.data.test_file
    if tf and not Path(tf).exists():
        raise DataDietError(f"test file {tf!r} (data.test_file) does not exist; check the path")
    if name not in BUILTIN and not Path(name).exists() and "/" not in name:
        raise unknown_name("dataset", name, BUILTIN, extra=" Or give a path to a CSV/TSV/JSONL/Parquet file, or a hub name like 'org/name'.")
    m = cfg.model.name
    if m not in MODELS and not Path(m).exists() and "/" not in m:
        raise unknown_name("model", m, MODELS, extra=" Or give a local folder, or a hub name like 'org/model'.")


__all__ = ["run", "check_config", "load_data", "tokenize_data", "prepare", "plan_context", "apply_selection_file",
           "default_run_name", "DataDietError"]
