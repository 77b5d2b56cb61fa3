"""Worker of tests/test_dist_offline.py: the offline selections of data_diet and ingenious on several ranks.

Run by torchrun (``tests/dist.py``: CPU, gloo) as ``_dist_offline_worker.py OUT``; writes
``OUT/rank{r}.json``. The test imports :func:`compute` and calls it with ``ranks=None`` to get the
one-process reference of exactly the same computation.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

N = 64  # examples of the planted set
RUNS = 3  # data_diet scoring runs: 2 on rank 0, 1 on rank 1 (round-robin)


def planted(n: int = N):
    """The planted classification set of ``conftest.tiny_cls`` (ids 100..), tokenized, and its collator."""
    from conftest import planted_texts
    from datadiet.data.collate import Collator, TokenizedSplit
    from datadiet.data.types import TextSplit
    from datadiet.models.tiny import char_tokenizer

    texts, labels = planted_texts(n)
    tok = char_tokenizer()
    ds = TokenizedSplit(TextSplit(ids=np.arange(100, 100 + n), texts=texts, labels=labels), tok, max_length=32)
    return ds, Collator(pad_token_id=tok.pad_token_id), tok


def tiny(seed: int) -> torch.nn.Module:
    from datadiet.models.tiny import tiny_model

    return tiny_model("tiny-bert", num_labels=2, seed=seed)[0]


def context(ranks):
    from datadiet.core.method import PlanContext

    ds, col, tok = planted()
    return PlanContext(ids=np.asarray(ds.ids), labels=ds.labels, seed=0, task="classification", batch_size=16,
                       epochs=1, model=tiny(0), tokenizer=tok, model_name="tiny-bert",
                       pad_token_id=tok.pad_token_id or 0, train_dataset=ds, collator=col, build_model=tiny,
                       lr=1e-3, schedule="constant", fused_adamw=False, eval_batch_size=8, max_length=32,
                       ranks=ranks)


def compute(ranks) -> dict:
    """Everything the test compares, as JSON-ready lists (``ranks=None``: one process)."""
    import torch.utils.data

    from datadiet.methods.data_diet.dynamic import el2n_score_fn
    from datadiet.methods.data_diet.method import DataDiet
    from datadiet.methods.ingenious.method import Ingenious

    ctx = context(ranks)
    out: dict = {}
    built: list[int] = []  # the scoring runs this rank trained (their seeds)
    ctx.build_model = lambda seed: (built.append(seed), tiny(seed))[1]
    rows = [0]  # examples this rank's model body forwarded

    def count(module, args, kwargs):
        rows[0] += int((args[0] if args else kwargs["input_ids"]).shape[0])

    ctx.model.base_model.register_forward_pre_hook(count, with_kwargs=True)

    # data_diet: RUNS scoring runs of 2 steps each, then again (every run from the cache)
    dd = DataDiet(score_seeds=RUNS, score_steps=2, keep=0.5, cache=True)
    for name in ("data_diet", "data_diet_again"):
        plan = dd.plan(ctx)
        res = dd.compute_scores(ctx) if name == "data_diet" else None
        sc = plan.info["scoring"]
        out[name] = {"ids": plan.selection.ids.tolist(), "cached": sc["cached"], "cost_s": sc["cost_s"],
                     "reused_s": sc["reused_s"]}
        out[name]["built_seeds"] = list(built)
        if res is not None:  # (computed after the plan: from the cache, the same numbers)
            out[name].update(scores=res.scores.tolist(), per_seed=res.per_seed.tolist(),
                             run_cost_s=res.info["run_cost_s"])

    # data_diet_dynamic's re-scoring of the pool, on 63 examples (uneven shards: 32 + 31)
    ds63 = torch.utils.data.Subset(ctx.train_dataset, list(range(N - 1)))
    fn = el2n_score_fn(ctx.model, ds63, collator=ctx.collator, batch_size=8, ranks=ranks)
    rows[0] = 0
    out["el2n_63"] = fn().tolist()
    out["el2n_rows"] = rows[0]

    # ingenious: embeddings without a cache (computed), selection 0 (a miss: computed, written by rank 0),
    # the embeddings again (a hit: read on rank 0, broadcast)
    rows[0] = 0
    emb = Ingenious(cache=False).embed(ctx)
    out["embeddings"] = emb.vectors.tolist()
    out["embedded_rows"] = rows[0]
    ing = Ingenious(fraction=0.25, cache=True, seed=1)
    plan = ing.plan(ctx)
    out["ingenious"] = {"ids": plan.selection.ids.tolist(), "cached": plan.info["ingenious"]["embedding"]["cached"]}
    rows[0] = 0
    again = ing.embed(ctx)
    out["embeddings_cached"] = {"rows": rows[0]}
    out["embeddings_cached"].update(vectors=again.vectors.tolist(), cached=again.cached, cost_s=again.cost_s,
                                    first_cost_s=plan.info["ingenious"]["embedding"]["cost_s"])

    # the re-selection filter's recompute (sharded embedding with the current model, then greedy)
    f = Ingenious(fraction=0.25, cache=False, seed=1, reselect_every=2, reselect="recompute").plan(ctx).filters[0]
    g = f._recompute(1)
    out["recompute_gains"] = g.gains.tolist()

    # a scoring run that fails (seed 1: rank 1's) fails every rank, none waits for it at the gather
    def build_or_fail(seed: int) -> torch.nn.Module:
        if seed == 1:
            raise ValueError("no model for seed 1")
        return tiny(seed)

    ctx.build_model = build_or_fail
    try:
        DataDiet(score_seeds=2, score_steps=0, cache=False).plan(ctx)
        out["failure"] = None
    except Exception as e:  # noqa: BLE001 - reported to the test
        out["failure"] = f"{type(e).__name__}: {e}"
    return out


def main() -> None:
    import torch.distributed as dist

    from dist import write_and_leave

    from datadiet.core.distributed import current

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    ranks = current()
    assert ranks is not None and ranks.world_size == 2
    write_and_leave(Path(sys.argv[1]), ranks.rank, compute(ranks))


if __name__ == "__main__":
    main()
