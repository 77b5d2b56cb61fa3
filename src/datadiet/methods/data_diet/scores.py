"""Per-example difficulty scores of a classifier: EL2N and GraNd (Paul et al., NeurIPS 2021).

Sign convention (the library's one): a larger score means the model finds the example harder.

For a K-class classifier with ``p = softmax(logits)`` and ``y`` the one-hot label:

``el2n``
    ``|| p - y ||_2``: one forward per example.
``grand``
    ``|| d CE(x) / d w ||_2`` over *every* trainable parameter ``w``: one per-example gradient.
    Computed with ``torch.func`` (``functional_call`` + ``grad`` + ``vmap``) over chunks of
    examples; each example sees only its own tokens (a per-example 4-D attention mask), so the
    result equals an unpadded per-example backward. The first chunk is checked against a plain
    per-example autograd loop; if ``vmap`` fails or disagrees (a model whose forward has
    data-dependent control flow, or that reads 4-D masks differently), every example falls back
    to that loop (same numbers, slower).
``grand_head``
    GraNd restricted to the *final Linear layer* (the module whose output is the logits, found
    and checked at run time). For ``z = W h + b`` and cross-entropy, ``dL/dz = p - y``, so
    ``dL/dW = (p - y) h^T`` and ``dL/db = p - y``, hence
    ``|| grad || = || p - y || * sqrt(||h||^2 + 1)`` (``sqrt(||h||^2)`` without bias). ``h`` is
    the input of that layer: for BERT-style classifiers the pooled ``[CLS]`` vector after the
    pooler's dense + tanh (and dropout, which is off in eval mode). Almost free: it rides on the
    EL2N forward.

All scores are computed in eval mode (dropout off), under ``torch.no_grad`` except full GraNd.
The pure functions take tensors; :func:`score_dataset` runs a model over a dataset.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..._validate import check_choice, check_int
from ...core.filter import NOT_MODEL_INPUTS
from ...errors import DataDietError
from ...functional.precision import autocast

log = logging.getLogger(__name__)

SCORES = ("el2n", "grand", "grand_head")
#: keys of a collated batch that are not model inputs


# ------------------------------------------------------------------------------------ pure math
def el2n(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``|| softmax(logits) - onehot(labels) ||_2`` per row: [B, K], [B] -> [B] (float32)."""
    if logits.ndim != 2:
        raise ValueError(f"logits must be [batch, classes], got shape {tuple(logits.shape)}")
    p = torch.softmax(logits.float(), dim=-1)
    y = F.one_hot(labels.long(), num_classes=logits.shape[-1]).to(p.dtype)
    return torch.linalg.vector_norm(p - y, dim=-1)


def grand_head(logits: torch.Tensor, labels: torch.Tensor, head_input: torch.Tensor, *, bias: bool) -> torch.Tensor:
    """Closed-form per-example gradient norm of CE w.r.t. a final linear layer ``z = W h (+ b)``.

    ``|| p - y || * sqrt(||h||^2 + 1)`` with a bias, ``|| p - y || * ||h||`` without: [B, K],
    [B], [B, H] -> [B].
    """
    if head_input.ndim != 2 or head_input.shape[0] != logits.shape[0]:
        raise ValueError(f"head_input must be [batch, features], got shape {tuple(head_input.shape)}")
    h2 = head_input.float().pow(2).sum(dim=-1)
    return el2n(logits, labels) * torch.sqrt(h2 + (1.0 if bias else 0.0))


def mean_over_runs(per_run: np.ndarray) -> np.ndarray:
    """Average ``[S, N]`` scores of S independent scoring runs into ``[N]`` (float64, exact mean)."""
    a = np.asarray(per_run, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"per-run scores must be [runs, examples] with at least one run, got shape {a.shape}")
    return a.mean(axis=0)


# --------------------------------------------------------------------------- model plumbing
def model_inputs(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items() if k not in NOT_MODEL_INPUTS}


def find_head(model: torch.nn.Module, num_labels: int) -> torch.nn.Linear | None:
    """The final Linear layer: the last registered ``nn.Linear`` with ``num_labels`` outputs.

    Whether its output really is the logits is checked on the first batch by :func:`score_dataset`.
    """
    head = None
    for m in model.modules():
        if isinstance(m, torch.nn.Linear) and m.out_features == num_labels:
            head = m
    return head


