"""IGF: how well does the first-order IG estimate agree with exact IG, and what does each cost?

On the `igf_cpu` suite's data (SmolLM2-135M, Austen, 32-token contexts, objective set of one 32-token
window from each of 100 training chapters), measures exact IG (one fresh-AdamW step, objective
perplexity, restore) and the first-order estimate on the same N contexts, in fp32 like the pairs,
and reports Pearson and Spearman correlations and the seconds per pair of each.

    .venv/bin/python benchmarks/igf_first_order.py --pairs 48 --out benchmarks/results/igf_first_order.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def _ranks(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x)).astype(np.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=48)
    ap.add_argument("--objective-docs", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from datadiet.config import RunConfig
    from datadiet.methods.igf import pairs as P
    from datadiet.runner import prepare

    cfg = RunConfig.from_dict({"model": {"name": "smollm2-135m"},
                               "data": {"name": "austen", "context_length": 32, "max_contexts": 4000, "max_test": 200},
                               "train": {"threads": args.threads, "bf16": True}})
    _ds, lm, train, _test, _collator, _ = prepare(cfg)
    model = lm.model
    tokens, docs = np.asarray(train.input_ids), np.asarray(train.doc_ids)
    obj_docs = P.choose_objective(docs, n_docs=args.objective_docs, seed=0)
    objective = P.objective_windows(tokens, docs, obj_docs, length=32, seed=0)
    tr, va = P.pair_positions(docs, obj_docs, n_pairs=args.pairs, val_fraction=0.1, seed=0)
    ctx = tokens[np.concatenate([tr, va])]
    t0 = time.perf_counter()
    exact, ei = P.collect_ig(model, ctx, objective, estimate="exact", progress=True)
    t_exact = time.perf_counter() - t0
    t0 = time.perf_counter()
    first, fi = P.collect_ig(model, ctx, objective, estimate="first_order", progress=True)
    t_first = time.perf_counter() - t0
    out = {
        "n_pairs": len(ctx), "objective_docs": args.objective_docs, "objective_tokens": int(objective.size),
        "base_objective_ppl": ei["base_objective_ppl"],
        "pearson": float(np.corrcoef(exact, first)[0, 1]),
        "spearman": float(np.corrcoef(_ranks(exact), _ranks(first))[0, 1]),
        "exact": {"mean": float(exact.mean()), "std": float(exact.std()), "s_per_pair": t_exact / len(ctx),
                  "total_s": t_exact},
        "first_order": {"mean": float(first.mean()), "std": float(first.std()), "s_per_pair": t_first / len(ctx),
                        "total_s": t_first},
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "exact_values": exact.tolist(), "first_order_values": first.tolist(),
    }
    print(json.dumps({k: v for k, v in out.items() if not k.endswith("_values")}, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
