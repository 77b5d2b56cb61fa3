"""IGF: information gain filtration for causal-LM fine-tuning (Antonello et al., ACL 2021).

Method ``igf``. Mechanism: skip before the forward. Steps (details in ``docs/methods/igf.md``):

1. **Objective set O**: ``objective_docs`` documents of the training pool, one random
   ``objective_length``-token window from each. The test set is already disjoint from the pool by
   document (the loader splits by document), and the IG pairs never use O's documents.
2. **IG pairs**: ``n_pairs`` contexts from the other documents; for each, one fresh-AdamW step
   from the pretrained weights and the objective perplexity drop (:mod:`datadiet.methods.igf.pairs`;
   ``ig_estimate=first_order`` for the cheap gradient-dot-product estimate). IG is normalised to
   z-scores over the pairs. The pairs' documents are split into learner-train and
   learner-validation (disjoint by document).
3. **Secondary learner Q** (:mod:`datadiet.methods.igf.learner`), trained on the pairs; best validation
   MSE checkpoint kept.
4. **Filtered fine-tuning**: :class:`IGFFilter` runs Q on each incoming batch's tokens before any
   LM compute and keeps a context when ``Q(X) >= T``; kept contexts fill full training batches.
   ``threshold_schedule=shifting``: ``T = threshold`` for the first ``switch_step`` optimizer
   steps, then ``threshold_after`` (reference: +1.0 for 10 steps, then -1.0); ``constant``:
   ``T = threshold`` throughout.
   ``threshold_units=ig`` (reference): thresholds are in standard deviations of IG over the pairs
   (the learner's target scale); ``pool`` (ours): in standard deviations of the learner's own
   predictions over the training pool, so ``T = +1`` keeps about the top 16% of contexts however
   tightly the learner's predictions cluster.

Caching: the pairs (``$DATADIET_CACHE/igf_pairs``) and the trained learner
(``$DATADIET_CACHE/igf_learners``) are keyed by the model name, a sha256 of the tokenized training
contexts, the device type, bf16, and every setting that changes them; a second run reuses them and
still counts their original cost (``selection_reused_s``), so records compare methods at full cost.
``learner=PATH`` uses a learner saved with ``datadiet igf`` instead (no pairs are collected).

Saves: nothing per kept context; each skipped context costs one Q forward (a small conv net)
instead of an LM forward + backward. The method's claim is quality at equal optimizer steps
(compare with ``train.max_steps``), not speed: it draws more contexts than it trains on.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..._validate import check_choice, check_float, check_int
from ...errors import ConfigError, DataDietError
from ...core.method import Method, Plan
from ...core.params import Param, float_in, int_at_least, one_of
from ...core.filter import ID_KEY, BatchView, Decision, OnlineFilter
from ...core.cache import fields_fingerprint, key_digest
from .learner import SecondaryLearner, fit_ridge, load_learner, pool_hidden_states, save_learner, train_learner
from .pairs import (ESTIMATES, PairCache, choose_objective, collect_ig, objective_picks, objective_windows,
                    pair_positions, zscore)

log = logging.getLogger(__name__)
SCHEDULES = ("shifting", "constant")
UNITS = ("ig", "pool")
PREDICTORS = ("learner", "hidden_ridge", "oracle", "random")


class IGFFilter(OnlineFilter):
    """Keep a context when the secondary learner's predicted IG is at least the threshold in force.

    The threshold depends on the optimizer step a kept context will land in: kept contexts fill
    training batches of ``batch_size`` in order, so the ``k``-th kept context (from 0) is trained in
    step ``k // batch_size``. With the shifting schedule the first ``switch_step * batch_size`` kept
    contexts pass ``threshold``, later ones ``threshold_after``. Q runs on the raw token ids only.
    """

    stage = "pre_forward"
    reason = "igf"

    def __init__(self, learner: SecondaryLearner | None, *, batch_size: int, schedule: str = "shifting",
                 threshold: float = 1.0, threshold_after: float = -1.0, switch_step: int = 10,
                 center: float = 0.0, scale: float = 1.0,
                 table: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        if (learner is None) == (table is None):
            raise ValueError("IGFFilter needs exactly one of a learner or a table of (ids, scores)")
        self.learner = learner.eval() if learner is not None else None
        self._table = None
        if table is not None:  # scores known per example id (oracle IG, random control): a lookup, no network
            tids, tvals = (np.asarray(a) for a in table)
            order = np.argsort(tids, kind="stable")
            self._table = (tids[order].astype(np.int64), np.asarray(tvals, dtype=np.float64)[order])
        self.center = float(center)
        self.scale = check_float("scale", scale, min=0.0, min_open=True)
        for p in (self.learner.parameters() if self.learner is not None else ()):
            p.requires_grad_(False)
        self.batch_size = check_int("batch_size", batch_size, min=1)
        self.schedule = check_choice("threshold_schedule", schedule, SCHEDULES)
        self.threshold = float(threshold)
        self.threshold_after = float(threshold_after)
        self.switch_step = check_int("switch_step", switch_step, min=0)
        self.seen = 0
        self.kept = 0
        self.seen_at_switch: int | None = None
        self.pred_sum = 0.0
        self.n_finite = 0  # contexts with a finite score (a table's never-kept contexts score -inf)
        self.q_s = 0.0

    def threshold_for(self, kept_index: int) -> float:
        """The threshold for the ``kept_index``-th context that would be kept (0-based)."""
        if self.schedule == "constant" or kept_index // self.batch_size >= self.switch_step:
            return self.threshold_after if self.schedule == "shifting" else self.threshold
        return self.threshold

    def decide(self, batch: BatchView, losses: torch.Tensor | None) -> Decision:
        t0 = time.perf_counter()
        if self._table is not None:
            ids = batch.ids.cpu().numpy().astype(np.int64)
            tids, tvals = self._table
            pos = np.clip(np.searchsorted(tids, ids), 0, len(tids) - 1)
            if not np.array_equal(tids[pos], ids):
                missing = ids[tids[pos] != ids][:5].tolist()
                raise DataDietError(f"igf's score table has no entry for example ids {missing}: the table was built "
                                    "for another training pool; plan the method on the pool it trains on")
            pred = (torch.as_tensor(tvals[pos]) - self.center) / self.scale
        else:
            pred = (self.learner.predict(batch.input_ids) - self.center) / self.scale
        self.q_s += time.perf_counter() - t0
        keep = torch.zeros(len(batch), dtype=torch.bool)
        for i, p in enumerate(pred.tolist()):
            self.seen += 1
            if math.isfinite(p):
                self.pred_sum += p
                self.n_finite += 1
            if p >= self.threshold_for(self.kept):
                keep[i] = True
                self.kept += 1
                if self.schedule == "shifting" and self.kept == self.switch_step * self.batch_size:
                    self.seen_at_switch = self.seen
        return Decision(keep=keep)

    def telemetry(self) -> dict[str, Any]:
        return {"schedule": self.schedule, "threshold": self.threshold, "threshold_after": self.threshold_after,
                "switch_step": self.switch_step, "center": self.center, "scale": self.scale, "seen": self.seen, "kept": self.kept,
                "keep_rate": self.kept / self.seen if self.seen else None,
                "seen_at_switch": self.seen_at_switch,
                "keep_rate_before_switch": (self.switch_step * self.batch_size / self.seen_at_switch
                                            if self.seen_at_switch else None),
                "mean_prediction": self.pred_sum / self.n_finite if self.n_finite else None,
                "never_kept_seen": self.seen - self.n_finite, "learner_s": self.q_s}

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "kept": self.kept, "seen_at_switch": self.seen_at_switch, "pred_sum": self.pred_sum,
                "n_finite": self.n_finite}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen, self.kept = int(state["seen"]), int(state["kept"])
        self.seen_at_switch = state["seen_at_switch"]
        self.pred_sum = float(state["pred_sum"])
        self.n_finite = int(state.get("n_finite", self.seen))


# --------------------------------------------------------------------------- learner preparation
@dataclass
class PreparedLearner:
    learner: SecondaryLearner
    meta: dict[str, Any]
    cost_s: float  # what pairs + training cost when they were computed
    reused_s: float  # the part of cost_s paid earlier (cache or learner file)


def _pool_arrays(dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(tokens [n, T], ids [n], doc_ids [n])`` of a causal-LM context pool (an LMContexts, or a dataset of feature dicts)."""
    if hasattr(dataset, "input_ids") and hasattr(dataset, "doc_ids"):
        return np.asarray(dataset.input_ids), np.asarray(dataset.ids), np.asarray(dataset.doc_ids)
    rows = [dataset[i] for i in range(len(dataset))] if hasattr(dataset, "__getitem__") else []
    if rows and isinstance(rows[0], dict) and "input_ids" in rows[0] and ID_KEY in rows[0]:
        # a user's dataset of feature dicts (e.g. a datasets.Dataset under the Trainer): contexts of one length
        lengths = {len(r["input_ids"]) for r in rows}
        if len(lengths) != 1:
            raise DataDietError(f"igf needs fixed-length training contexts, but these have {len(lengths)} different "
                                "lengths; cut the text into equal-length token windows (e.g. datadiet.data.lm_contexts)")
        docs = [int(r.get("doc_id", r[ID_KEY])) for r in rows]
        return (np.asarray([list(r["input_ids"]) for r in rows], dtype=np.int64),
                np.asarray([int(r[ID_KEY]) for r in rows], dtype=np.int64), np.asarray(docs, dtype=np.int64))
    raise DataDietError("igf needs causal-LM training contexts (fixed-length token windows with an 'example_id' and, "
                        "ideally, a 'doc_id' per window); use a causal-LM dataset such as 'austen' with a causal LM, or "
                        "give the Trainer such a dataset")


