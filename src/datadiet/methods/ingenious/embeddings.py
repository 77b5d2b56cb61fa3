"""One vector per training example, for similarity-based selection (INGENIOUS), cached on disk.

Two sources:

- the training model's own hidden states (``encoder=None``): the model's base (``model.base_model``,
  so no classifier or LM head is run) on the already tokenized training data, hidden states at
  ``layer`` (``None`` = the last layer; ``0`` = the token embeddings; negative counts from the end),
  mean-pooled over non-padding tokens. The inputs are the plain training inputs (never masked,
  unlike the INGENIOUS reference, which embedded MLM-masked inputs);
- a frozen sentence encoder (``encoder="minilm"``, loaded through :mod:`datadiet.models`) on the
  raw texts, through :func:`datadiet.models.embed_texts`.

Rows are L2-normalised float32. Batches are sorted by length (less padding; the result is put back
in dataset order), a progress bar is shown only when asked (``progress=True``) and stderr is a
terminal.

Cache: one ``.npz`` per key under ``cache_dir("embeddings")`` (``$DATADIET_CACHE``, else the user
cache dir), written atomically (temporary file, then rename). The key is a JSON of: the source
(model name plus a fingerprint of its weights, or the encoder name), ``layer``, ``max_length``,
the autocast dtype and device type, and a sha256 of the data (stable ids plus token ids for the
model source, ids plus texts for an encoder). An entry stores the seconds the embedding cost when
it was computed; a hit returns that as ``cost_s`` (``reused_s``), next to the seconds this call
spent (``spent_s``), so a run can still count what its selection cost (the runner adds
``plan.info["selection_reused_s"]`` to ``selection_s``).

Several processes (``ranks``): each rank embeds its contiguous shard of the examples and the
shards are gathered, so every rank holds the whole matrix in order; rank 0 alone reads the cache
(and broadcasts the entry or the miss) and writes it.

The weight fingerprint hashes every parameter's name, shape and dtype and a strided sample of at
most 65,536 of its values (so hashing a 135M-parameter model takes milliseconds, and any
fine-tuning step or different initialisation changes it). Pooler weights, which hidden states do
not depend on, are left out.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..._validate import check_int
from ...errors import ConfigError, DataDietError
from ...core.cache import NpzCache, fields_fingerprint, key_digest
from ...core.filter import ID_KEY

log = logging.getLogger(__name__)

CACHE_VERSION = 1
_SAMPLE = 65_536


@dataclass(frozen=True)
class Embeddings:
    """``vectors[i]`` (float32, unit norm) embeds the example with stable id ``ids[i]``.

    ``cost_s``: seconds the embedding cost when it was computed (from the cache entry on a hit);
    ``spent_s``: seconds this call spent; ``cached``: whether it came from the cache.
    """

    vectors: np.ndarray
    ids: np.ndarray
    cost_s: float
    spent_s: float = 0.0
    cached: bool = False
    key: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1]) if self.vectors.ndim == 2 else 0

    @property
    def reused_s(self) -> float:
        """The part of ``cost_s`` paid earlier (all of it on a cache hit, else 0)."""
        return float(self.cost_s) if self.cached else 0.0

    def summary(self) -> dict[str, Any]:
        return {"n": len(self), "dim": self.dim, "cost_s": float(self.cost_s), "spent_s": float(self.spent_s),
                "cached": bool(self.cached), "reused_s": self.reused_s,
                "source": self.key.get("source"), "layer": self.key.get("layer")}

    def save_parquet(self, folder: str | Path, *, dtype: str = "float32", shard_rows: int | None = None) -> Path:
        """Write these rows as a Parquet embedding store in ``folder`` (:mod:`.store`): shards keyed by
        ``example_id`` with an ``embedding`` column (float32, or ``dtype="float16"`` at half the size) and
        the cache key and cost as provenance; an interrupted write, rerun, resumes."""
        from .store import SHARD_ROWS, write_embedding_store

        return write_embedding_store(self.ids, self.vectors, folder, key=self.key, cost_s=self.cost_s, dtype=dtype,
                                     shard_rows=SHARD_ROWS if shard_rows is None else shard_rows)

    @classmethod
    def from_parquet(cls, path: str | Path, *, ids: np.ndarray | None = None, dtype: str = "float32") -> Embeddings:
        """Read an embedding store (every shard checked). ``ids``: return exactly these examples' rows in
        this order (the store may hold more; one it lacks is an error naming how many are missing).
        The result counts as cached: its ``cost_s`` is the stored cost, paid when it was computed."""
        from .store import read_embedding_store

        t0 = time.perf_counter()
        d = read_embedding_store(path, dtype=dtype)
        sids, vec = d["ids"], d["vectors"]
        if ids is not None:
            ids = np.asarray(ids, dtype=np.int64)
            order = np.argsort(sids, kind="stable")
            at = np.searchsorted(sids, ids, sorter=order)
            at = np.minimum(at, len(sids) - 1)
            found = sids[order[at]] == ids
            if not found.all():
                miss = ids[~found]
                raise DataDietError(f"the embedding store {str(path)!r} lacks {len(miss)} of the {len(ids)} training "
                                    f"examples (ids such as {[int(i) for i in miss[:5]]}); embed the whole training "
                                    "set into it, or leave embeddings_store unset to embed here")
            sids, vec = ids, vec[order[at]]
        return cls(vectors=vec, ids=sids, cost_s=d["cost_s"], spent_s=time.perf_counter() - t0, cached=True,
                   key={**d["key"], "store": str(path)})


# ------------------------------------------------------------------------------------- fingerprints
def weights_fingerprint(model: torch.nn.Module) -> str:
    """sha256 of a model's parameter names, shapes, dtypes and a strided sample of their values."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if "pooler" in name.split("."):
            continue
        t = p.detach().reshape(-1)
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
        if t.numel() > _SAMPLE:
            t = t[:: t.numel() // _SAMPLE + 1]
        h.update(t.float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def tokens_fingerprint(dataset) -> str:
    """sha256 of the tokenized data in order: stable ids, token ids, token types (labels left out)."""
    return fields_fingerprint(dataset, (ID_KEY, "input_ids", "token_type_ids"))


def texts_fingerprint(ids: np.ndarray, texts: Sequence[str]) -> str:
    """sha256 of stable ids and texts in order."""
    h = hashlib.sha256()
    h.update(np.asarray(ids, dtype=np.int64).tobytes())
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


# -------------------------------------------------------------------------------------------- cache
class EmbeddingCache(NpzCache):
    """One ``.npz`` per key under ``root`` (default ``cache_dir("embeddings")``); atomic writes."""

    subdir, what, field, dtype = "embeddings", "embedding", "vectors", np.float32
    ndim = 2  # one vector per id; an entry of another shape is recomputed

    @staticmethod
    def digest(key: dict[str, Any]) -> str:
        return key_digest(key, version=CACHE_VERSION)

    def path(self, key: dict[str, Any]) -> Path:
        return self.root / f"{self.digest(key)}.npz"

    def get(self, key: dict[str, Any], ids: np.ndarray) -> tuple[np.ndarray, float] | None:
        return self._read(self.path(key), ids)

    def put(self, key: dict[str, Any], ids: np.ndarray, vectors: np.ndarray, cost_s: float) -> Path:
        return self._write(self.path(key), ids, vectors, cost_s, json.dumps(key, sort_keys=True, default=str))


# ----------------------------------------------------------------------------------------- compute
def _num_layers(model: torch.nn.Module) -> int | None:
    cfg = getattr(model, "config", None)
    n = getattr(cfg, "num_hidden_layers", None) if cfg is not None else None
    return int(n) if isinstance(n, int) else None


def check_layer(layer: int | None, model: torch.nn.Module) -> int | None:
    """``layer`` as given, or a ConfigError when the model has no such hidden state."""
    if layer is None:
        return None
    layer = check_int("layer", layer)
    n = _num_layers(model)
    if n is not None and not -(n + 1) <= layer <= n:
        raise ConfigError(f"layer must be in [{-(n + 1)}, {n}] for this model ({n} layers; 0 = the token embeddings, "
                          f"{n} or -1 = the last layer), got {layer}")
    return layer


class HiddenStateEmbedder:
    """The per-batch computation of :func:`model_embeddings`: mean-pooled, L2-normalised hidden states
    at ``layer`` of the model's base for one collated batch, ``{"embedding": float32 [B, d]}``. The
    single-process loop and a Ray actor (:mod:`datadiet.core.ray_pool`) both call it. ``make`` is its
    picklable factory."""

    def __init__(self, model: torch.nn.Module, *, layer: int | None = None,
                 autocast_dtype: torch.dtype | None = None) -> None:
        self.base = getattr(model, "base_model", model)
        self.layer = layer
        self.autocast_dtype = autocast_dtype
        self.device = next(model.parameters()).device

    @staticmethod
    def make(*, layer: int | None = None, autocast_dtype: torch.dtype | None = None):
        import functools

        return functools.partial(HiddenStateEmbedder, layer=layer, autocast_dtype=autocast_dtype)

    @torch.no_grad()
    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        from ...functional.precision import autocast
        from ...models.embed import mean_pool
        from ..data_diet.scores import model_inputs

        inputs = model_inputs(batch, self.device)
        with autocast(self.autocast_dtype, self.device):
            res = self.base(**inputs, output_hidden_states=self.layer is not None)
        h = res.hidden_states[self.layer] if self.layer is not None else res.last_hidden_state
        mask = inputs.get("attention_mask")
        if mask is None:
            mask = torch.ones(h.shape[:2], dtype=torch.long, device=h.device)
        return {"embedding": torch.nn.functional.normalize(mean_pool(h.float(), mask), dim=-1).cpu().numpy()}


def length_order(dataset) -> np.ndarray:
    """Positions of ``dataset``, longest token sequence first (stable): the embedding passes' batch order."""
    n = len(dataset)
    lengths = np.fromiter((len(dataset[i]["input_ids"]) for i in range(n)), dtype=np.int64, count=n)
    return np.argsort(-lengths, kind="stable")  # longest first: the peak memory shows up at once


@torch.no_grad()
def model_embeddings(
    model: torch.nn.Module,
    dataset,
    *,
    collator: Callable[[list], dict[str, torch.Tensor]],
    layer: int | None = None,
    batch_size: int = 64,
    autocast_dtype: torch.dtype | None = None,
    progress: bool = False,
    ranks=None,
    engine=None,
    work_dir=None,
    work_key: dict[str, Any] | None = None,
) -> np.ndarray:
    """Mean-pooled hidden states of ``model``'s base at ``layer`` for every example of ``dataset``
    (dataset order), L2-normalised float32 ``[n, d]``. One no-grad eval-mode forward per example;
    the model's train/eval mode is restored afterwards.

    ``ranks`` (several processes; every rank calls this at the same time): each rank embeds its
    contiguous shard ``ranks.shard(n)`` and the shards are gathered (``gather_rows``), so every rank
    returns the whole matrix in dataset order.

    ``engine`` (a :class:`datadiet.core.ray_pool.RayEngine`): the same batches on Ray Data actors,
    resumable from ``work_dir`` (finished shards of the pass ``work_key``)."""
    from ..data_diet.scores import _eval_pass, sharded_rows, subset, unwrap_ddp

    if ranks is not None:
        if len(dataset) == 0:
            raise DataDietError("nothing to embed: the training set is empty")
        inner = unwrap_ddp(model)
        return sharded_rows(ranks, len(dataset), lambda pos: model_embeddings(
            inner, subset(dataset, pos), collator=collator, layer=layer, batch_size=batch_size,
            autocast_dtype=autocast_dtype, progress=progress), empty=np.zeros((0, 0), dtype=np.float32))
    batch_size = check_int("batch_size", batch_size, min=1)
    base = getattr(model, "base_model", model)
    layer = check_layer(layer, base)
    n = len(dataset)
    if n == 0:
        raise DataDietError("nothing to embed: the training set is empty")
    order = length_order(dataset)
    if engine is not None:
        from ...core.ray_pool import ray_pass

        return ray_pass(HiddenStateEmbedder.make(layer=layer, autocast_dtype=autocast_dtype), model, dataset,
                        collator=collator, batch_size=batch_size, engine=engine, order=order, work_dir=work_dir,
                        key=work_key, progress=progress, desc="embed")["embedding"].astype(np.float32, copy=False)
    embed = HiddenStateEmbedder(model, layer=layer, autocast_dtype=autocast_dtype)
    out: np.ndarray | None = None
    with _eval_pass(model, n, "embed", progress) as bar:
        for start in range(0, n, batch_size):
            pos = order[start : start + batch_size]
            e = embed(collator([dataset[int(i)] for i in pos]))["embedding"]
            if out is None:
                out = np.empty((n, e.shape[1]), dtype=np.float32)
            out[pos] = e
            if bar is not None:
                bar.update(len(pos))
    assert out is not None
    return out


def load_encoder(name: str, *, device: torch.device | str = "cpu"):
    """A frozen sentence encoder ``(model, tokenizer)`` by name (``minilm``, a folder or a hub name)."""
    from ...models.registry import _transformers, from_pretrained, minilm_folder

    tf = _transformers()
    path = str(minilm_folder()) if name == "minilm" else name
    try:
        tok = from_pretrained(tf.AutoTokenizer, path)
        enc = from_pretrained(tf.AutoModel, path)
    except OSError as e:
        raise DataDietError(f"could not load encoder {name!r}: {str(e).splitlines()[0][:300]}; use encoder 'minilm' "
                            "or a local folder") from None
    enc.eval()
    for p in enc.parameters():
        p.requires_grad_(False)
    return enc.to(device), tok


def encoder_embeddings(
    texts: Sequence[str],
    *,
    loaded,
    layer: int | None = None,
    max_length: int = 128,
    batch_size: int = 64,
    progress: bool = False,
    ranks=None,
) -> np.ndarray:
    """Mean-pooled, L2-normalised encoder embeddings of ``texts`` (given order), batched by length.

    ``ranks`` (several processes; every rank calls this at the same time): each rank embeds its
    contiguous shard ``ranks.shard(n)`` of the texts and the shards are gathered (``gather_rows``),
    so every rank returns every row in the given order."""
    from ...models.embed import embed_texts
    from ..data_diet.scores import sharded_rows

    if ranks is not None:
        if len(texts) == 0:
            raise DataDietError("nothing to embed: no texts")
        return sharded_rows(ranks, len(texts), lambda pos: encoder_embeddings(
            [texts[int(i)] for i in pos], loaded=loaded, layer=layer,
            max_length=max_length, batch_size=batch_size, progress=progress),
            empty=np.zeros((0, 0), dtype=np.float32))
    enc, tok = loaded
    layer = check_layer(layer, enc)
    n = len(texts)
    if n == 0:
        raise DataDietError("nothing to embed: no texts")
    order = np.argsort(-np.fromiter((len(t) for t in texts), dtype=np.int64, count=n), kind="stable")
    vec = embed_texts([texts[int(i)] for i in order], batch_size=batch_size, max_length=max_length, layer=layer,
                      normalize=True, progress=progress, loaded=(getattr(enc, "base_model", enc), tok))
    out = np.empty_like(vec)
    out[order] = vec
    return out


def example_embeddings(
    *,
    ids: np.ndarray,
    encoder: str | None = None,
    model: torch.nn.Module | None = None,
    dataset=None,
    collator: Callable[[list], dict[str, torch.Tensor]] | None = None,
    model_name: str | None = None,
    texts: Sequence[str] | None = None,
    loaded=None,
    layer: int | None = None,
    max_length: int = 128,
    batch_size: int = 64,
    autocast_dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    cache: EmbeddingCache | None = None,
    progress: bool = False,
    ranks=None,
    engine=None,
) -> Embeddings:
    """Embeddings of the examples ``ids`` (in that order), from the cache when possible.

    ``encoder=None``: the training ``model``'s own hidden states on ``dataset`` (tokenized, one row
    per id, collated by ``collator``); ``model_name`` names it in the cache key (its weights are
    fingerprinted too). ``encoder="minilm"`` (or a folder / hub name): a frozen sentence encoder on
    ``texts``; ``loaded=(model, tokenizer)`` uses an already loaded encoder instead (``encoder`` then
    only names it in the cache key). ``max_length`` truncates the encoder's input (the model
    source uses the tokens as they are; it is part of the key either way). ``cache=None``: no cache.

    ``ranks`` (several processes; every rank calls this at the same time): the ranks first check
    that they agree on the cache key (same model weights, data and settings); rank 0 alone looks
    the entry up and broadcasts it (hit) or the miss, so every rank takes the same branch. On a miss
    each rank embeds its contiguous shard (``ranks.shard(n)``), the shards are gathered into the
    whole matrix on every rank, and rank 0 alone writes the entry; ``cost_s`` is then the sum over
    the ranks of the seconds each spent before the gather (what one process would have spent, about).

    ``engine`` (a :class:`datadiet.core.ray_pool.RayEngine`; ``encoder=None`` only): the embedding
    pass runs on Ray Data actors; with a ``cache`` its finished shards are kept in a work folder
    keyed like the cache entry, so a killed job, rerun, resumes from them.
    """
    t0 = time.perf_counter()
    ids = np.asarray(ids, dtype=np.int64)
    if ids.ndim != 1 or len(ids) == 0:
        raise DataDietError(f"ids must be a non-empty 1-D array of example ids, got shape {ids.shape}")
    max_length = check_int("max_length", max_length, min=1)
    batch_size = check_int("batch_size", batch_size, min=1)
    if layer is not None:
        layer = check_int("layer", layer)
    dtype = None if autocast_dtype is None else str(autocast_dtype).replace("torch.", "")
    if engine is not None and (encoder is not None or ranks is not None):
        raise DataDietError("engine 'ray' embeds with the training model (embedding=model) from one process; use "
                            "engine=local for a frozen encoder or under torchrun")
    if encoder is None:
        if model is None or dataset is None or collator is None:
            raise DataDietError("model embeddings need the model, the tokenized dataset and its collator")
        if len(dataset) != len(ids):
            raise DataDietError(f"the dataset has {len(dataset)} rows but {len(ids)} ids were given")
        if ranks is not None:
            from ..data_diet.scores import unwrap_ddp

            model = unwrap_ddp(model)
        base = getattr(model, "base_model", model)
        layer = check_layer(layer, base)
        dev = next(model.parameters()).device
        key = {"source": "model", "model": model_name or type(model).__name__, "weights": weights_fingerprint(base),
               "layer": layer, "max_length": max_length, "dtype": dtype, "device": dev.type,
               "data": tokens_fingerprint(dataset)}
    else:
        if texts is None:
            raise DataDietError(f"encoder {encoder!r} embeds texts; give the examples' texts")
        if len(texts) != len(ids):
            raise DataDietError(f"{len(texts)} texts but {len(ids)} ids were given")
        dev = torch.device(device) if device is not None else (
            next(loaded[0].parameters()).device if loaded is not None else torch.device("cpu"))
        key = {"source": f"encoder:{encoder}", "layer": layer, "max_length": max_length, "device": dev.type,
               "data": texts_fingerprint(ids, texts)}
    if ranks is not None:
        progress = progress and ranks.is_main  # one bar (rank 0's shard), not one per rank
        ranks.agree("the embedding inputs (model weights, data, settings)",
                    {"key": int(EmbeddingCache.digest(key)[:15], 16), "examples": len(ids)},
                    fix="give every rank the same model and the whole training set")
        got = None
        if cache is not None:
            got = ranks.broadcast_object(cache.get(key, ids) if ranks.is_main else None)
    else:
        got = cache.get(key, ids) if cache is not None else None
    if got is not None:
        spent = time.perf_counter() - t0
        log.info("embeddings of %d examples from the cache (cost %.1f s when computed)", len(ids), got[1])
        return Embeddings(vectors=got[0], ids=ids, cost_s=got[1], spent_s=spent, cached=True, key=key)
    work = None  # a Ray pass's work folder: its finished shards, until the embeddings are cached
    if engine is not None and cache is not None:
        from ...core.ray_pool import work_dir_for

        work = work_dir_for("embeddings", key)
    if ranks is None:
        if encoder is None:
            vec = model_embeddings(model, dataset, collator=collator, layer=layer, batch_size=batch_size,
                                   autocast_dtype=autocast_dtype, progress=progress, engine=engine, work_dir=work,
                                   work_key=key)
        else:
            enc = loaded if loaded is not None else load_encoder(encoder, device=dev)
            vec = encoder_embeddings(texts, loaded=enc, layer=layer, max_length=max_length, batch_size=batch_size,
                                     progress=progress)
    else:
        from ..data_diet.scores import sharded_rows, subset

        def shard(pos) -> np.ndarray:
            nonlocal local_s
            if encoder is None:
                part = model_embeddings(model, subset(dataset, pos), collator=collator, layer=layer,
                                        batch_size=batch_size, autocast_dtype=autocast_dtype, progress=progress)
            else:
                enc = loaded if loaded is not None else load_encoder(encoder, device=dev)
                part = encoder_embeddings([texts[int(i)] for i in pos], loaded=enc, layer=layer,
                                          max_length=max_length, batch_size=batch_size, progress=progress)
            local_s = time.perf_counter() - t0
            return part

        local_s = time.perf_counter() - t0  # a rank with an empty shard spends only this
        vec = sharded_rows(ranks, len(ids), shard, empty=np.zeros((0, 0), dtype=np.float32))
    if not np.isfinite(vec).all():
        raise DataDietError("the embeddings hold NaN or inf (a diverged model or an empty input?); "
                            "check the model, or use embedding=minilm")
    cost = time.perf_counter() - t0
    spent = cost
    if ranks is not None:
        cost = ranks.sum([local_s])[0]
    if cache is not None and (ranks is None or ranks.is_main):
        cache.put(key, ids, vec, cost)
        if work is not None:  # cached now: the pass's finished shards are no longer needed
            import shutil

            shutil.rmtree(work, ignore_errors=True)
    log.info("embedded %d examples (dim %d) in %.1f s", len(ids), vec.shape[1], spent)
    return Embeddings(vectors=vec, ids=ids, cost_s=cost, spent_s=spent, cached=False, key=key)


__all__ = ["Embeddings", "EmbeddingCache", "example_embeddings", "model_embeddings", "encoder_embeddings",
           "HiddenStateEmbedder", "length_order",
           "load_encoder", "weights_fingerprint", "tokens_fingerprint", "texts_fingerprint", "check_layer"]
