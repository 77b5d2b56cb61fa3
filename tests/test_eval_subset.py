"""A capped intermediate evaluation spreads its examples over the whole test split."""
import torch

from datadiet.loop import evaluate_model


class _Recording(torch.utils.data.Dataset):
    def __init__(self, labels):
        self.labels = labels
        self.seen = []

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        self.seen.append(i)
        return {"input_ids": torch.tensor([i]), "labels": torch.tensor(self.labels[i])}


class _PredictZero(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, **_):
        logits = torch.zeros(input_ids.shape[0], 2)
        logits[:, 0] = 1.0
        return type("Out", (), {"logits": logits})()


def _collate(items):
    return {"input_ids": torch.stack([x["input_ids"] for x in items]),
            "labels": torch.stack([x["labels"] for x in items])}


def test_capped_evaluation_covers_a_class_ordered_split():
    # Planted: the split is sorted by class, 90 of class 0 then 10 of class 1. A prefix of 20
    # would read accuracy 1.0; 20 evenly spaced examples read the split's true 0.9.
    data = _Recording([0] * 90 + [1] * 10)
    out = evaluate_model(_PredictZero(), data, task="classification", collator=_collate,
                         batch_size=8, num_labels=2, max_examples=20)
    assert sorted(data.seen) == list(range(0, 100, 5))
    assert out["accuracy"] == 0.9


def test_uncapped_evaluation_reads_every_example_once():
    data = _Recording([0] * 7 + [1] * 3)
    out = evaluate_model(_PredictZero(), data, task="classification", collator=_collate,
                         batch_size=4, num_labels=2, max_examples=None)
    assert data.seen == list(range(10))
    assert out["accuracy"] == 0.7