class _HeadProbe:
    """Forward hook recording the input and output of the head layer."""

    def __init__(self, head: torch.nn.Module) -> None:
        self.module = head
        self.inp: torch.Tensor | None = None
        self.out: torch.Tensor | None = None
        self._h = head.register_forward_hook(self._hook)

    def _hook(self, module, args, output) -> None:
        self.inp = args[0].detach() if args else None
        self.out = output.detach()

    def remove(self) -> None:
        self._h.remove()


def unwrap_ddp(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (else ``model``): the sharded passes run
    different numbers of forwards on different ranks, which a DDP forward must not see."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def sharded_rows(ranks, n: int, compute: Callable[[Any], np.ndarray], *, empty: np.ndarray) -> np.ndarray:
    """Several processes: ``compute(positions)`` on this rank's contiguous shard ``ranks.shard(n)`` of
    ``n`` rows (``empty`` when the shard has none), gathered (``gather_rows``) into all ``n`` rows in
    order, the same on every rank. Every rank must call it at the same time."""
    sl = ranks.shard(n)
    part = compute(range(sl.start, sl.stop)) if sl.stop > sl.start else empty
    full, counts = ranks.gather_rows(torch.from_numpy(np.ascontiguousarray(part)))
    if sum(counts) != n:
        raise DataDietError(f"the ranks' shards hold {sum(counts)} rows ({counts}) for {n} examples")
    return full.cpu().numpy()


def subset(dataset, positions):
    """The rows ``positions`` of a map-style dataset, as a dataset (``len`` and ``[i]``)."""
    return torch.utils.data.Subset(dataset, list(positions))


def _batches(dataset, positions: Sequence[int], batch_size: int, collator) -> Any:
    for start in range(0, len(positions), batch_size):
        yield start, collator([dataset[int(i)] for i in positions[start : start + batch_size]])


def _bar(total: int, desc: str, progress: bool):
    if not progress:
        return None
    from tqdm.auto import tqdm

    # disable=None: no bar when stderr is not a terminal
    return tqdm(total=total, unit="ex", desc=desc, leave=False, dynamic_ncols=True, disable=None)


@contextlib.contextmanager
def _eval_pass(model: torch.nn.Module, total: int, desc: str, progress: bool) -> Iterator[Any]:
    """One pass over the data in eval mode: yields the progress bar (None unless ``progress``);
    afterwards the bar is closed and the model's train/eval mode restored."""
    was = model.training
    model.eval()
    bar = _bar(total, desc, progress)
    try:
        yield bar
    finally:
        model.train(was)
        if bar is not None:
            bar.close()


# ------------------------------------------------------------------------------- forward scores
class ForwardScorer:
    """The per-batch computation of :func:`forward_scores`: EL2N (and, when ``head``, head GraNd) of
    one collated batch, ``{"el2n": [B]}`` plus ``"grand_head": [B]`` while the final Linear layer is
    usable. The single-process loop and a Ray actor (:mod:`datadiet.core.ray_pool`) both call it, so
    both compute the same numbers. The head is found, and checked to output the logits, on the first
    batch. ``make`` is its picklable factory (``ForwardScorer.make(autocast_dtype=..., head=...)``)."""

    def __init__(self, model: torch.nn.Module, *, autocast_dtype: torch.dtype | None = None, head: bool = True) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.autocast_dtype = autocast_dtype
        self.head = head
        self.probe: _HeadProbe | None = None
        self.first = True

    @staticmethod
    def make(*, autocast_dtype: torch.dtype | None = None, head: bool = True):
        import functools

        return functools.partial(ForwardScorer, autocast_dtype=autocast_dtype, head=head)

    @torch.no_grad()
    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        if "labels" not in batch:
            raise DataDietError("scoring needs class labels; EL2N and GraNd are defined for classifiers only")
        device, model = self.device, self.model
        labels = batch["labels"].to(device)
        first, self.first = self.first, False
        if self.head and first:
            m = find_head(model, _num_labels(model, batch, device, self.autocast_dtype))
            self.probe = _HeadProbe(m) if m is not None else None
            if self.probe is None:
                self.head = False
        with autocast(self.autocast_dtype, device):
            logits = model(**model_inputs(batch, device)).logits
        logits = logits.float()
        out = {"el2n": el2n(logits, labels).double().cpu().numpy()}
        probe = self.probe
        if self.head and probe is not None and first:  # is the probed layer's output really the logits?
            if not (probe.out is not None and probe.inp is not None and probe.inp.ndim == 2
                    and probe.out.shape == logits.shape
                    and torch.allclose(probe.out.float(), logits, atol=1e-4, rtol=1e-3)):
                log.info("the last Linear layer's output is not the logits; head GraNd unavailable")
                self.close()
                self.head = False
        if self.head and probe is not None:
            out["grand_head"] = grand_head(logits, labels, probe.inp, bias=probe.module.bias is not None
                                           ).double().cpu().numpy()
        return out

    def close(self) -> None:
        if self.probe is not None:
            self.probe.remove()
            self.probe = None


def forward_scores(
    model: torch.nn.Module,
    dataset,
    *,
    collator: Callable[[list], dict[str, torch.Tensor]],
    batch_size: int = 64,
    autocast_dtype: torch.dtype | None = None,
    head: bool = True,
    progress: bool = False,
    engine=None,
    work_dir=None,
    work_key: dict[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """EL2N (and, when ``head``, head GraNd) of every example of ``dataset``, in dataset order.

    One no-grad eval-mode forward per example. Returns ``{"el2n": [N]}`` plus ``"grand_head": [N]``
    when the model's final Linear layer could be identified (its output equals the logits).
    The model's train/eval mode is restored afterwards.

    ``engine`` (a :class:`datadiet.core.ray_pool.RayEngine`): the same batches on Ray Data actors
    instead of this process, resumable from ``work_dir`` (finished shards of the pass ``work_key``).
    """
    batch_size = check_int("batch_size", batch_size, min=1)
    n = len(dataset)
    if engine is not None:
        from ...core.ray_pool import ray_pass

        return ray_pass(ForwardScorer.make(autocast_dtype=autocast_dtype, head=head), model, dataset,
                        collator=collator, batch_size=batch_size, engine=engine, work_dir=work_dir, key=work_key,
                        progress=progress, desc="score")
    out: dict[str, np.ndarray] = {"el2n": np.empty(n, dtype=np.float64)}
    if head:
        out["grand_head"] = np.empty(n, dtype=np.float64)
    scorer = ForwardScorer(model, autocast_dtype=autocast_dtype, head=head)
    with _eval_pass(model, n, "score", progress) as bar:
        try:
            for start, batch in _batches(dataset, range(n), batch_size, collator):
                got = scorer(batch)
                m = len(got["el2n"])
                for k in list(out):
                    if k in got:
                        out[k][start : start + m] = got[k]
                    else:
                        del out[k]
                if bar is not None:
                    bar.update(m)
        finally:
            scorer.close()
    return out


def _num_labels(model, batch, device, autocast_dtype) -> int:
    nl = getattr(getattr(model, "config", None), "num_labels", None)
    if isinstance(nl, int) and nl > 0:
        return nl
    with autocast(autocast_dtype, device):
        return int(model(**model_inputs(batch, device)).logits.shape[-1])


# ----------------------------------------------------------------------------------- full GraNd
def grand_loop(
    model: torch.nn.Module,
    dataset,
    *,
    collator: Callable[[list], dict[str, torch.Tensor]],
    positions: Sequence[int] | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Full-parameter GraNd by one autograd backward per (unpadded) example: the reference."""
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    pos = list(range(len(dataset))) if positions is None else [int(p) for p in positions]
    out = np.empty(len(pos), dtype=np.float64)
    with _eval_pass(model, len(pos), "grand", progress) as bar, torch.enable_grad():
        for j, i in enumerate(pos):
            batch = collator([dataset[i]])
            logits = model(**model_inputs(batch, device)).logits
            loss = F.cross_entropy(logits.float(), batch["labels"].to(device))
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            sq = sum(g.float().pow(2).sum() for g in grads if g is not None)
            out[j] = float(torch.sqrt(torch.as_tensor(sq)))
            if bar is not None:
                bar.update(1)
    return out


def _grand_vmap_chunk(model, params, frozen, batch, device) -> torch.Tensor:
    from torch.func import functional_call, grad, vmap

    inputs = model_inputs(batch, device)
    labels = batch["labels"].to(device)
    mask = inputs.pop("attention_mask", None)
    if mask is None:
        mask = torch.ones_like(inputs["input_ids"])

    def loss_one(p, ex, m, y):
        t = m.shape[0]
        mask4 = m.bool()[None, None, None, :].expand(1, 1, t, t)
        kw = {k: v[None] for k, v in ex.items()}
        out = functional_call(model, (p, frozen), args=(), kwargs={**kw, "attention_mask": mask4})
        return F.cross_entropy(out.logits.float(), y[None])

    def norm_one(p, ex, m, y):
        g = grad(loss_one)(p, ex, m, y)
        return torch.sqrt(sum(v.float().pow(2).sum() for v in g.values()))

    with warnings.catch_warnings():
        # SDPA has no vmap batching rule yet: torch loops over it and says so on every call.
        warnings.filterwarnings("ignore", message=".*have not yet implemented the batching rule.*")
        return vmap(norm_one, in_dims=(None, 0, 0, 0))(params, inputs, mask, labels)


def grand_scores(
    model: torch.nn.Module,
    dataset,
    *,
    collator: Callable[[list], dict[str, torch.Tensor]],
    chunk_size: int = 8,
    implementation: str = "auto",
    progress: bool = False,
) -> tuple[np.ndarray, str]:
    """Full-parameter GraNd of every example; returns ``(scores [N], implementation used)``.

    ``implementation``: ``"auto"`` (vmap over chunks of ``chunk_size`` examples, checked against
    the loop on the first two examples; the loop if vmap fails or disagrees), ``"vmap"`` (no
    fallback: errors propagate) or ``"loop"``. Peak memory of vmap is about ``chunk_size`` copies
    of the parameters' gradients.
    """
    chunk_size = check_int("chunk_size", chunk_size, min=1)
    implementation = check_choice("implementation", implementation, ("auto", "vmap", "loop"))
    n = len(dataset)
    if implementation == "loop":
        return grand_loop(model, dataset, collator=collator, progress=progress), "loop"
    device = next(model.parameters()).device
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    frozen = {k: v.detach() for k, v in model.named_parameters() if not v.requires_grad}
    frozen.update(dict(model.named_buffers()))
    out = np.empty(n, dtype=np.float64)
    with _eval_pass(model, n, "grand", progress) as bar:
        for start, batch in _batches(dataset, range(n), chunk_size, collator):
            try:
                vals = _grand_vmap_chunk(model, params, frozen, batch, device).double().cpu().numpy()
            except Exception as e:  # noqa: BLE001 - any functorch limitation means: use the loop
                if implementation == "vmap":
                    raise
                log.warning("per-example gradients with vmap failed (%s: %s); using a per-example loop",
                            type(e).__name__, str(e).splitlines()[0][:200])
                return grand_loop(model, dataset, collator=collator, progress=progress), "loop"
            if start == 0 and implementation == "auto":
                m = min(2, len(vals))
                ref = grand_loop(model, dataset, collator=collator, positions=range(m))  # leaves it in eval mode
                if not np.allclose(vals[:m], ref, rtol=1e-3, atol=1e-6):
                    log.warning("vmap per-example gradient norms disagree with autograd (%s vs %s); "
                                "using a per-example loop", vals[:m], ref)
                    return grand_loop(model, dataset, collator=collator, progress=progress), "loop"
            out[start : start + len(vals)] = vals
            if bar is not None:
                bar.update(len(vals))
    return out, "vmap"


def score_dataset(
    model: torch.nn.Module,
    dataset,
    *,
    kind: str,
    collator: Callable[[list], dict[str, torch.Tensor]],
    batch_size: int = 64,
    autocast_dtype: torch.dtype | None = None,
    grand_chunk_size: int = 8,
    progress: bool = False,
) -> np.ndarray:
    """One score per example of ``dataset`` (dataset order) for ``kind`` in :data:`SCORES`."""
    kind = check_choice("score", kind, SCORES)
    if kind == "grand":
        return grand_scores(model, dataset, collator=collator, chunk_size=grand_chunk_size, progress=progress)[0]
    res = forward_scores(model, dataset, collator=collator, batch_size=batch_size, autocast_dtype=autocast_dtype,
                         head=kind == "grand_head", progress=progress)
    if kind not in res:
        raise DataDietError(
            "score 'grand_head' needs a final Linear layer whose output is the logits, and this model has none "
            "that matches; use score=el2n or score=grand"
        )
    return res[kind]
