"""A Ray scoring pass run as its own process, slowed down so that a test can kill it half-way.

``python tests/_ray_child.py WORK_DIR``: runs the pass of :func:`pool` with a kernel that sleeps
after every batch, writing finished shards to WORK_DIR. The test kills this process (and its Ray)
once some shards are there, then reruns the same pass in-process and checks that it resumes.
The kernel is defined here, in ``__main__``, so Ray ships it to the actors by value.
"""

from __future__ import annotations

import sys
import time

import numpy as np

N, BATCH, SHARD = 256, 16, 16
KEY = {"test": "killed ray pass", "v": 1}


def pool():
    """(model, dataset, collator): a tiny BERT and N planted examples, the same in every process."""
    from datadiet.data.collate import Collator, TokenizedSplit
    from datadiet.data.types import TextSplit
    from datadiet.models.tiny import tiny_model

    rng = np.random.default_rng(0)
    words = ["the", "movie", "plot", "actor", "scene", "film", "story", "music", "cast", "ending"]
    texts = [f"{'good' if i % 2 else 'bad'} {' '.join(rng.choice(words, size=rng.integers(2, 12)))} {i}"
             for i in range(N)]
    split = TextSplit(ids=np.arange(1000, 1000 + N), texts=texts, labels=np.arange(N) % 2)
    model, tok = tiny_model("tiny-bert", num_labels=2, seed=0)
    return model, TokenizedSplit(split, tok, max_length=32), Collator(pad_token_id=tok.pad_token_id)


class SlowScorer:
    """ForwardScorer, then a pause: the pass takes long enough to be killed in the middle."""

    def __init__(self, model):
        from datadiet.methods.data_diet.scores import ForwardScorer

        self.inner = ForwardScorer(model)

    def __call__(self, batch):
        out = self.inner(batch)
        time.sleep(0.4)
        return out


if __name__ == "__main__":
    import logging

    import ray

    from datadiet.core.ray_pool import RayEngine, ray_pass

    ray.init(num_cpus=1, include_dashboard=False, logging_level=logging.WARNING)
    model, ds, collator = pool()
    ray_pass(SlowScorer, model, ds, collator=collator, batch_size=BATCH, work_dir=sys.argv[1], key=KEY,
             engine=RayEngine(workers=1, threads=1, shard_rows=SHARD))
    print("finished", flush=True)
