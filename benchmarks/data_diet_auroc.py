"""Planted label noise: do EL2N / GraNd scores rank the flipped examples as the hardest?

Flips 10% of the Rotten Tomatoes training labels (the `data_diet_noise` suite's noisy set: same
config, same split seed, so the same flipped ids), computes the scores averaged over S scoring runs
of one epoch (taken from the score cache when the suite already ran them), and reports the AUROC of
each score for "this example's label was flipped" (1.0: every flipped example outranks every clean
one; 0.5: chance), plus the share of flipped examples among the top 10% scores.

    .venv/bin/python benchmarks/data_diet_auroc.py --scores el2n grand_head \
        --out benchmarks/results/data_diet_auroc.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUROC with average ranks for ties."""
    _, inv, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    r = (ends - (counts - 1) / 2.0)[inv]  # average 1-based rank of each tie group
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((r[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scores", nargs="+", default=["el2n", "grand_head"], choices=["el2n", "grand_head", "grand"])
    ap.add_argument("--seeds", type=int, default=3, help="scoring runs to average (S)")
    ap.add_argument("--noise", type=float, default=0.1)
    ap.add_argument("--max-train", type=int, default=3000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from datadiet.config import RunConfig
    from datadiet.methods.registry import build_method
    from datadiet.runner import plan_context, prepare

    cfg = RunConfig.from_dict({
        "model": {"name": "minilm", "max_length": 64},
        "data": {"name": "rotten_tomatoes", "max_train": args.max_train, "max_test": 2000,
                 "label_noise": args.noise},
        "train": {"epochs": 2, "batch_size": 16, "lr": 1.0e-4, "bf16": True, "fused_adamw": True,
                  "threads": args.threads, "eval_every": 100, "eval_max_examples": 500, "seed": 0},
    })
    ds, lm, train, _test, collator, _ = prepare(cfg)
    ctx = plan_context(cfg, lm, train, collator, task=ds.task)
    flipped = np.isin(np.asarray(train.ids), train.flipped_ids)
    out = {"noise": args.noise, "n_train": len(train), "n_flipped": int(flipped.sum()), "seeds": args.seeds,
           "torch": torch.__version__, "threads": torch.get_num_threads(), "scores": {}}
    for kind in args.scores:
        t0 = time.perf_counter()
        dd = build_method("data_diet", {"score": kind, "score_seeds": args.seeds, "score_epochs": 1.0})
        res = dd.compute_scores(ctx)
        assert np.array_equal(res.ids, np.asarray(train.ids))
        top = np.argsort(-res.scores, kind="stable")[: len(res.scores) // 10]
        per_seed = [auroc(s, flipped) for s in res.per_seed]
        out["scores"][kind] = {
            "auroc_mean_of_seeds": auroc(res.scores, flipped), "auroc_per_single_run": per_seed,
            "flipped_share_in_top10pct": float(flipped[top].mean()), "scoring_cost_s": res.cost_s,
            "cached_runs": list(res.cached), "spent_now_s": time.perf_counter() - t0,
        }
        print(kind, json.dumps(out["scores"][kind]))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
