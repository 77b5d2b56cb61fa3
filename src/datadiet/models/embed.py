"""Mean-pooled sentence embeddings from any encoder (``minilm`` by default)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

log = logging.getLogger(__name__)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Pure: average of the token vectors of each row over its non-padding positions. [B,T,D] -> [B,D]."""
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


@torch.no_grad()
def embed_texts(
    texts: Sequence[str],
    *,
    model: str = "minilm",
    batch_size: int = 64,
    max_length: int = 128,
    layer: int | None = None,
    normalize: bool = True,
    progress: bool = False,
    loaded=None,
) -> np.ndarray:
    """Embed ``texts`` as float32 [n, d]: the encoder's hidden states at ``layer`` (default: last),
    mean-pooled over non-padding tokens, L2-normalised unless ``normalize=False``.

    ``loaded``: an already loaded ``(model, tokenizer)`` pair to reuse instead of ``model``'s name.
    """
    if loaded is None:
        from .registry import _transformers, from_pretrained, minilm_folder

        tf = _transformers()
        path = str(minilm_folder()) if model == "minilm" else model
        tok = from_pretrained(tf.AutoTokenizer, path)
        enc = from_pretrained(tf.AutoModel, path)
    else:
        enc, tok = loaded
    was = enc.training
    enc.eval()
    device = next(enc.parameters()).device
    out = []
    it = range(0, len(texts), batch_size)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="embed", unit="batch", disable=None)
    for s in it:
        b = tok(list(texts[s : s + batch_size]), truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        b = {k: v.to(device) for k, v in b.items()}
        res = enc(**b, output_hidden_states=layer is not None)
        h = res.hidden_states[layer] if layer is not None else res.last_hidden_state
        e = mean_pool(h.float(), b["attention_mask"])
        if normalize:
            e = torch.nn.functional.normalize(e, dim=-1)
        out.append(e.cpu())
    enc.train(was)
    return torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, 0), dtype=np.float32)
