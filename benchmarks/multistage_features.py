"""What predicts ``loss > tau`` before the forward? The feature study of multistage stage 2 (issue 19, item 3).

One real stage-1 run is recorded, then replayed into one fresh predictor per feature set, so every
feature set sees exactly the same stream of examples, losses and tau values.

1. Record: MiniLM fine-tuned on ``--max-train`` examples of ``--dataset`` for ``--epochs`` epochs
   (float32, batch 16, lr 1e-4, fused AdamW) with ``multistage`` in stage 1 only (the
   ``multistage_d30`` settings, but a switch rule that never passes, so the loss filter runs the
   whole time and every example gets a loss). Every call the engine makes into the meta predictor
   (``decide`` on the incoming batch, ``observe`` with the losses) is recorded with the tau then in
   force.
2. Replay: each feature set is a fresh predictor (the library's own ``MetaPredictor``, with the
   recorded tau) fed the recorded calls in order. As in the method, an example is labelled
   ``loss > tau`` on the first loss reported for it and the prediction is made *before* fitting on
   the batch (held-out, prequential). The embedding probe is an online logistic regression (AdaGrad,
   one step per batch, as the method's ``OnlineLogistic``) on the frozen MiniLM sentence embedding
   of the example (what INGENIOUS computes, mean-pooled, L2-normalised) crossed with the class label
   (the label is known before the forward), plus the label alone.

Skill = the running base-rate predictor's log-loss minus the feature set's (nats; 0 = no better
than knowing how often examples are important), averaged over labelled examples, after the loss
filter's warm-up, per epoch. Also, at the decision threshold (0.3): the share of examples the
predictor would skip and the share of those that were in fact important (the false-skip rate the
guard estimates; random skipping's false-skip rate is the base rate).

    .venv/bin/python benchmarks/multistage_features.py --out benchmarks/results/multistage_features_health.json
    .venv/bin/python benchmarks/multistage_features.py --dataset rotten_tomatoes --max-train 8000 \
        --out benchmarks/results/multistage_features_rt.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

D30 = ["method.name=multistage", "method.params.predictor=logistic", "method.params.ngrams=2",
       "method.params.loss_memory=true", "method.params.decision_threshold=0.3", "method.params.guard=false",
       "method.params.meta_skill_threshold=1000000000.0"]  # a rule that never passes: stage 1 throughout

FEATURE_SETS = {  # label -> MetaPredictor keyword arguments
    # no feature but the bias, fitted online: it follows the important rate as it drifts down during
    # training, so it beats the running (cumulative) base rate by itself; the skill that text or
    # memory adds is a feature set's skill minus this one's
    "logistic, bias only (follows the drifting base rate)": dict(predictor="logistic", _no_text=True),
    "naive Bayes, tokens (the paper)": dict(predictor="naive_bayes"),
    "logistic, tokens": dict(predictor="logistic"),
    "logistic, tokens + bigrams": dict(predictor="logistic", ngrams=2),
    "logistic, length only": dict(predictor="logistic", length_feature=True, _no_text=True),
    "logistic, loss memory only": dict(predictor="logistic", loss_memory=True, _no_text=True),
    "logistic, tokens + bigrams + label-conditioned tokens": dict(predictor="logistic", ngrams=2, label_tokens=True),
    "logistic, tokens + bigrams + length": dict(predictor="logistic", ngrams=2, length_feature=True),
    "logistic, tokens + bigrams + loss memory (multistage_d30)": dict(predictor="logistic", ngrams=2, loss_memory=True),
    "logistic, all of the above": dict(predictor="logistic", ngrams=2, label_tokens=True, length_feature=True,
                                       loss_memory=True),
}
DECISION = 0.3


def record(args, workdir: Path) -> tuple[list, dict]:
    """Run stage 1 once, recording every decide/observe call of the meta predictor."""
    from datadiet.config import load_config
    from datadiet.methods.multistage.meta_predictor import MetaPredictor
    from datadiet.runner import run

    events: list = []
    orig_decide, orig_observe = MetaPredictor.decide, MetaPredictor.observe

    def clone(b):
        return tuple(None if t is None else t.detach().clone() for t in (b.ids, b.input_ids, b.attention_mask, b.labels))

    def decide(self, batch, losses):
        events.append(("d", clone(batch), None, None, self._c["seen"] + len(batch), self._warmed_up()))
        return orig_decide(self, batch, losses)

    def observe(self, batch, losses, *, trained):
        events.append(("o", clone(batch), losses.detach().to(torch.float64).clone(), self._tau(), self._c["seen"],
                       self._warmed_up()))
        return orig_observe(self, batch, losses, trained=trained)

    MetaPredictor.decide, MetaPredictor.observe = decide, observe
    try:
        cfg = load_config(None, [
            "model.name=minilm", "model.max_length=64", f"data.name={args.dataset}", f"data.max_train={args.max_train}",
            f"data.max_test={args.max_test}", f"train.epochs={args.epochs}", "train.batch_size=16", "train.lr=1e-4",
            "train.bf16=false", "train.fused_adamw=true", f"train.seed={args.seed}", f"train.threads={args.threads}",
            f"output_dir={workdir}", "run_name=record", *D30])
        rec = run(cfg)
    finally:
        MetaPredictor.decide, MetaPredictor.observe = orig_decide, orig_observe
    return events, rec


class Tally:
    """Skill, skip share and false-skip rate of one feature set, per epoch, after the warm-up."""

    def __init__(self):
        self.s = {}

    def add(self, epoch: int, ll: np.ndarray, base_ll: np.ndarray, p: np.ndarray, y: np.ndarray) -> None:
        t = self.s.setdefault(epoch, dict(n=0, ll=0.0, base=0.0, skip=0, false_skip=0, important=0))
        t["n"] += len(y)
        t["ll"] += float(ll.sum())
        t["base"] += float(base_ll.sum())
        skip = p < DECISION
        t["skip"] += int(skip.sum())
        t["false_skip"] += int((skip & (y == 1)).sum())
        t["important"] += int(y.sum())

    def summary(self) -> dict:
        out = {}
        for e, t in sorted(self.s.items()):
            n = max(t["n"], 1)
            out[f"epoch{e}"] = dict(labelled=t["n"], important_rate=t["important"] / n, log_loss=t["ll"] / n,
                                    base_rate_log_loss=t["base"] / n, skill=(t["base"] - t["ll"]) / n,
                                    skip_share=t["skip"] / n,
                                    false_skip_rate=(t["false_skip"] / t["skip"]) if t["skip"] else None)
        return out


def base_rate_ll(y: np.ndarray, fitted: int, important: int) -> np.ndarray:
    b = (important + 0.5) / (fitted + 1.0)  # the running, smoothed base rate (as the method measures it)
    return -(y * math.log(b) + (1 - y) * math.log(1 - b))


def epoch_of(seen: int, n_train: int) -> int:
    return 1 + (seen - 1) // n_train


def replay_meta(events, *, vocab: int, n_train: int, kwargs: dict) -> dict:
    from datadiet.core.filter import BatchView
    from datadiet.methods.multistage.meta_predictor import MetaPredictor

    kw = dict(kwargs)
    no_text = kw.pop("_no_text", False)
    tau_now = [None]
    pred = MetaPredictor(threshold=lambda: tau_now[0], vocab_size=vocab, guard=False, meta_skill_threshold=1e9,
                         decision_threshold=DECISION, seed=0, **kw)
    if no_text:  # one-feature-family predictors: the text features are dropped (rows and ids emptied)
        orig = pred._features

        def features(ids, input_ids, attention_mask, **k):
            rows, feats, extra = orig(ids, input_ids, attention_mask, **k)
            return rows[:0], feats[:0], extra
        pred._features = features
    tally = Tally()
    for kind, (ids, x, am, lab), losses, tau, seen, warm in events:
        b = BatchView(ids=ids, input_ids=x, attention_mask=am, labels=lab)
        if kind == "d":
            pred.decide(b, None)
            continue
        if tau is None:
            continue
        tau_now[0] = tau
        before = pred._c["fitted"], pred._c["fitted_important"]
        # the labels and held-out predictions this call will fit on (the first loss of each pending id)
        first = [j for j, i in enumerate(ids.tolist()) if int(i) in pred._pending]
        if first and warm:
            sel = torch.tensor(first)
            y = (losses[sel] > tau).numpy().astype(np.float64)
            rows, feats, extra = pred._features(ids[sel], x[sel], None if am is None else am[sel],
                                                labels=None if lab is None else lab[sel], tau=tau)
            logp = pred.model.predict_log_proba(rows, feats, len(first), extra).numpy()
            ll = np.minimum(-np.where(y == 1, logp[:, 1], logp[:, 0]), 1e9)
            tally.add(epoch_of(seen, n_train), ll, base_rate_ll(y, *before), np.exp(logp[:, 1]), y)
        pred.observe(b, losses, trained=True)
    return tally.summary()


def replay_probe(events, *, emb: dict[int, np.ndarray], n_classes: int, n_train: int, lr: float = 0.1,
                 memory: bool = False) -> dict:
    """Online logistic (AdaGrad, one step per batch) on [embedding x one-hot(label), one-hot(label), 1],
    with ``memory`` also the one-hot of the method's loss-memory bucket (last loss relative to tau)."""
    from datadiet.methods.multistage.meta_predictor import N_MEMORY_FEATURES, memory_bucket

    d = len(next(iter(emb.values())))
    n_mem = N_MEMORY_FEATURES if memory else 0
    w = np.zeros(d * n_classes + n_classes + n_mem + 1)
    last: dict[int, float] = {}
    g2 = np.zeros_like(w)
    pending: set[int] = set()
    fitted = important = 0
    tally = Tally()

    def design(ids, lab, tau):
        X = np.zeros((len(ids), len(w)))
        for r, (i, c) in enumerate(zip(ids, lab)):
            X[r, c * d:(c + 1) * d] = emb[i]
            X[r, d * n_classes + c] = 1.0
        if memory:
            b = memory_bucket(torch.tensor([last.get(i, math.nan) for i in ids], dtype=torch.float64), tau).numpy()
            X[np.arange(len(ids)), d * n_classes + n_classes + b] = 1.0
        X[:, -1] = 1.0
        return X

    for kind, (ids, x, am, lab), losses, tau, seen, warm in events:
        idl = ids.tolist()
        if kind == "d":
            pending.update(int(i) for i in idl)
            continue
        first = [j for j, i in enumerate(idl) if int(i) in pending]
        for j in first:
            pending.discard(int(idl[j]))
        if not first or tau is None:
            continue
        y = (losses[first] > tau).numpy().astype(np.float64)
        fid = [int(idl[j]) for j in first]
        X = design(fid, lab[first].tolist(), tau)
        z = X @ w
        p = 1.0 / (1.0 + np.exp(-z))
        if warm:
            ll = np.logaddexp(0.0, -z) * y + np.logaddexp(0.0, z) * (1 - y)
            tally.add(epoch_of(seen, n_train), ll, base_rate_ll(y, fitted, important), p, y)
        g = X.T @ (p - y) / len(y)
        g2 += g * g
        w -= lr * g / (np.sqrt(g2) + 1e-8)
        fitted += len(y)
        important += int(y.sum())
        if memory:  # after fitting, as in the method: a label never sees its own loss
            last.update(zip(fid, losses[first].tolist()))
    return tally.summary()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--dataset", default="health_tweets")
    ap.add_argument("--max-train", type=int, default=10000)
    ap.add_argument("--max-test", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="minilm", help="the model trained in the recorded run (and the probe's encoder)")
    ap.add_argument("--events", default=None, help="keep the recorded stream in this file (torch.save; reused when it "
                    "exists, so a second replay costs no training)")
    ap.add_argument("--only", default=None, help="replay only the feature sets whose label contains this")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    t0 = time.perf_counter()
    if a.events and Path(a.events).exists():
        saved = torch.load(a.events, weights_only=False)  # our own file, written below
        events, rec, record_s = saved["events"], saved["record"], saved["record_s"]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            events, rec = record(a, Path(tmp))
        record_s = time.perf_counter() - t0
        if a.events:
            torch.save({"events": events, "record": rec, "record_s": record_s}, a.events)
    from datadiet.config import load_config
    from datadiet.methods.ingenious.embeddings import example_embeddings
    from datadiet.models import load_model
    from datadiet.runner import load_data

    cfg = load_config(None, [f"data.name={a.dataset}", f"data.max_train={a.max_train}", f"data.max_test={a.max_test}"])
    split = load_data(cfg).train
    n_classes = int(max(split.labels)) + 1
    vocab = len(load_model(a.model, task="classification", num_labels=n_classes, seed=0).tokenizer)
    results = {}
    for label, kw in FEATURE_SETS.items():
        if a.only and a.only not in label:
            continue
        t1 = time.perf_counter()
        results[label] = replay_meta(events, vocab=vocab, n_train=a.max_train, kwargs=kw)
        results[label]["replay_s"] = time.perf_counter() - t1
        print(label, json.dumps(results[label]), flush=True)
    probes = not a.only or "probe" in a.only
    if probes:
        t1 = time.perf_counter()
        ids = np.asarray(split.ids, dtype=np.int64)
        E = example_embeddings(ids=ids, encoder=a.model, texts=list(split.texts), max_length=64, progress=False)
        embed_s = time.perf_counter() - t1
        emb = {int(i): E.vectors[r] for r, i in enumerate(E.ids.tolist())}
    for label, memory in (("embedding probe: frozen MiniLM sentence embedding x label (online logistic)", False),
                          ("embedding probe + loss memory", True)):
        if not probes or (a.only and a.only not in label):
            continue
        t1 = time.perf_counter()
        results[label] = replay_probe(events, emb=emb, n_classes=n_classes, n_train=a.max_train, memory=memory)
        results[label]["replay_s"] = time.perf_counter() - t1
        results[label]["embedding_s"] = embed_s
        print(label, json.dumps(results[label]), flush=True)
    out = {"started": started, "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
           "machine": platform.processor() or platform.machine(), "torch": torch.__version__, "threads": a.threads,
           "dataset": a.dataset, "max_train": a.max_train, "epochs": a.epochs, "seed": a.seed,
           "decision_threshold": DECISION, "record_s": record_s,
           "recorded_run": {"accuracy": rec["value"], "counts": rec["counts"],
                            "tau": ((rec.get("filters") or {}).get("LossThreshold") or {}).get("tau")},
           "command": "benchmarks/multistage_features.py " + " ".join(
               f"--{k.replace('_', '-')} {v}" for k, v in vars(a).items()),
           "feature_sets": results}
    out_path = Path(a.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if a.only and out_path.exists():  # a partial replay adds its feature sets to the earlier file
        earlier = json.loads(out_path.read_text())
        out["feature_sets"] = {**earlier.get("feature_sets", {}), **results}
        out["replays"] = earlier.get("replays", []) + [{"only": a.only, "finished": out["finished"]}]
    out_path.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
