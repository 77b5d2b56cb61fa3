"""Information gain of a training context on an objective set (Antonello et al., ACL 2021).

``IG(X) = PPL_O(theta0) - PPL_O(theta')``: the drop in perplexity on a small held-out objective
set ``O`` after one optimizer step on context ``X`` from the pretrained weights ``theta0``. The
optimizer is a *fresh* AdamW (reference: lr 5e-5, gradient clipping at 3.0), so the step is AdamW's
first step, which has a closed form (bias-corrected ``m = g``, ``v = g^2``)::

    theta' = theta0 * (1 - lr * wd) - lr * g / (|g| + eps)

:func:`adam_first_step_` applies exactly that (tested against ``torch.optim.AdamW``), so no
optimizer state (two model-sized tensors) is allocated per pair. The weights are restored from one
saved copy (:class:`ParamSnapshot`), never by deep-copying the model.

``first_order`` is a cheaper estimate (our addition): to first order, the step changes the
objective loss by ``-lr * <grad_O, g / (|g| + eps)>``, so ``IG ~ PPL_O(theta0) * (1 -
exp(-lr * <grad_O, u_X>))``. It needs one backward per context and one objective gradient in
all, instead of one objective forward per context.

Pure functions and one thin snapshot class; the cache and the pair-collection driver are here too
because they share the key. Larger IG = more informative (the objective perplexity fell more).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ...functional.losses import per_example_lm_loss
from ...functional.precision import autocast
from ...core.cache import NpzCache, key_digest

log = logging.getLogger(__name__)

ESTIMATES = ("exact", "first_order")




def trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The parameters an optimizer step would change, in a fixed order (shared tensors once)."""
    seen: set[int] = set()
    out = []
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


class ParamSnapshot:
    """One saved copy of a model's trainable parameters; :meth:`restore` writes it back bit for bit."""

    def __init__(self, params: Sequence[torch.nn.Parameter]) -> None:
        self.params = list(params)
        self.saved = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def restore(self) -> None:
        for p, s in zip(self.params, self.saved):
            p.copy_(s)
            p.grad = None


@torch.no_grad()
def adam_first_step_(params: Sequence[torch.nn.Parameter], *, lr: float, eps: float = 1e-8,
                     weight_decay: float = 0.0) -> None:
    """Apply a fresh AdamW's first step in place, from each parameter's ``.grad`` (``None``: untouched)."""
    for p in params:
        if p.grad is None:
            continue
        g = p.grad
        if weight_decay:
            p.mul_(1 - lr * weight_decay)
        p.addcdiv_(g, g.abs() + eps, value=-lr)


def perplexity(model: torch.nn.Module, tokens: torch.Tensor, *, batch_size: int = 32,
               autocast_dtype: torch.dtype | None = None) -> float:
    """Perplexity over every token of ``tokens`` [n, T] (equal-length windows), with the loop's evaluator."""
    from ...data.collate import Collator, LMContexts
    from ...loop import evaluate_model

    t = np.asarray(tokens, dtype=np.int64)
    windows = LMContexts(t, np.arange(len(t)), np.zeros(len(t), dtype=np.int64))
    return evaluate_model(model, windows, task="causal_lm", collator=Collator(pad_token_id=0), batch_size=batch_size,
                          autocast_dtype=autocast_dtype)["perplexity"]


def _context_grad(model, params, ids: torch.Tensor, *, clip: float | None, autocast_dtype) -> None:
    """Leave the gradient of the mean next-token loss of ``ids`` [1, T] in ``params``' ``.grad``."""
    device = next(model.parameters()).device
    for p in params:
        p.grad = None
    ids = ids.to(device)
    with autocast(autocast_dtype, device):
        logits = model(input_ids=ids).logits
    per_example_lm_loss(logits, ids).mean().backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(params, clip)


