"""Tiny randomly initialised models built from configs, with a character tokenizer (tests, smoke runs)."""

from __future__ import annotations

import string

import torch

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[BOS]", "[EOS]"]
CHARS = list(string.ascii_lowercase + string.digits + string.punctuation + " ")


def char_tokenizer(*, causal: bool = False):
    """A fast tokenizer over lowercase characters; no download, deterministic vocabulary."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + CHARS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    if not causal:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
        bos_token="[BOS]", eos_token="[EOS]",
    )
    return fast


def tiny_model(kind: str, *, num_labels: int = 2, seed: int = 0, hidden: int = 32, layers: int = 2):
    """``kind``: ``tiny-bert`` (classifier), ``tiny-gpt2`` or ``tiny-llama`` (causal LMs). Dropout is 0."""
    import transformers as tf

    vocab = len(SPECIALS) + len(CHARS)
    # Model init draws from torch's global generator; fork it so callers' RNG state is untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if kind == "tiny-bert":
            cfg = tf.BertConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                                intermediate_size=hidden * 2, max_position_embeddings=512, num_labels=num_labels,
                                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=0)
            model = tf.BertForSequenceClassification(cfg)
            tok = char_tokenizer()
        elif kind == "tiny-gpt2":
            cfg = tf.GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=2, n_positions=512,
                                resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=0)
            model = tf.GPT2LMHeadModel(cfg)
            tok = char_tokenizer(causal=True)
        elif kind == "tiny-llama":
            cfg = tf.LlamaConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                                 num_key_value_heads=2, intermediate_size=hidden * 2, max_position_embeddings=512,
                                 pad_token_id=0, tie_word_embeddings=False)
            model = tf.LlamaForCausalLM(cfg)
            tok = char_tokenizer(causal=True)
        else:
            raise ValueError(f"unknown tiny model {kind!r}")
    return model, tok
