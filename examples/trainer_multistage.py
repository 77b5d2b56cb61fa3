"""Multistage data filtering (Ouyang et al. 2023) inside a plain Hugging Face ``Trainer``.

The only change to a Trainer script is the mixin and ``method="multistage"``: after a warm-up on
all data, examples whose loss is already low are skipped (first by a loss threshold after their
forward, then by a meta predictor before it), and every run logs exactly what was skipped.

    python examples/trainer_multistage.py --tiny     # a tiny random BERT on planted data, seconds
    torchrun --nproc-per-node 2 examples/trainer_multistage.py --tiny   # the same on 2 processes (DDP, gloo on a CPU)
    python examples/trainer_multistage.py            # all-MiniLM-L6-v2 on Rotten Tomatoes (offline assets)
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
from transformers import Trainer, TrainingArguments

from datadiet.data import Collator, TextSplit, TokenizedSplit, load_dataset
from datadiet.integrations.hf import DataDietMixin
from datadiet.models import load_model


class DietTrainer(DataDietMixin, Trainer):
    pass


def tiny_data(n: int = 128) -> tuple[TextSplit, int]:
    """Planted sentiment: 'good ...' is label 1, 'bad ...' label 0; ids start at 1000 (ids are not positions)."""
    rng = np.random.default_rng(0)
    words = ["the", "movie", "plot", "actor", "scene", "film", "story", "music", "cast", "ending"]
    texts = [f"{'good' if i % 2 else 'bad'} {' '.join(rng.choice(words, size=rng.integers(2, 8)))} {i}"
             for i in range(n)]
    return TextSplit(ids=np.arange(1000, 1000 + n), texts=texts, labels=np.arange(n) % 2), 2


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny random model and built-in planted data (fast)")
    p.add_argument("--max-train", type=int, default=2000, help="training examples (real data only)")
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--out", default=None, help="the Trainer's output_dir (default: a temporary folder)")
    a = p.parse_args(argv)

    if a.tiny:
        train, num_labels = tiny_data()
        lm = load_model("tiny-bert", task="classification", num_labels=num_labels)  # built from a config
        # a tiny run is short, so shorten the method's warm-up and windows to see it skip
        params = {"warmup_fraction": 0.2, "window": 16, "switch_window": 2, "meta_loss_threshold": 5.0}
        epochs, lr = a.epochs or 3, 1e-3
    else:
        ds = load_dataset("rotten_tomatoes", max_train=a.max_train)
        train, num_labels = ds.train, ds.num_labels
        lm = load_model("minilm", task="classification", num_labels=num_labels)
        params = {}  # the method's documented defaults (datadiet methods; docs/methods/)
        epochs, lr = a.epochs or 2, 1e-4

    args = TrainingArguments(a.out or tempfile.mkdtemp(prefix="datadiet-multistage-"), use_cpu=True,
                             per_device_train_batch_size=16, num_train_epochs=epochs, learning_rate=lr,
                             logging_steps=5, save_strategy="no", report_to=[], disable_tqdm=True, seed=0)
    trainer = DietTrainer(model=lm.model, args=args,
                          train_dataset=TokenizedSplit(train, lm.tokenizer, max_length=64),  # keeps example_id
                          data_collator=Collator(pad_token_id=lm.pad_token_id), processing_class=lm.tokenizer,
                          method="multistage", method_params=params)
    out = trainer.train()
    if trainer.is_world_process_zero():  # several processes (torchrun): rank 0 reports
        print(f"train_loss: {out.training_loss:.4f}")
        for k, v in trainer.datadiet_logs().items():  # every rank's counts, as logged
            print(f"{k}: {v:g}")


if __name__ == "__main__":
    main()