def exact_ig(model: torch.nn.Module, context: torch.Tensor, objective: torch.Tensor, *, lr: float = 5e-5,
             clip: float | None = 3.0, eps: float = 1e-8, weight_decay: float = 0.0, base_ppl: float | None = None,
             snapshot: ParamSnapshot | None = None, autocast_dtype: torch.dtype | None = None,
             objective_batch_size: int = 32) -> float:
    """``PPL_O(theta0) - PPL_O(theta')`` after one fresh-AdamW step on ``context`` [T] or [1, T].

    The model is left exactly as it was (parameters restored from ``snapshot``, gradients cleared,
    train/eval mode unchanged).
    """
    params = trainable(model)
    snap = snapshot or ParamSnapshot(params)
    kw = {"autocast_dtype": autocast_dtype, "batch_size": objective_batch_size}
    if base_ppl is None:
        base_ppl = perplexity(model, objective, **kw)
    ids = context.view(1, -1)
    was = model.training
    model.train()
    try:
        _context_grad(model, params, ids, clip=clip, autocast_dtype=autocast_dtype)
        adam_first_step_(params, lr=lr, eps=eps, weight_decay=weight_decay)
        new_ppl = perplexity(model, objective, **kw)
    finally:
        snap.restore()
        model.train(was)
    return base_ppl - new_ppl


def objective_grad(model: torch.nn.Module, objective: torch.Tensor, *, autocast_dtype=None,
                   batch_size: int = 32) -> list[torch.Tensor]:
    """Gradient of the objective set's mean token loss at the current weights (one tensor per parameter)."""
    params = trainable(model)
    device = next(model.parameters()).device
    for p in params:
        p.grad = None
    n = objective.shape[0]
    was = model.training
    model.eval()
    try:
        for s in range(0, n, batch_size):
            ids = objective[s : s + batch_size].to(device)
            with autocast(autocast_dtype, device):
                logits = model(input_ids=ids).logits
            (per_example_lm_loss(logits, ids).sum() / n).backward()
        grads = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]
    finally:
        for p in params:
            p.grad = None
        model.train(was)
    return grads


def first_order_ig(model: torch.nn.Module, context: torch.Tensor, grad_o: Sequence[torch.Tensor], *, base_ppl: float,
                   lr: float = 5e-5, clip: float | None = 3.0, eps: float = 1e-8,
                   autocast_dtype: torch.dtype | None = None) -> float:
    """First-order estimate of :func:`exact_ig`: ``PPL0 * (1 - exp(-lr * <grad_O, g / (|g| + eps)>))``."""
    params = trainable(model)
    was = model.training
    model.train()
    try:
        _context_grad(model, params, context.view(1, -1), clip=clip, autocast_dtype=autocast_dtype)
        dot = 0.0
        for p, go in zip(params, grad_o):
            if p.grad is not None:
                dot += float((go.float() * (p.grad.float() / (p.grad.float().abs() + eps))).sum())
    finally:
        for p in params:
            p.grad = None
        model.train(was)
    return base_ppl * (1.0 - math.exp(-lr * dot))


# --------------------------------------------------------------------------- data: objective set, pairs
def choose_objective(doc_ids: np.ndarray, *, n_docs: int, seed: int) -> np.ndarray:
    """``n_docs`` distinct documents of the pool, drawn with ``seed`` (sorted doc ids)."""
    docs = np.unique(np.asarray(doc_ids))
    if n_docs >= len(docs):
        raise ValueError(f"objective_docs={n_docs} leaves no document for the IG pairs: the training pool has "
                         f"{len(docs)} documents; lower objective_docs (the reference uses 100) or add data")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 11]))
    return np.sort(rng.choice(docs, size=n_docs, replace=False))


def objective_windows(tokens: np.ndarray, doc_ids: np.ndarray, docs: np.ndarray, *, length: int,
                      seed: int) -> np.ndarray:
    """One random ``length``-token window from one random context of each document in ``docs``.

    ``tokens`` [n, T] are the pool's contexts, ``doc_ids`` [n] their documents. Returns [len(docs), length].
    """
    rows, starts = objective_picks(tokens.shape[1], doc_ids, docs, length=length, seed=seed)
    return np.stack([tokens[r, s : s + length] for r, s in zip(rows, starts)]).astype(np.int64)


