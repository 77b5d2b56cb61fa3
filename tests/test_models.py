"""Models by name or folder; mean-pooled embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datadiet.errors import DataDietError
from datadiet.models import embed_texts, load_model, mean_pool


def test_mean_pool_ignores_padding():
    h = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    torch.testing.assert_close(mean_pool(h, torch.tensor([[1, 1, 0]])), torch.tensor([[2.0, 3.0]]))


def test_local_folder_loads_like_a_hub_name(tmp_path):
    lm = load_model("tiny-bert", task="classification", num_labels=3)
    lm.model.save_pretrained(tmp_path / "m")
    lm.tokenizer.save_pretrained(tmp_path / "m")
    again = load_model(str(tmp_path / "m"), task="classification", num_labels=3)
    for (n, p), (_, q) in zip(lm.model.named_parameters(), again.model.named_parameters()):
        assert torch.equal(p, q), n
    assert again.tokenizer("abc")["input_ids"] == lm.tokenizer("abc")["input_ids"]


def test_unknown_model_names_are_refused_with_the_known_ones():
    with pytest.raises(DataDietError, match="unknown model 'minilmm'.*Did you mean 'minilm'"):
        load_model("minilmm", task="classification", num_labels=2)
    with pytest.raises(DataDietError, match="is a causal LM"):
        load_model("tiny-gpt2", task="classification", num_labels=2)


def test_embed_texts_is_mean_pooled_normalised_and_batch_independent():
    lm = load_model("tiny-bert", task="classification", num_labels=2)
    enc = lm.model.bert
    texts = ["short", "a somewhat longer text", "mid length"]
    a = embed_texts(texts, loaded=(enc, lm.tokenizer), batch_size=3)
    b = np.concatenate([embed_texts([t], loaded=(enc, lm.tokenizer)) for t in texts])
    assert a.shape == (3, 32) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(a, b, atol=1e-5)  # padding does not change an embedding


@pytest.mark.slow
def test_minilm_embeddings_rank_paraphrases_closer():
    e = embed_texts(["The film was wonderful.", "A truly great movie.", "The invoice is overdue."])
    assert e.shape == (3, 384)
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2
