"""IGF: how well can a secondary learner predict information gain? (issue 17, the learner table)

On the `igf_oracle` suite's pool (SmolLM2-135M, Austen, 32-token contexts, 1,000 training contexts,
objective set of one 32-token window from each of 100 training chapters), the first-order IG of every
context is the oracle (measured once by the suite and read from the pair cache; measured here if it
is missing). Each learner is trained on part of the pool's (context, IG z-score) pairs and judged on
contexts from documents it never saw: 5 folds split by document (the contexts the objective windows
were cut from are left out, as in the oracle filter), an inner 10% of the training documents for
early stopping / the ridge penalty. Per learner: Pearson and Spearman correlation with the oracle,
top-decile precision (the share of the held-out top 10% by prediction that are in the true top 10%;
chance 0.10), trainable parameters and seconds per fit; for the ridge learners (and the conv ones
with --conv-curve) also with 25% and 50% of the pairs.

    .venv/bin/python benchmarks/igf_learners.py --out benchmarks/results/igf_learners.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def ranks(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x, kind="stable"), kind="stable").astype(np.float64)


def scores(pred: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Pearson, Spearman and top-decile precision of ``pred`` against the oracle ``y``."""
    k = max(1, int(round(0.1 * len(y))))
    top_true = set(np.argsort(-y, kind="stable")[:k].tolist())
    top_pred = np.argsort(-pred, kind="stable")[:k]
    ok = pred.std() > 0
    return {"pearson": float(np.corrcoef(pred, y)[0, 1]) if ok else 0.0,
            "spearman": float(np.corrcoef(ranks(pred), ranks(y))[0, 1]) if ok else 0.0,
            "top_decile_precision": float(np.mean([i in top_true for i in top_pred.tolist()]))}


def doc_folds(docs: np.ndarray, n_folds: int, seed: int) -> list[np.ndarray]:
    """Positions of each fold; every document in exactly one fold."""
    u = np.random.default_rng(seed).permutation(np.unique(docs))
    return [np.flatnonzero(np.isin(docs, part)) for part in np.array_split(u, n_folds)]


def inner_split(pos: np.ndarray, docs: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    u = np.unique(docs[pos])
    val_docs = np.random.default_rng(seed).choice(u, size=max(1, int(round(0.1 * len(u)))), replace=False)
    is_val = np.isin(docs[pos], val_docs)
    return pos[~is_val], pos[is_val]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-contexts", type=int, default=1000)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--skip-conv", action="store_true", help="only the ridge learners (quick check)")
    ap.add_argument("--conv-curve", action="store_true", help="also 25%% and 50%% of the pairs for the conv learners")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from datadiet.config import RunConfig
    from datadiet.methods.igf import pairs as P
    from datadiet.methods.igf.learner import SecondaryLearner, fit_ridge, pool_hidden_states, train_learner
    from datadiet.methods.igf.method import IGF
    from datadiet.runner import prepare

    cfg = RunConfig.from_dict({"model": {"name": args.model},
                               "data": {"name": "austen", "context_length": 32, "max_contexts": args.max_contexts,
                                        "max_test": 200},
                               "train": {"threads": args.threads, "bf16": False}})
    _ds, lm, train, _test, _collator, _ = prepare(cfg)
    model = lm.model.eval()
    tokens, docs = np.asarray(train.input_ids), np.asarray(train.doc_ids)
    oracle = IGF(predictor="oracle", ig_estimate="first_order")
    t0 = time.perf_counter()
    _ids, z, oinfo, ocost, reused = oracle.pool_scores(model=model, dataset=train, model_name=args.model, seed=0)
    use = np.flatnonzero(np.isfinite(z))  # the objective windows' source contexts are left out
    print(f"oracle IG: {len(z)} contexts ({'cached' if reused else 'measured'}, {ocost:.0f}s when measured)", flush=True)

    # the LM's own view of each context, for the ridge learners: mean-pooled last hidden state and its loss
    t0 = time.perf_counter()
    hidden = pool_hidden_states(model, tokens)
    hidden_s = time.perf_counter() - t0
    losses = []
    with torch.no_grad():
        for s in range(0, len(tokens), 64):
            ids = torch.as_tensor(tokens[s : s + 64])
            logp = torch.log_softmax(model(input_ids=ids).logits[:, :-1].float(), -1)
            losses.append(-logp.gather(-1, ids[:, 1:, None]).squeeze(-1).mean(1).numpy())
    loss = np.concatenate(losses)
    print(f"hidden states of {len(tokens)} contexts: {hidden_s:.1f}s", flush=True)

    y_all = z
    folds = doc_folds(docs[use], args.folds, seed=0)
    learners = {
        "loss_only_linear": ("ridge", lambda p: loss[p, None]),
        "hidden_ridge": ("ridge", lambda p: hidden[p]),
        "hidden_and_loss_ridge": ("ridge", lambda p: np.concatenate([hidden[p], loss[p, None]], 1)),
    }
    if not args.skip_conv:
        learners.update({
            "reference (lr 1e-5, batch 128)": ("conv", dict(lr=1e-5, batch_size=128, freeze_embeddings=False)),
            "reference, CPU suite (lr 1e-3, batch 32)": ("conv", dict(lr=1e-3, batch_size=32, freeze_embeddings=False)),
            "frozen embeddings (lr 1e-3, batch 32)": ("conv", dict(lr=1e-3, batch_size=32, freeze_embeddings=True)),
        })
    rows = []
    for name, (kind, spec) in learners.items():
        for share in ((0.25, 0.5, 1.0) if kind == "ridge" or args.conv_curve else (1.0,)):
            preds = np.zeros(len(use))
            fit_s, params = [], None
            for k, held in enumerate(folds):
                tr_all = np.concatenate([f for j, f in enumerate(folds) if j != k])
                rng = np.random.default_rng(100 + k)
                tr_all = np.sort(rng.permutation(tr_all)[: max(8, int(round(share * len(tr_all))))])
                tr, va = inner_split(tr_all, docs[use], seed=k)
                ptr, pva, pte = use[tr], use[va], use[held]
                t1 = time.perf_counter()
                if kind == "ridge":
                    w, b, _alpha = fit_ridge(spec(ptr), y_all[ptr], spec(pva), y_all[pva])
                    preds[held] = spec(pte) @ w + b
                    params = int(w.size + 1)
                else:
                    q = SecondaryLearner.from_lm(model, seed=k)
                    train_learner(q, tokens[ptr], y_all[ptr], tokens[pva], y_all[pva], epochs=15, seed=k, **spec)
                    preds[held] = q.predict(torch.as_tensor(tokens[pte])).numpy()
                    params = int(sum(p.numel() for p in q.parameters() if p.requires_grad))
                fit_s.append(time.perf_counter() - t1)
            n_train = int(round(share * (len(use) - len(use) / args.folds)))
            row = {"learner": name, "pairs_share": share, "train_pairs_per_fold": n_train,
                   **scores(preds, y_all[use]), "trainable_params": params,
                   "fit_s_median": float(np.median(fit_s))}
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = {"n_contexts": int(len(use)), "n_excluded": int(len(z) - len(use)), "folds": args.folds,
           "oracle": {k: v for k, v in oinfo.items()}, "oracle_cost_s": ocost, "hidden_pass_s": hidden_s,
           "torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows,
           "command": "benchmarks/igf_learners.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()
                                                              if v not in (None, False))}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
