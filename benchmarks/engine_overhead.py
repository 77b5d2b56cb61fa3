"""Engine overhead with keep-everything, against a hand-written loop, measured side by side.

Both loops train MiniLM (real weights, offline) on the same Rotten Tomatoes batches with the same
optimizer (fused AdamW), bf16 autocast and thread count; runs alternate (hand, engine, hand, ...)
so drift and noise hit both, and the medians are compared as a ratio.

    .venv/bin/python benchmarks/engine_overhead.py --batches 40 --repeats 5 --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--out", default=None, help="write the measurements as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from datadiet.data import Collator, TokenizedSplit, load_dataset
    from datadiet.core.engine import StepEngine
    from datadiet.loop import make_optimizer
    from datadiet.models import load_model

    ds = load_dataset("rotten_tomatoes", max_train=args.batches * args.batch_size)
    lm = load_model(args.model, task="classification", num_labels=2)
    train = TokenizedSplit(ds.train, lm.tokenizer, max_length=64)
    coll = Collator(pad_token_id=lm.pad_token_id)
    batches = [coll([train[i] for i in range(s, s + args.batch_size)]) for s in range(0, len(train), args.batch_size)]
    init = {k: v.clone() for k, v in lm.model.state_dict().items()}
    model = lm.model

    def hand() -> float:
        model.load_state_dict(init)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        model.train()
        t0 = time.perf_counter()
        for b in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                               token_type_ids=b["token_type_ids"]).logits
            loss = F.cross_entropy(logits.float(), b["labels"])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    def engine() -> float:
        model.load_state_dict(init)
        opt = make_optimizer(model, lr=1e-4, weight_decay=0.0, fused=True)
        eng = StepEngine(task="classification", batch_size=args.batch_size, autocast_dtype=torch.bfloat16)
        model.train()
        t0 = time.perf_counter()
        for b in batches:
            eng.step(model, opt, b, max_grad_norm=1.0)
        eng.end_epoch(model, opt, max_grad_norm=1.0)
        return time.perf_counter() - t0

    hand(), engine()  # warm-up (allocator, kernels)
    th, te = [], []
    for _ in range(args.repeats):
        th.append(hand())
        te.append(engine())
    mh, me = statistics.median(th), statistics.median(te)
    result = {
        "model": args.model, "batches": len(batches), "batch_size": args.batch_size, "repeats": args.repeats,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "hand_s": th, "engine_s": te, "hand_median_s": mh, "engine_median_s": me,
        "overhead_ratio": me / mh,
        "paired_ratios": [e / h for e, h in zip(te, th)],
    }
    print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items()
                      if not isinstance(v, list)}, indent=1))
    print(f"engine / hand-written loop (median of {args.repeats}): {me / mh:.4f} "
          f"(overhead {100 * (me / mh - 1):+.2f}%); paired ratios median "
          f"{statistics.median(result['paired_ratios']):.4f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
