"""``DataDietMixin`` in front of TRL's ``SFTTrainer``: skipping, LoRA, completion-only loss, equivalence.

Tiny Llama built from a config (``datadiet.models.tiny``) with its character tokenizer, data built
here, TRL's default collator (no ``data_collator`` given). Nothing is downloaded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

import datasets  # noqa: E402
from peft import LoraConfig  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

from datadiet.errors import DataDietError  # noqa: E402
from datadiet.integrations.hf import DataDietMixin  # noqa: E402
from datadiet.models.tiny import tiny_model  # noqa: E402
from datadiet.online import RandomSkip  # noqa: E402
from datadiet.core.filter import Decision, OnlineFilter  # noqa: E402

BS = 4
N = 32
ID0 = 1000  # example ids are not row positions

pytestmark = pytest.mark.timeout(120)
datasets.disable_progress_bars()

# ---------------------------------------------------------------------- helpers
class DietSFT(DataDietMixin, SFTTrainer):
    pass


class Recorder(OnlineFilter):
    """Keeps everything (post-forward, so every batch gets a scoring forward); records each example's
    scoring loss and training loss by id."""

    stage = "post_forward"
    reason = "recorder"

    def __init__(self):
        self.scored: dict[int, float] = {}
        self.trained: dict[int, float] = {}

    def decide(self, batch, losses):
        return Decision(keep=torch.ones(len(batch), dtype=torch.bool))

    def observe(self, batch, losses, *, trained):
        target = self.trained if trained else self.scored
        for i, v in zip(batch.ids.tolist(), losses.tolist()):
            target[int(i)] = float(v)


CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def lm():
    """A tiny Llama from a config and its character tokenizer (same weights every call)."""
    return tiny_model("tiny-llama", seed=0)


def sft_args(out, **over) -> SFTConfig:
    kw = dict(output_dir=str(out), use_cpu=True, report_to=[], save_strategy="no", per_device_train_batch_size=BS,
              max_steps=4, packing=False, padding_free=False, bf16=False, logging_steps=1, max_length=64, seed=0,
              dataloader_num_workers=0, disable_tqdm=True)
    kw.update(over)
    return SFTConfig(**kw)


def text_data() -> datasets.Dataset:
    texts = [f"the cat {i} sat on the mat {'x' * (i % 5)}" for i in range(N)]
    return datasets.Dataset.from_dict({"text": texts, "example_id": list(range(ID0, ID0 + N))})


def prompt_completion_data() -> datasets.Dataset:
    prompts = [f"q: what is {i} plus {i % 7}? a:" for i in range(N)]
    completions = [f" {i + i % 7}{' ok' * (i % 3)}" for i in range(N)]
    return datasets.Dataset.from_dict({"prompt": prompts, "completion": completions,
                                       "example_id": list(range(ID0, ID0 + N))})


def chat_data() -> datasets.Dataset:
    msgs = [[{"role": "user", "content": f"say {i}"}, {"role": "assistant", "content": f"{i} {'y' * (i % 4)}"}]
            for i in range(N)]
    return datasets.Dataset.from_dict({"messages": msgs, "example_id": list(range(ID0, ID0 + N))})


def last_log_with(trainer, key: str) -> dict:
    rows = [r for r in trainer.state.log_history if key in r]
    assert rows, f"{key!r} never logged: {trainer.state.log_history}"
    return rows[-1]


def snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# ---------------------------------------------------------------------- (a) plain text, skipping
@pytest.mark.parametrize("how", ["filters", "method"])
def test_sft_text_random_skip_logs_datadiet_and_trl_metrics(tmp_path, how):
    model, tok = lm()
    kw = {"filters": [RandomSkip(rate=0.5)]} if how == "filters" else {
        "method": "random_skip", "method_params": {"rate": 0.5}}
    trainer = DietSFT(model=model, args=sft_args(tmp_path, max_steps=6), train_dataset=text_data(),
                      processing_class=tok, **kw)
    trainer.train()

    c = trainer.datadiet_engine.counts
    skipped = trainer.datadiet_engine.skipped().get("random_skip", 0)
    assert c.examples_seen == 6 * BS
    assert 0 < skipped < c.examples_seen
    assert c.examples_backpropagated > 0 and c.optimizer_steps > 0
    # every incoming example is either skipped or trained (the run's last step flushes the buffer)
    assert c.examples_backpropagated + skipped == c.examples_seen

    final = last_log_with(trainer, "datadiet/examples_seen")
    assert final["datadiet/examples_seen"] == c.examples_seen
    assert final["datadiet/skipped/random_skip"] == skipped
    assert final["datadiet/examples_backpropagated"] == c.examples_backpropagated
    # TRL's own training metrics are still logged, with sane values
    trl = last_log_with(trainer, "mean_token_accuracy")
    assert 0.0 <= trl["mean_token_accuracy"] <= 1.0
    assert trl["entropy"] > 0
    assert trl["num_tokens"] > 0
    assert torch.isfinite(torch.tensor(last_log_with(trainer, "loss")["loss"]))


def test_sft_chat_data_with_template_trains(tmp_path):
    model, tok = lm()
    tok.chat_template = CHAT_TEMPLATE
    trainer = DietSFT(model=model, args=sft_args(tmp_path), train_dataset=chat_data(), processing_class=tok,
                      method="random_skip", method_params={"rate": 0.5})
    trainer.train()
    final = last_log_with(trainer, "datadiet/examples_seen")
    assert final["datadiet/examples_seen"] == 4 * BS
    assert final["datadiet/skipped/random_skip"] > 0


# ---------------------------------------------------------------------- (b) LoRA
def test_sft_lora_only_lora_parameters_change(tmp_path):
    model, tok = lm()
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = DietSFT(model=model, args=sft_args(tmp_path, max_steps=6), train_dataset=text_data(),
                      processing_class=tok, peft_config=lora, filters=[RandomSkip(rate=0.5)])
    assert trainer.datadiet_task == "causal_lm"  # inferred through the PEFT wrapper
    before = snapshot(trainer.model)
    assert any("lora_" in n for n in before)
    trainer.train()

    after = snapshot(trainer.model)
    assert after.keys() == before.keys()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed, "nothing was trained"
    assert all("lora_" in n for n in changed), sorted(n for n in changed if "lora_" not in n)
    assert {n for n in changed if "lora_B" in n} == {n for n in before if "lora_B" in n}
    assert trainer.datadiet_engine.skipped().get("random_skip", 0) > 0


# ---------------------------------------------------------------------- (c) completion-only loss
def hand_completion_losses(model, tok, data: datasets.Dataset, processed: datasets.Dataset) -> dict[int, tuple]:
    """id -> (mean next-token loss over the completion tokens, over all tokens), one unpadded row at a time.

    The completion tokens are found independently of TRL's labels: every position at or after the
    tokenized prompt's length (the character tokenizer adds no special tokens, so a prompt's ids are
    a prefix of prompt + completion; TRL appends EOS to the completion, which counts as completion).
    """
    prompt_len = {int(i): len(tok(p)["input_ids"]) for i, p in zip(data["example_id"], data["prompt"])}
    out = {}
    was = model.training
    model.eval()
    with torch.no_grad():
        for row in processed:
            i, ids = int(row["example_id"]), torch.tensor(row["input_ids"])
            p = prompt_len[i]
            assert ids[:p].tolist() == tok(data[i - ID0]["prompt"])["input_ids"]
            logits = model(input_ids=ids[None]).logits[0, :-1].float()
            tok_loss = F.cross_entropy(logits, ids[1:], reduction="none")  # position t predicts token t + 1
            completion = torch.arange(1, len(ids)) >= p
            # TRL's labels mark the same tokens
            assert (torch.tensor(row["labels"][1:]) != -100).tolist() == completion.tolist()
            out[i] = (float(tok_loss[completion].mean()), float(tok_loss.mean()))
    model.train(was)
    return out


def _completion_trainer(tmp_path, recorder=None, **kw):
    model, tok = lm()
    data = prompt_completion_data()
    trainer = DietSFT(model=model, args=sft_args(tmp_path, **kw), train_dataset=data, processing_class=tok,
                      filters=[recorder] if recorder is not None else [])
    return trainer, data, tok


def test_sft_completion_only_scoring_loss_counts_completion_tokens(tmp_path):
    """The engine's per-example loss (what post-forward filters decide on) on a batch from TRL's collator."""
    trainer, data, tok = _completion_trainer(tmp_path)
    processed = trainer.train_dataset
    assert "labels" in processed.column_names
    rows = [processed[k] for k in range(0, 2 * BS, 2)]
    batch = trainer.data_collator(rows)  # TRL's collator, wrapped so the ids survive
    assert batch["example_id"].tolist() == [r["example_id"] for r in rows]
    assert (batch["labels"] == -100).any()
    losses = trainer.datadiet_engine.per_example_loss(trainer.model.eval(), batch)
    hand = hand_completion_losses(trainer.model, tok, data, processed.select(range(0, 2 * BS, 2)))
    for i, got in zip(batch["example_id"].tolist(), losses.tolist()):
        completion_only, all_tokens = hand[i]
        assert got == pytest.approx(completion_only, rel=1e-5, abs=1e-6)
        assert abs(completion_only - all_tokens) > 1e-3  # the check can tell the two apart


def test_sft_completion_only_training_loss_counts_completion_tokens(tmp_path):
    """The losses filters see from the scoring and the training forward are completion-only per-example losses."""
    rec = Recorder()
    # learning_rate=0: the parameters never change, so every recorded loss is one of the initial model
    trainer, data, tok = _completion_trainer(tmp_path, rec, learning_rate=0.0, max_steps=3)
    initial = snapshot(trainer.model)
    trainer.train()
    assert all(torch.equal(initial[n], p) for n, p in trainer.model.named_parameters())
    assert len(rec.trained) == 3 * BS and rec.scored.keys() == rec.trained.keys()
    processed = trainer.train_dataset
    hand = hand_completion_losses(trainer.model, tok, data, processed)
    for i, got in rec.trained.items():
        assert got == pytest.approx(hand[i][0], rel=1e-4, abs=1e-5), i
        assert rec.scored[i] == pytest.approx(hand[i][0], rel=1e-4, abs=1e-5), i


# ---------------------------------------------------------------------- (d) keep-everything equivalence
@pytest.mark.parametrize("accum", [1, 2])
def test_sft_keep_everything_matches_plain_sft_trainer(tmp_path, accum):
    kw = dict(max_steps=3, gradient_accumulation_steps=accum, learning_rate=1e-2)
    (m_plain, tok_plain), (m_diet, tok_diet) = lm(), lm()
    assert all(torch.equal(a, b) for a, b in zip(m_plain.parameters(), m_diet.parameters()))
    plain = SFTTrainer(model=m_plain, args=sft_args(tmp_path / "plain", **kw), train_dataset=text_data(),
                       processing_class=tok_plain)
    diet = DietSFT(model=m_diet, args=sft_args(tmp_path / "diet", **kw), train_dataset=text_data(),
                   processing_class=tok_diet)
    plain.train()
    diet.train()

    for (n, a), (_, b) in zip(m_plain.named_parameters(), m_diet.named_parameters()):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6, msg=lambda m, n=n: f"{n}: {m}")
    c = diet.datadiet_engine.counts
    assert c.examples_seen == c.examples_backpropagated == 3 * accum * BS
    assert c.optimizer_steps == 3 and not diet.datadiet_engine.skipped()
    # the logged training loss and TRL's metrics agree too
    for key in ("loss", "mean_token_accuracy", "num_tokens"):
        assert last_log_with(diet, key)[key] == pytest.approx(last_log_with(plain, key)[key], rel=1e-5), key


# ---------------------------------------------------------------------- (e) packing refused
# (TRL itself refuses padding_free without packing while max_length is set)
@pytest.mark.parametrize("setting", [{"packing": True}, {"padding_free": True, "max_length": None}])
def test_sft_packing_and_padding_free_are_refused(tmp_path, setting):
    model, tok = lm()
    with pytest.raises(DataDietError, match=r"packing.*padding_free=False"):
        DietSFT(model=model, args=sft_args(tmp_path, **setting), train_dataset=text_data(), processing_class=tok,
                filters=[RandomSkip(rate=0.5)])
