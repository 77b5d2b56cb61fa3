"""Per-example losses: the quantity every online filter decides on.

Sign convention (stated once for the whole library): a larger loss means the model finds the
example harder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def per_example_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each row: ``logits`` [B, K], ``labels`` [B] -> [B] (float32)."""
    if logits.ndim != 2:
        raise ValueError(f"logits must be [batch, classes], got shape {tuple(logits.shape)}")
    return F.cross_entropy(logits.float(), labels, reduction="none")


def per_example_lm_loss(
    logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
    *, labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean next-token loss of each sequence: [B, T, V] logits -> [B].

    Token t predicts token t+1. Positions whose target is padding (attention 0) or whose label is
    -100 do not count. A sequence with no counted token gets loss 0.
    """
    sums, counted = lm_token_terms(logits, input_ids, attention_mask, labels=labels)
    return sums / counted.clamp(min=1)


def lm_token_terms(
    logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
    *, labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sequence: the *sum* of its next-token losses and the number of tokens counted ([B], [B]).

    The same tokens as :func:`per_example_lm_loss` (which is ``sum / max(count, 1)``); the two terms
    are what token-weighted training needs (the Hugging Face Trainer's ``num_items_in_batch``
    normalisation divides the summed token losses of a whole accumulation window by its token count).
    """
    if labels is None:
        labels = input_ids
    shift_logits = logits[:, :-1, :].float()
    targets = labels[:, 1:].clone()
    if attention_mask is not None:
        targets = targets.masked_fill(attention_mask[:, 1:] == 0, -100)
    tok = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), targets.reshape(-1),
        reduction="none", ignore_index=-100,
    ).view(targets.shape)
    return tok.sum(dim=1), (targets != -100).sum(dim=1)


def lm_token_count(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                   labels: torch.Tensor | None = None) -> torch.Tensor:
    """Tokens counted per sequence by :func:`lm_token_terms` (targets not -100 and not padding), [B]."""
    targets = (input_ids if labels is None else labels)[:, 1:]
    counted = targets != -100
    if attention_mask is not None:
        counted = counted & (attention_mask[:, 1:] != 0)
    return counted.sum(dim=1)


def weighted_mean(losses: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The batch loss: ``sum(w_i * l_i) / B``; with no weights, the plain mean.

    Dividing by the batch size (not by the sum of weights) is what lets a weight above 1 (the
    InfoBatch rescaling of kept low-loss examples) raise that example's share of the gradient.
    """
    if weights is None:
        return losses.mean()
    return (losses * weights.to(losses.dtype)).sum() / losses.numel()