def objective_picks(T: int, doc_ids: np.ndarray, docs: np.ndarray, *, length: int,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, starts)``: the pool row each objective window of :func:`objective_windows` is cut from, and where."""
    if length > T:
        raise ValueError(f"objective_length={length} is longer than the contexts ({T} tokens); lower it or raise "
                         "data.context_length")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 12]))
    rows, starts = [], []
    for d in docs:
        rows.append(int(rng.choice(np.flatnonzero(doc_ids == d))))
        starts.append(int(rng.integers(0, T - length + 1)))
    return np.asarray(rows, dtype=np.int64), np.asarray(starts, dtype=np.int64)


def pair_positions(doc_ids: np.ndarray, objective_docs: np.ndarray, *, n_pairs: int, val_fraction: float,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the contexts to measure, split into learner-train and learner-validation by document.

    Contexts from the objective documents are never used. The validation documents are a
    ``val_fraction`` share of the remaining documents (at least one), disjoint from the training
    pairs' documents. Returns ``(train_positions, val_positions)``, together ``n_pairs`` contexts
    (fewer if the pool is smaller).
    """
    doc_ids = np.asarray(doc_ids)
    free = np.flatnonzero(~np.isin(doc_ids, objective_docs))
    docs = np.unique(doc_ids[free])
    if len(docs) < 2:
        raise ValueError(f"the IG pairs need contexts from at least 2 documents outside the objective set, found "
                         f"{len(docs)}; lower objective_docs or add data")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 13]))
    n_val_docs = min(len(docs) - 1, max(1, int(round(val_fraction * len(docs)))))
    val_docs = rng.choice(docs, size=n_val_docs, replace=False)
    pick = rng.permutation(free)[: int(n_pairs)]
    is_val = np.isin(doc_ids[pick], val_docs)
    return np.sort(pick[~is_val]), np.sort(pick[is_val])


def collect_ig(model: torch.nn.Module, contexts: np.ndarray, objective: np.ndarray, *, estimate: str = "exact",
               lr: float = 5e-5, clip: float | None = 3.0, autocast_dtype: torch.dtype | None = None,
               progress: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """IG of every context row of ``contexts`` [n, T] on ``objective`` [m, L]; returns ``(ig, info)``.

    The model ends exactly as it started.
    """
    if estimate not in ESTIMATES:
        raise ValueError(f"estimate must be one of {ESTIMATES}, got {estimate!r}")
    t0 = time.perf_counter()
    obj = torch.as_tensor(objective, dtype=torch.long)
    ctx = torch.as_tensor(contexts, dtype=torch.long)
    base = perplexity(model, obj, autocast_dtype=autocast_dtype)
    params = trainable(model)
    snap = ParamSnapshot(params) if estimate == "exact" else None
    grad_o = objective_grad(model, obj, autocast_dtype=autocast_dtype) if estimate == "first_order" else None
    out = np.zeros(len(ctx), dtype=np.float64)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(ctx), unit="pair", desc=f"IG pairs ({estimate})", leave=False, disable=None)
    for i in range(len(ctx)):
        if estimate == "exact":
            out[i] = exact_ig(model, ctx[i], obj, lr=lr, clip=clip, base_ppl=base, snapshot=snap,
                              autocast_dtype=autocast_dtype)
        else:
            out[i] = first_order_ig(model, ctx[i], grad_o, base_ppl=base, lr=lr, clip=clip,
                                    autocast_dtype=autocast_dtype)
        if bar is not None:
            bar.update(1)
        if (i + 1) % 100 == 0:
            log.info("IG (%s): %d of %d contexts, %.0fs", estimate, i + 1, len(ctx), time.perf_counter() - t0)
    if bar is not None:
        bar.close()
    return out, {"base_objective_ppl": base, "seconds": time.perf_counter() - t0, "n": len(ctx)}


def zscore(ig: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``(z, mean, std)``: IG in standard deviations over the pairs (std 0 -> 1, so z = 0)."""
    ig = np.asarray(ig, dtype=np.float64)
    mean, std = float(ig.mean()), float(ig.std())
    std = std if std > 0 else 1.0
    return (ig - mean) / std, mean, std


class PairCache(NpzCache):
    """IG values of measured contexts, one entry per (model, data, objective, settings)."""

    subdir = "igf_pairs"
    what = "IG pair"
    field = "ig"
    dtype = np.float64

    def path(self, key: dict[str, Any]):
        return self.root / f"{key_digest(key, version=1)}.npz"

    def get(self, key: dict[str, Any], ids: np.ndarray):
        return self._read(self.path(key), np.asarray(ids, dtype=np.int64))

    def put(self, key: dict[str, Any], ids: np.ndarray, ig: np.ndarray, cost_s: float) -> None:
        import json

        self._write(self.path(key), np.asarray(ids, dtype=np.int64), ig, cost_s, json.dumps(key, default=str))