def _check_learner(name: str, v: Any) -> str | None:
    """``None`` or the path of an existing learner file."""
    if v is None:
        return None
    if not isinstance(v, str) or not v.strip():
        raise ConfigError(f"{name} must be the path of a learner file (from `datadiet igf`), got {v!r}")
    if not Path(v).exists():
        raise ConfigError(f"{name} file {v!r} does not exist; write one with `datadiet igf -c CONFIG --out "
                          "FILE`, or leave learner unset to train it during the run")
    return v


class IGF(Method):
    """Information gain filtration: a learned pre-forward filter for causal-LM fine-tuning.

    Defaults follow the reference (Antonello et al. 2021; ``docs/methods/igf.md``): shifting
    threshold +1.0 for 10 steps then -1.0; one 32-token window from each of 100 objective
    documents; pair step AdamW lr 5e-5, clip 3.0; learner Adam lr 1e-5, batch 128, 15 epochs.
    """

    name = "igf"
    mechanism = "skip_pre_forward"
    saves = "LM forward + backward of every skipped context (each costs one secondary-learner forward); " \
            "the claim is quality at equal optimizer steps"

    threshold_schedule = Param("shifting", one_of(*SCHEDULES), "'shifting' (threshold, then threshold_after from "
                               "switch_step on) or 'constant' (threshold throughout)")
    threshold = Param(1.0, float_in(), "the threshold T: keep a context when Q(X) >= T (reference: +1.0)")
    threshold_after = Param(-1.0, float_in(), "the shifting schedule's threshold from switch_step on (reference: -1.0)")
    switch_step = Param(10, int_at_least(0), "optimizer steps at threshold before threshold_after (reference: 10)")
    objective_docs = Param(100, int_at_least(1), "documents of the objective set, one window from each (reference: 100)")
    objective_length = Param(32, int_at_least(2), "tokens of each objective window (reference: 32)")
    n_pairs = Param(1000, int_at_least(4), "IG pairs (context, objective perplexity drop) the learner trains on")
    ig_estimate = Param("exact", one_of(*ESTIMATES), "'exact' (one AdamW step per pair) or 'first_order' (the "
                        "gradient-dot-product estimate)")
    pair_lr = Param(5e-5, float_in(0.0, min_open=True), "AdamW lr of the pair step (reference: 5e-5)")
    pair_clip = Param(3.0, float_in(0.0), "gradient clip of the pair step (reference: 3.0; 0: none)")
    pair_seed = Param(0, int_at_least(0), "seed of the objective set, the pairs and the learner")
    val_fraction = Param(0.1, float_in(0.0, 1.0, max_open=True), "share of the pairs' documents for learner validation")
    learner_epochs = Param(15, int_at_least(1), "epochs of secondary-learner training (reference: 15)")
    learner_lr = Param(1e-5, float_in(0.0, min_open=True), "Adam lr of the secondary learner (reference: 1e-5)")
    learner_batch_size = Param(128, int_at_least(1), "batch size of secondary-learner training (reference: 128)")
    learner = Param(None, _check_learner, "a learner file from `datadiet igf`; None: train it during the run")
    cache = Param(True, lambda name, v: bool(v), "reuse the pairs and the learner from the on-disk cache")
    threshold_units = Param("ig", one_of(*UNITS), "'ig' (reference: standard deviations of IG over the pairs) or "
                            "'pool' (ours: of the learner's predictions over the training pool)")
    predictor = Param("learner", one_of(*PREDICTORS), "what scores a context: 'learner' (the reference secondary "
                      "learner on the raw tokens); 'hidden_ridge' (ours: ridge regression from the LM's mean-pooled "
                      "last hidden state, one no-grad pass over the pool); diagnostics (ours): 'oracle' (the measured "
                      "IG of every pool context, one pair's cost per context) or 'random' (a seeded random score: "
                      "the matched random control)")

    # the settings that change the pairs / the learner (cache keys)
    def _pair_settings(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("objective_docs", "objective_length", "n_pairs", "ig_estimate", "pair_lr",
                                              "pair_clip", "pair_seed", "val_fraction")}

    def _pool_ig_key(self, model_name: str, dataset, device_type: str) -> dict[str, Any]:
        """Cache key of the IG of every pool context (predictor=oracle); the learner's pairs reuse it when present."""
        return {"model": model_name, "data": fields_fingerprint(dataset, (ID_KEY, "input_ids")), "device": device_type,
                "oracle": 1, **{k: getattr(self, k) for k in ("objective_docs", "objective_length", "ig_estimate",
                                                              "pair_lr", "pair_clip", "pair_seed")}}

    def _pairs(self, *, model: torch.nn.Module, dataset, model_name: str, progress: bool = False):
        """``(objective_docs, train_positions, val_positions, ig, cost_s, reused_s, base_ppl)`` of the IG pairs.

        From the pair cache, from the whole pool's IG (``predictor=oracle``) when that is cached, or measured.
        IG pairs are always measured in fp32: under bf16 autocast the weights are rounded to 8 mantissa bits
        for every forward, which erases most of a 5e-5 step (``bf16`` only shapes the fine-tuning itself).
        """
        tokens, ids, docs = _pool_arrays(dataset)
        device = model.get_input_embeddings().weight.device
        base_key = {"model": model_name, "data": fields_fingerprint(dataset, (ID_KEY, "input_ids")),
                    "device": device.type, **self._pair_settings()}
        obj_docs = choose_objective(docs, n_docs=self.objective_docs, seed=self.pair_seed)
        objective = objective_windows(tokens, docs, obj_docs, length=self.objective_length, seed=self.pair_seed)
        tr_pos, va_pos = pair_positions(docs, obj_docs, n_pairs=self.n_pairs, val_fraction=self.val_fraction,
                                        seed=self.pair_seed)
        all_pos = np.concatenate([tr_pos, va_pos])
        pcache = PairCache() if self.cache else None
        hit = pcache.get(base_key, ids[all_pos]) if pcache is not None else None
        if hit is None and pcache is not None:  # the whole pool's IG (predictor=oracle) holds these pairs' IG
            whole = pcache.get(self._pool_ig_key(model_name, dataset, device.type), ids)
            if whole is not None:
                hit = (whole[0][all_pos], whole[1] * len(all_pos) / max(len(ids), 1))
        if hit is not None:
            ig, pairs_s = hit
            log.info("IGF pairs from cache (%d, cost %.1fs when measured)", len(ig), pairs_s)
            return obj_docs, tr_pos, va_pos, ig, pairs_s, pairs_s, None
        ig, info = collect_ig(model, tokens[all_pos], objective, estimate=self.ig_estimate, lr=self.pair_lr,
                              clip=self.pair_clip or None, autocast_dtype=None, progress=progress)
        if pcache is not None:
            pcache.put(base_key, ids[all_pos], ig, info["seconds"])
        return obj_docs, tr_pos, va_pos, ig, info["seconds"], 0.0, info["base_objective_ppl"]

    def _learner_settings(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("learner_epochs", "learner_lr", "learner_batch_size")}

    def prepare_learner(self, *, model: torch.nn.Module, dataset, model_name: str, bf16: bool,
                        progress: bool = False) -> PreparedLearner:
        """The secondary learner for this pool: from ``learner``, from the cache, or collected and trained now."""
        emb = model.get_input_embeddings().weight
        if self.learner is not None:
            q, meta = load_learner(self.learner)
            if q.arch.vocab_size != emb.shape[0]:
                raise DataDietError(
                    f"IGF learner {self.learner!r} was trained for a vocabulary of {q.arch.vocab_size} tokens "
                    f"(model {meta.get('model')!r}), but this model has {emb.shape[0]}; use a learner trained "
                    "with this model's tokenizer")
            cost = float(meta.get("cost_s", 0.0))
            return PreparedLearner(q.to(emb.device), meta, cost, cost)
        tokens, _ids, _docs = _pool_arrays(dataset)
        device = emb.device
        base_key = {"model": model_name, "data": fields_fingerprint(dataset, (ID_KEY, "input_ids")),
                    "device": device.type, **self._pair_settings()}
        lkey = {**base_key, **self._learner_settings()}
        lpath = None
        if self.cache:
            from ...core.files import cache_dir

            lpath = cache_dir("igf_learners") / f"{key_digest(lkey, version=1)}.pt"
            if lpath.exists():
                try:
                    q, meta = load_learner(lpath)
                    log.info("IGF learner from cache %s (cost %.1fs when trained)", lpath, meta.get("cost_s", 0.0))
                    cost = float(meta.get("cost_s", 0.0))
                    meta["cache_path"] = str(lpath)
                    return PreparedLearner(q.to(device), meta, cost, cost)
                except DataDietError as e:
                    log.warning("ignoring damaged IGF learner cache entry %s (%s)", lpath, e)
        # 1-2: objective set and pairs (cached separately: a new learner setting reuses the pairs)
        obj_docs, tr_pos, va_pos, ig, pairs_s, pairs_reused, base_ppl = self._pairs(
            model=model, dataset=dataset, model_name=model_name, progress=progress)
        z, mean, std = zscore(ig)
        n_tr = len(tr_pos)
        # 3: the learner
        q = SecondaryLearner.from_lm(model, seed=self.pair_seed).to(device)
        fit = train_learner(q, tokens[tr_pos], z[:n_tr], tokens[va_pos], z[n_tr:], epochs=self.learner_epochs,
                            lr=self.learner_lr, batch_size=self.learner_batch_size, seed=self.pair_seed,
                            progress=progress)
        meta = {"model": model_name, "data": base_key["data"], "settings": {**self._pair_settings(),
                **self._learner_settings()}, "ig_mean": mean, "ig_std": std, "n_train_pairs": n_tr,
                "n_val_pairs": len(va_pos), "objective_docs": [int(d) for d in obj_docs],
                "base_objective_ppl": base_ppl, "pairs_s": pairs_s, "learner_s": fit.seconds,
                "cost_s": pairs_s + fit.seconds, "fit": fit.to_dict()}
        if lpath is not None:
            save_learner(q, lpath, meta=meta)
            meta["cache_path"] = str(lpath)
        return PreparedLearner(q, meta, pairs_s + fit.seconds, pairs_reused)

    def pool_scores(self, *, model: torch.nn.Module, dataset, model_name: str, seed: int,
                    progress: bool = False) -> tuple[np.ndarray, np.ndarray, dict[str, Any], float, float]:
        """``(ids, z, info, cost_s, reused_s)``: a score for every pool context (``predictor`` other than learner).

        ``hidden_ridge``: ridge regression from the frozen LM's mean-pooled last hidden state to the pairs' IG,
        applied to the whole pool (one no-grad forward per pool context, plus the pairs).

        ``oracle``: the IG (``ig_estimate``) of every context on the same objective set the learner's pairs use,
        cached like the pairs. The contexts the objective windows were cut from are never kept (z = -inf):
        they contain O's tokens, so their IG measures memorising O, not information. ``random``: a standard
        normal score per context drawn from the training ``seed`` (the matched random control: the same
        schedule and keep rates as the oracle, with uninformative scores). Scores are z-scores over the pool.
        """
        tokens, ids, docs = _pool_arrays(dataset)
        if self.predictor == "hidden_ridge":
            return self._hidden_ridge_scores(model=model, dataset=dataset, model_name=model_name, progress=progress)
        if self.predictor == "random":
            rng = np.random.default_rng(np.random.SeedSequence([int(seed), 14]))
            return ids, rng.standard_normal(len(ids)), {"predictor": "random"}, 0.0, 0.0
        device = model.get_input_embeddings().weight.device
        obj_docs = choose_objective(docs, n_docs=self.objective_docs, seed=self.pair_seed)
        rows, _starts = objective_picks(tokens.shape[1], docs, obj_docs, length=self.objective_length,
                                        seed=self.pair_seed)
        objective = objective_windows(tokens, docs, obj_docs, length=self.objective_length, seed=self.pair_seed)
        key = self._pool_ig_key(model_name, dataset, device.type)
        pcache = PairCache() if self.cache else None
        hit = pcache.get(key, ids) if pcache is not None else None
        if hit is not None:
            ig, cost = hit
            reused, base_ppl = cost, None
            log.info("IGF oracle IG from cache (%d contexts, cost %.1fs when measured)", len(ig), cost)
        else:
            log.info("IGF oracle: measuring the %s IG of all %d pool contexts", self.ig_estimate, len(ids))
            ig, info = collect_ig(model, tokens, objective, estimate=self.ig_estimate, lr=self.pair_lr,
                                  clip=self.pair_clip or None, autocast_dtype=None, progress=progress)
            cost, reused, base_ppl = info["seconds"], 0.0, info["base_objective_ppl"]
            if pcache is not None:
                pcache.put(key, ids, ig, cost)
        keep = np.ones(len(ids), dtype=bool)
        keep[rows] = False
        z = np.full(len(ids), -np.inf)
        z[keep], mean, std = zscore(ig[keep])
        info = {"predictor": "oracle", "ig_mean": mean, "ig_std": std, "n_scored": int(len(ids)),
                "n_objective_sources_excluded": int((~keep).sum()), "base_objective_ppl": base_ppl,
                "ig_estimate": self.ig_estimate}
        return ids, z, info, cost, reused

    def _hidden_ridge_scores(self, *, model, dataset, model_name: str, progress: bool = False):
        """Ridge from the frozen LM's mean-pooled last hidden state to the pairs' IG z-score; scores the whole pool."""
        tokens, ids, _docs = _pool_arrays(dataset)
        device = model.get_input_embeddings().weight.device
        # the pool's scores do not depend on the training seed: cached like the learner
        key = {**self._pool_ig_key(model_name, dataset, device.type), "table": "hidden_ridge",
               "n_pairs": self.n_pairs, "val_fraction": self.val_fraction}
        tcache = PairCache() if self.cache else None
        hit = tcache.get(key, ids) if tcache is not None else None
        if hit is not None:
            log.info("IGF hidden-ridge scores from cache (cost %.1fs when computed)", hit[1])
            return ids, hit[0], {"predictor": "hidden_ridge", "from_cache": True}, hit[1], hit[1]
        obj_docs, tr_pos, va_pos, ig, pairs_s, reused, base_ppl = self._pairs(model=model, dataset=dataset,
                                                                           model_name=model_name, progress=progress)
        t0 = time.perf_counter()
        hidden = pool_hidden_states(model, tokens)
        hidden_s = time.perf_counter() - t0
        z, mean, std = zscore(ig)
        n_tr = len(tr_pos)
        t0 = time.perf_counter()
        w, b, alpha = fit_ridge(hidden[tr_pos], z[:n_tr], hidden[va_pos], z[n_tr:])
        pred = hidden @ w + b
        fit_s = time.perf_counter() - t0
        val_r = (float(np.corrcoef(pred[va_pos], z[n_tr:])[0, 1]) if len(va_pos) > 1 and pred[va_pos].std() > 0
                 else None)
        pz, _pm, _ps = zscore(pred)
        info = {"predictor": "hidden_ridge", "ig_mean": mean, "ig_std": std, "n_train_pairs": n_tr,
                "n_val_pairs": len(va_pos), "ridge_alpha": alpha, "val_pearson": val_r, "hidden_pass_s": hidden_s,
                "pairs_s": pairs_s, "ridge_s": fit_s, "base_objective_ppl": base_ppl,
                "objective_docs": [int(d) for d in obj_docs]}
        if tcache is not None:
            tcache.put(key, ids, pz, pairs_s + hidden_s + fit_s)
        return ids, pz, info, pairs_s + hidden_s + fit_s, reused

    def plan(self, ctx) -> Plan:
        if ctx.task != "causal_lm":
            raise DataDietError("igf filters causal-LM fine-tuning (it predicts a context's perplexity gain); the task "
                                f"is {ctx.task!r}. Use a causal-LM dataset (e.g. 'austen') and model (e.g. 'smollm2-135m')")
        ctx.need("igf", "model", "train_dataset")
        lm = ctx.model
        name = ctx.model_name if ctx.model_name is not None else type(lm).__name__
        if self.predictor != "learner":
            if self.learner is not None:
                raise ConfigError(f"igf: predictor={self.predictor!r} does not use a learner file; leave "
                                  "method.params.learner unset, or use predictor=learner")
            ids, z, info, cost, reused = self.pool_scores(model=lm, dataset=ctx.train_dataset, model_name=name,
                                                          seed=ctx.seed)
            f = IGFFilter(None, batch_size=ctx.batch_size, schedule=self.threshold_schedule, threshold=self.threshold,
                          threshold_after=self.threshold_after, switch_step=self.switch_step, table=(ids, z))
            return Plan(filters=[f], info={"igf": info, "igf_cost_s": cost, "selection_reused_s": reused,
                                           "igf_threshold_units": {"units": "pool (z-scores of the table)"}})
        prep = self.prepare_learner(model=lm, dataset=ctx.train_dataset, model_name=name, bf16=ctx.bf16)
        center, scale, units = 0.0, 1.0, {}
        if self.threshold_units == "pool":
            # thresholds in standard deviations of the learner's own predictions over the pool
            tokens, _ids, _docs = _pool_arrays(ctx.train_dataset)
            t0 = time.perf_counter()
            pred = prep.learner.predict(torch.as_tensor(tokens)).numpy()
            center, scale = float(pred.mean()), float(pred.std()) or 1.0
            units = {"pool_prediction_mean": center, "pool_prediction_std": scale,
                     "pool_prediction_s": time.perf_counter() - t0}
        f = IGFFilter(prep.learner, batch_size=ctx.batch_size, schedule=self.threshold_schedule,
                      threshold=self.threshold, threshold_after=self.threshold_after, switch_step=self.switch_step,
                      center=center, scale=scale)
        info = {"igf_threshold_units": {"units": self.threshold_units, **units},
                "selection_reused_s": prep.reused_s, "igf": {k: v for k, v in prep.meta.items() if k != "fit"},
                "igf_fit": prep.meta.get("fit"), "igf_cost_s": prep.cost_s}
        return Plan(filters=[f], info=info)
