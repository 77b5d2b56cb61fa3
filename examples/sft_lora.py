"""TRL ``SFTTrainer`` + a LoRA adapter, with Selective Backprop (Jiang et al. 2019) skipping easy examples.

The mixin goes in front of ``SFTTrainer``; TRL keeps its own data preparation, collator, LoRA
wrapping, completion-only loss and metrics. Selective Backprop forwards each incoming batch once
without grad and backpropagates only the examples whose (completion-only) loss is high compared
with the recent ones, so roughly half the backward passes are saved.

    python examples/sft_lora.py --tiny     # a tiny random Llama on built-in prompt/completion data, seconds
    torchrun --nproc-per-node 2 examples/sft_lora.py --tiny   # the same on 2 processes (DDP, gloo on a CPU)
    python examples/sft_lora.py            # SmolLM2-135M on Rotten Tomatoes as prompt/completion (offline assets)
"""

from __future__ import annotations

import argparse
import tempfile

import datasets
from peft import LoraConfig
from trl import SFTConfig, SFTTrainer

from datadiet.data import load_dataset
from datadiet.integrations.hf import DataDietMixin
from datadiet.models import load_model


class DietSFT(DataDietMixin, SFTTrainer):
    pass


def tiny_data(n: int = 64) -> datasets.Dataset:
    """Prompt/completion pairs with a stable ``example_id`` (ids start at 1000: they are not positions)."""
    return datasets.Dataset.from_dict({
        "prompt": [f"q: what is {i} plus {i % 7}? a:" for i in range(n)],
        "completion": [f" {i + i % 7}." for i in range(n)],
        "example_id": list(range(1000, 1000 + n)),
    })


def real_data(max_train: int) -> datasets.Dataset:
    """Rotten Tomatoes snippets as prompt/completion: the completion is the label's name."""
    ds = load_dataset("rotten_tomatoes", max_train=max_train)
    names = ds.label_names
    return datasets.Dataset.from_dict({
        "prompt": [f"Review: {t}\nSentiment:" for t in ds.train.texts],
        "completion": [f" {names[int(y)]}" for y in ds.train.labels],
        "example_id": [int(i) for i in ds.train.ids],  # datadiet's stable ids
    })


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny random model and built-in data (fast)")
    p.add_argument("--max-train", type=int, default=1000, help="training examples (real data only)")
    p.add_argument("--out", default=None, help="the Trainer's output_dir (default: a temporary folder)")
    a = p.parse_args(argv)

    if a.tiny:
        lm = load_model("tiny-llama", task="causal_lm")  # built from a config
        train = tiny_data()
        # a short run: shorter loss history and warm-up than the defaults (1024, 128)
        params = {"beta": 1.0, "history": 64, "warmup": 16}
        lr, epochs, max_length = 1e-2, 2, 64
    else:
        lm = load_model("smollm2-135m", task="causal_lm")
        train = real_data(a.max_train)
        params = {"beta": 1.0}
        lr, epochs, max_length = 2e-4, 1, 128

    args = SFTConfig(output_dir=a.out or tempfile.mkdtemp(prefix="datadiet-sft-"), use_cpu=True, report_to=[],
                     save_strategy="no", per_device_train_batch_size=8, num_train_epochs=epochs, learning_rate=lr,
                     logging_steps=2, max_length=max_length, packing=False, padding_free=False, bf16=False,
                     disable_tqdm=True, seed=0)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = DietSFT(model=lm.model, args=args, train_dataset=train, processing_class=lm.tokenizer,
                      peft_config=lora, method="selective_backprop", method_params=params)
    out = trainer.train()
    if trainer.is_world_process_zero():  # several processes (torchrun): rank 0 reports
        print(f"train_loss: {out.training_loss:.4f}")
        for k, v in trainer.datadiet_logs().items():  # every rank's counts, as logged
            print(f"{k}: {v:g}")


if __name__ == "__main__":
    main()
