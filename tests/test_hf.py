"""The Hugging Face Trainer front end: same engine, same results as the plain loop, ids kept."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from torch.utils.data import SequentialSampler  # noqa: E402
from transformers import TrainerCallback, TrainingArguments  # noqa: E402

from datadiet.data.collate import Collator, TokenizedSplit  # noqa: E402
from datadiet.data.types import TextSplit  # noqa: E402
from datadiet.core.engine import StepEngine  # noqa: E402
from datadiet.errors import DataDietError  # noqa: E402
from datadiet.integrations.hf import LEFTOVER_REASON, DataDietTrainer  # noqa: E402
from datadiet.loop import fit  # noqa: E402
from datadiet.models.tiny import tiny_model  # noqa: E402
from datadiet.core.filter import Decision, OnlineFilter  # noqa: E402
from datadiet.methods.random_skip import RandomSkip  # noqa: E402

from conftest import SkipAll, planted_texts  # noqa: E402

BS = 8
LR = 1e-3


# ---------------------------------------------------------------------- helpers
class SkipIds(OnlineFilter):
    """Skips a fixed set of example ids (deterministic buffer patterns)."""

    stage = "pre_forward"
    reason = "skip_ids"

    def __init__(self, ids):
        self.ids = {int(i) for i in ids}

    def decide(self, batch, losses):
        return Decision(keep=torch.tensor([int(i) not in self.ids for i in batch.ids]))


class Recorder(OnlineFilter):
    """Keeps everything; records the ids it is shown, per epoch, and the trained ids."""

    stage = "pre_forward"
    reason = "recorder"

    def __init__(self):
        self.epoch = 0
        self.seen: dict[int, list[int]] = {}
        self.trained: list[int] = []

    def on_epoch_start(self, epoch):
        self.epoch = epoch

    def decide(self, batch, losses):
        self.seen.setdefault(self.epoch, []).extend(int(i) for i in batch.ids)
        return Decision(keep=torch.ones(len(batch), dtype=torch.bool))

    def observe(self, batch, losses, *, trained):
        if trained:
            self.trained.extend(int(i) for i in batch.ids)


class SeqTrainer(DataDietTrainer):
    """Sequential data order, so the Trainer sees the batches the plain loop (shuffle=False) sees."""

    def _get_train_sampler(self, train_dataset=None):
        return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)


def make_split(n=64):
    texts, labels = planted_texts(n)
    return TextSplit(ids=np.arange(100, 100 + n), texts=texts, labels=labels)


@pytest.fixture(scope="module")
def tok():
    return tiny_model("tiny-bert", num_labels=2, seed=0)[1]


@pytest.fixture(scope="module")
def ds(tok):
    return TokenizedSplit(make_split(64), tok, max_length=32)


def make_args(tmp_path, **over):
    kw = dict(
        output_dir=str(tmp_path), per_device_train_batch_size=BS, per_device_eval_batch_size=16,
        num_train_epochs=1, learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1.0, optim="adamw_torch_fused", report_to=[], save_strategy="no", logging_strategy="no",
        use_cpu=True, seed=0, dataloader_num_workers=0, disable_tqdm=True,
    )
    kw.update(over)
    return TrainingArguments(**kw)


def run_trainer(tmp_path, ds, tok, filters=(), trainer_cls=SeqTrainer, collator=None, **args):
    model, _ = tiny_model("tiny-bert", num_labels=2, seed=0)
    trainer = trainer_cls(
        model=model, args=make_args(tmp_path, **args), train_dataset=ds,
        data_collator=collator or Collator(pad_token_id=tok.pad_token_id), processing_class=tok, filters=filters,
    )
    trainer.train()
    return trainer


def run_loop(ds, tok, filters=(), epochs=1):
    model, _ = tiny_model("tiny-bert", num_labels=2, seed=0)
    engine = StepEngine(task="classification", batch_size=BS, filters=filters, pad_token_id=tok.pad_token_id)
    fit(model, ds, engine=engine, collator=Collator(pad_token_id=tok.pad_token_id), epochs=epochs, lr=LR,
        weight_decay=0.0, warmup=0.0, schedule="constant", max_grad_norm=1.0, fused_adamw=True, seed=0,
        shuffle=False)
    return model, engine


def assert_same_params(a, b):
    sa, sb = dict(a.named_parameters()), dict(b.named_parameters())
    assert sa.keys() == sb.keys()
    for name in sa:
        # Exact: both front ends build the same loss graph on the same batches, clip with the same
        # clip_grad_norm_ and step the same fused AdamW kernel, so the results agree to the last bit.
        torch.testing.assert_close(sa[name].detach(), sb[name].detach(), rtol=0, atol=0, msg=name)


COUNT_KEYS = ("examples_seen", "examples_forwarded", "examples_backpropagated", "optimizer_steps", "skipped")


def counts(engine):
    s = engine.summary()
    return {k: s[k] for k in COUNT_KEYS}


# ---------------------------------------------------------------------- equivalence with the plain loop
def test_trainer_matches_plain_loop_without_filters(tmp_path, ds, tok):
    trainer = run_trainer(tmp_path, ds, tok)
    model, engine = run_loop(ds, tok)
    assert_same_params(trainer.model, model)
    assert counts(trainer.datadiet_engine) == counts(engine)
    assert engine.counts.optimizer_steps == 64 // BS
    assert trainer.state.global_step == 64 // BS


@pytest.mark.parametrize("make_filter", [
    lambda: RandomSkip(rate=0.5, seed=3),
    # the last incoming batch is skipped whole: the end of training trains the 5 leftover examples alone.
    lambda: SkipIds([100, 101, 102, *range(156, 164)]),
], ids=["random_skip", "final_flush_one_batch"])
def test_trainer_matches_plain_loop_with_filter(tmp_path, ds, tok, make_filter):
    trainer = run_trainer(tmp_path, ds, tok, filters=[make_filter()])
    model, engine = run_loop(ds, tok, filters=[make_filter()])
    c = counts(engine)
    assert counts(trainer.datadiet_engine) == c
    assert sum(c["skipped"].values()) > 0 and c["examples_backpropagated"] < 64
    assert c["examples_seen"] == 64
    assert c["examples_backpropagated"] + sum(c["skipped"].values()) == 64
    assert_same_params(trainer.model, model)
    assert trainer.datadiet_engine.buffered == 0


def test_final_flush_joins_the_last_optimizer_step(tmp_path, ds, tok):
    """100..102 skipped: the last incoming batch completes a full batch *and* leaves 5 kept examples. The
    plain loop trains them in an extra step at the epoch's end; the Trainer has no step to spare there, so
    they join its last optimizer step, which then averages over all 13 kept examples of that window."""
    trainer = run_trainer(tmp_path, ds, tok, filters=[SkipIds([100, 101, 102])])
    _, engine = run_loop(ds, tok, filters=[SkipIds([100, 101, 102])])
    c, ct = counts(engine), counts(trainer.datadiet_engine)
    assert ct["optimizer_steps"] == c["optimizer_steps"] - 1 == 64 // BS - 1  # the first step had only 5 kept
    assert {k: v for k, v in ct.items() if k != "optimizer_steps"} == {k: v for k, v in c.items() if k != "optimizer_steps"}
    assert ct["examples_backpropagated"] == 61 and trainer.datadiet_engine.buffered == 0


@pytest.mark.parametrize("optim", ["adamw_torch_fused", "adamw_torch"])
def test_skipping_everything_changes_nothing(tmp_path, ds, tok, optim):
    before = {n: p.detach().clone() for n, p in tiny_model("tiny-bert", num_labels=2, seed=0)[0].named_parameters()}
    trainer = run_trainer(tmp_path, ds, tok, filters=[SkipAll()], optim=optim, max_grad_norm=1.0)
    for n, p in trainer.model.named_parameters():
        torch.testing.assert_close(p.detach(), before[n], rtol=0, atol=0, msg=n)
        assert p.grad is None
    e = trainer.datadiet_engine
    assert trainer.state.global_step == 64 // BS  # the Trainer stepped, on no gradients
    assert e.counts.optimizer_steps == 0
    assert e.counts.examples_backpropagated == 0 and e.counts.examples_forwarded == 0
    assert e.skipped() == {"skip_all": 64}
    # AdamW never created state (moments, step counters) for any parameter.
    assert all(len(s) == 0 for s in trainer.optimizer.state.values())


# ---------------------------------------------------------------------- ids through the Trainer
def _hf_dataset(tok, n=64):
    datasets = pytest.importorskip("datasets")
    split = make_split(n)
    enc = tok(split.texts, truncation=True, max_length=32)
    return datasets.Dataset.from_dict({
        "input_ids": enc["input_ids"], "labels": split.labels.tolist(), "example_id": split.ids.tolist(),
        "text": split.texts,  # not a model input: removed by remove_unused_columns
    })


@pytest.mark.parametrize("kind", ["datasets", "tokenized_split"])
def test_ids_survive_the_trainer(tmp_path, ds, tok, kind):
    from transformers import DataCollatorWithPadding

    from datadiet.integrations.hf import DataDietTrainer as Plain  # random order: ids must survive shuffling

    if kind == "datasets":
        train, collator = _hf_dataset(tok), DataCollatorWithPadding(tok)
    else:
        train, collator = ds, None
    rec = Recorder()
    trainer = run_trainer(tmp_path, train, tok, filters=[rec], trainer_cls=Plain, collator=collator,
                          num_train_epochs=2)
    want = list(range(100, 164))
    assert sorted(rec.seen) == [0, 1]
    for epoch in (0, 1):
        assert sorted(rec.seen[epoch]) == want
    assert rec.seen[0] != want  # the Trainer shuffled
    assert sorted(rec.trained) == sorted(want * 2)
    assert trainer.datadiet_engine.counts.optimizer_steps == 2 * 64 // BS


def test_carry_over_between_epochs(tmp_path, tok):
    # 20 examples, batches of 8, 8, 4; 3 skipped per epoch: 17 kept per epoch, 34 in all.
    ds20 = TokenizedSplit(make_split(20), tok, max_length=32)
    rec = Recorder()
    trainer = run_trainer(tmp_path, ds20, tok, filters=[SkipIds([100, 109, 118]), rec], num_train_epochs=2)
    e = trainer.datadiet_engine
    assert trainer.state.global_step == 6
    assert e.counts.examples_seen == 40
    assert e.skipped() == {"skip_ids": 6}
    # leftovers are carried over (not trained at the epoch end): 34 kept = 4 full batches + 2 flushed at the
    # end, which join the last optimizer step (see test_final_flush_joins_the_last_optimizer_step).
    assert e.counts.examples_backpropagated == 34
    assert e.counts.optimizer_steps == 34 // BS == 4
    assert e.buffered == 0
    assert sorted(rec.trained) == sorted([i for i in range(100, 120) if i not in (100, 109, 118)] * 2)


def test_leftover_dropped_and_counted_when_training_stops_early(tmp_path, ds, tok):
    class StopAfterTwo(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step >= 2:
                control.should_training_stop = True

    model, _ = tiny_model("tiny-bert", num_labels=2, seed=0)
    trainer = SeqTrainer(model=model, args=make_args(tmp_path), train_dataset=ds,
                         data_collator=Collator(pad_token_id=0), processing_class=tok,
                         filters=[SkipIds([100, 101, 102])], callbacks=[StopAfterTwo()])
    trainer.train()
    e = trainer.datadiet_engine
    assert trainer.state.global_step == 2
    # batch 1: 5 kept, buffered; batch 2: 5 + 8 -> one training batch, 5 left over and dropped.
    assert e.counts.optimizer_steps == 1 and e.counts.examples_backpropagated == 8
    assert e.skipped() == {"skip_ids": 3, LEFTOVER_REASON: 5}
    assert e.buffered == 0


# ---------------------------------------------------------------------- clear errors
@pytest.fixture
def trainer(tmp_path, ds, tok):
    model, _ = tiny_model("tiny-bert", num_labels=2, seed=0)
    return DataDietTrainer(model=model, args=make_args(tmp_path), train_dataset=ds,
                           data_collator=Collator(pad_token_id=0), processing_class=tok, filters=[RandomSkip()])


def test_packed_batch_is_refused(trainer):
    pos = torch.cat([torch.arange(10), torch.arange(6)])[None]
    packed = {"input_ids": torch.ones(1, 16, dtype=torch.long), "position_ids": pos,
              "labels": torch.tensor([0]), "example_id": torch.tensor([1])}
    with pytest.raises(DataDietError, match="packed / padding-free.*padding collator"):
        trainer.training_step(trainer.model, packed)
    flat = {"input_ids": torch.ones(1, 16, dtype=torch.long), "cu_seq_lens_q": torch.tensor([0, 10, 16]),
            "example_id": torch.tensor([1])}
    with pytest.raises(DataDietError, match="cu_seq_lens_q.*packing=False"):
        trainer.training_step(trainer.model, flat)
    assert trainer.datadiet_engine.counts.examples_seen == 0


def test_missing_id_column_is_explained(tmp_path, ds, tok, trainer):
    batch = Collator(pad_token_id=0)([ds[i] for i in range(BS)])
    del batch["example_id"]
    with pytest.raises(DataDietError, match="no 'example_id' column.*id_column="):
        trainer.training_step(trainer.model, batch)
    # a dataset without ids is refused when the trainer is built, not when train() starts
    datasets = pytest.importorskip("datasets")
    no_ids = datasets.Dataset.from_dict({"input_ids": [f["input_ids"] for f in ds.features],
                                         "labels": [f["labels"] for f in ds.features]})
    model, _ = tiny_model("tiny-bert", num_labels=2, seed=0)
    for kw in ({"filters": [RandomSkip()]}, {"method": "random_subset"}):
        with pytest.raises(DataDietError, match=r"no 'example_id' column \(its columns: \['input_ids', 'labels'\]\).*add_column"):
            DataDietTrainer(model=model, args=make_args(tmp_path), train_dataset=no_ids, processing_class=tok, **kw)
    DataDietTrainer(model=model, args=make_args(tmp_path), train_dataset=no_ids, processing_class=tok)  # full: no ids needed


def test_unsupported_settings_are_refused(tmp_path, ds, tok):
    model, _ = tiny_model("tiny-bert", num_labels=2, seed=0)
    with pytest.raises(DataDietError, match="label_smoothing_factor"):
        DataDietTrainer(model=model, args=make_args(tmp_path, label_smoothing_factor=0.1), train_dataset=ds,
                        processing_class=tok)


# ---------------------------------------------------------------------- evaluation and logs
def test_evaluate_and_logs(tmp_path, ds, tok):
    model, _ = tiny_model("tiny-bert", num_labels=2, seed=0)
    trainer = SeqTrainer(model=model, args=make_args(tmp_path, logging_strategy="steps", logging_steps=4),
                         train_dataset=ds, eval_dataset=ds, data_collator=Collator(pad_token_id=0),
                         processing_class=tok, filters=[RandomSkip(rate=0.5, seed=3)])
    # Before training the mixin's evaluation equals the model's own loss on the same data.
    metrics = trainer.evaluate()
    batch = Collator(pad_token_id=0)([ds[i] for i in range(len(ds))])
    with torch.no_grad():
        ref = model.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           labels=batch["labels"]).loss
    assert metrics["eval_loss"] == pytest.approx(float(ref), rel=1e-5)
    trainer.train()
    metrics = trainer.evaluate()
    assert math.isfinite(metrics["eval_loss"])
    pred = trainer.predict(ds)
    assert pred.predictions.shape == (64, 2)
    assert (pred.label_ids == ds.labels).all()
    logged = [h for h in trainer.state.log_history if "datadiet/examples_seen" in h]
    assert logged and logged[-1]["datadiet/examples_seen"] == 64
    assert logged[-1]["datadiet/optimizer_steps"] == trainer.datadiet_engine.counts.optimizer_steps
    assert logged[-1]["datadiet/skipped/random_skip"] == trainer.datadiet_engine.skipped()["random_skip"]
    assert all(math.isfinite(h["loss"]) for h in logged if "loss" in h)


def test_logged_loss_is_the_real_training_loss(tmp_path, ds, tok):
    """The Trainer's own ``loss`` would count a step without a backward as 0 (diluting the mean) and log a
    ``grad_norm`` of 0.0 for it; under the mixin both are the real values of the steps that trained."""
    model, _ = tiny_model("tiny-bert", num_labels=2, seed=0)
    trainer = SeqTrainer(model=model, args=make_args(tmp_path, logging_strategy="steps", logging_steps=1),
                         train_dataset=ds, data_collator=Collator(pad_token_id=0), processing_class=tok,
                         filters=[SkipIds(range(100, 124))])  # the first 3 incoming batches: no backward
    step_losses = []
    engine = trainer.datadiet_engine
    real = engine.training_loss

    def spy(*a, **kw):
        loss, losses = real(*a, **kw)
        step_losses.append(float(loss.detach()))
        return loss, losses

    engine.training_loss = spy
    out = trainer.train()
    logs = [h for h in trainer.state.log_history if "datadiet/examples_seen" in h and "train_loss" not in h]
    assert len(logs) == 64 // BS
    assert all("loss" not in h and "grad_norm" not in h for h in logs[:3])
    assert [h["loss"] for h in logs[3:]] == pytest.approx(step_losses, rel=1e-6)
    assert all(h["grad_norm"] > 0 for h in logs[3:])
    assert out.training_loss == pytest.approx(np.mean(step_losses), rel=1e-6)
    assert trainer.state.log_history[-1]["train_loss"] == pytest.approx(np.mean(step_losses), rel=1e-6)


def test_integrations_package_is_import_light():
    code = "import sys, datadiet.integrations as m; assert 'transformers' not in sys.modules; print(m.__all__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_causal_lm_with_gradient_accumulation(tmp_path):
    datasets = pytest.importorskip("datasets")
    from transformers import DataCollatorForLanguageModeling

    model, tok = tiny_model("tiny-gpt2", seed=0)
    texts, _ = planted_texts(40)
    enc = tok(texts, truncation=True, max_length=32)
    data = datasets.Dataset.from_dict({"input_ids": enc["input_ids"], "example_id": list(range(40))})
    trainer = DataDietTrainer(
        model=model, args=make_args(tmp_path, gradient_accumulation_steps=2, num_train_epochs=2),
        train_dataset=data, eval_dataset=data, data_collator=DataCollatorForLanguageModeling(tok, mlm=False),
        processing_class=tok, task="causal_lm", filters=[RandomSkip(rate=0.3, seed=1)],
    )
    trainer.train()
    e = trainer.datadiet_engine
    assert e.counts.examples_seen == 80
    assert e.counts.examples_backpropagated + e.skipped()["random_skip"] == 80
    assert e.buffered == 0
    assert trainer.state.global_step == 2 * math.ceil(5 / 2)
    assert 0 < e.counts.optimizer_steps <= trainer.state.global_step + 1
    assert math.isfinite(trainer.evaluate()["eval_loss"])


# ---------------------------------------------------------------------- gradient accumulation, defined
class SeqPlainTrainer(__import__("transformers").Trainer):
    """The user's plain Trainer, with the same sequential data order."""

    def _get_train_sampler(self, train_dataset=None):
        return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)


def _lm_dataset(n=32, seed=0):
    """Causal-LM rows of different lengths (token weighting differs from sequence weighting)."""
    datasets = pytest.importorskip("datasets")
    g = np.random.default_rng(seed)
    rows = [g.integers(6, 40, size=int(g.integers(5, 20))).tolist() for _ in range(n)]
    return datasets.Dataset.from_dict({"input_ids": rows, "example_id": list(range(500, 500 + n))})


@pytest.mark.timeout(120)
@pytest.mark.parametrize("task", ["classification", "causal_lm"])
def test_keep_everything_with_accumulation_reproduces_the_plain_trainer(tmp_path, tok, task):
    """GA=4: DietTrainer with a keep-everything filter = the user's plain Trainer (parameters within float
    tolerance). Causal LM: token weighting over the window (the Trainer's num_items_in_batch).

    Measured quirks of the plain Trainer (transformers 5.23), which the mixin does not copy: a BERT classifier's
    forward takes ``**kwargs``, so the Trainer assumes its loss is normalised over the window and sums the four
    micro-batch means (its logged loss is 4x the real one); the reference below is the Trainer with that off,
    i.e. the mean over the window. For the tiny GPT-2 the Trainer counts each sequence's first token in
    ``num_items_in_batch`` (its loss is ~8% low here); AdamW is invariant to that scale, and the parameters
    agree within 1e-5."""
    from transformers import DataCollatorForLanguageModeling, DataCollatorWithPadding

    if task == "classification":
        train, kind = _hf_dataset(tok, n=64), "tiny-bert"
        collator = DataCollatorWithPadding(tok)
    else:
        _, tok = tiny_model("tiny-gpt2")
        train, kind = _lm_dataset(64), "tiny-gpt2"
        collator = DataCollatorForLanguageModeling(tok, mlm=False)
    models = []
    for cls, kw in ((SeqPlainTrainer, {}), (SeqTrainer, {"filters": [Recorder()]})):
        model, _ = tiny_model(kind, num_labels=2, seed=0)
        t = cls(model=model, args=make_args(tmp_path / cls.__name__, gradient_accumulation_steps=4), train_dataset=train,
                data_collator=collator, processing_class=tok, **kw)
        if cls is SeqPlainTrainer and task == "classification":
            t.model_accepts_loss_kwargs = False
        t.train()
        assert t.state.global_step == 2
        models.append(t.model)
    for (n, a), (_, b) in zip(models[0].named_parameters(), models[1].named_parameters()):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-5, msg=n)


@pytest.mark.timeout(120)
def test_accumulated_update_averages_over_the_kept_examples_of_the_window(tmp_path, ds, tok):
    """Planted truth: 16 examples, B=8, GA=2 is one optimizer step; 3 of them skipped. The update is one SGD
    step on the mean loss of the 13 kept examples (not 13/16 of it, nor a mean of per-batch means)."""
    ds16 = TokenizedSplit(make_split(16), tok, max_length=32)
    trainer = run_trainer(tmp_path, ds16, tok, filters=[SkipIds([100, 101, 102])], gradient_accumulation_steps=2,
                          optim="sgd", max_grad_norm=0.0)
    assert trainer.state.global_step == 1 and trainer.datadiet_engine.counts.optimizer_steps == 1
    assert trainer.datadiet_engine.counts.examples_backpropagated == 13
    ref, _ = tiny_model("tiny-bert", num_labels=2, seed=0)
    kept = Collator(pad_token_id=tok.pad_token_id)([ds16[i] for i in range(3, 16)])
    out = ref(input_ids=kept["input_ids"], attention_mask=kept["attention_mask"])
    torch.nn.functional.cross_entropy(out.logits, kept["labels"]).backward()
    with torch.no_grad():
        for p in ref.parameters():
            if p.grad is not None:
                p -= LR * p.grad
    for (n, a), (_, b) in zip(trainer.model.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-7, msg=n)


# ---------------------------------------------------------------------- checkpoints
class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kw):
        if state.global_step >= self.step:
            control.should_training_stop = True


@pytest.mark.timeout(180)
@pytest.mark.parametrize("method,params", [
    (None, None), ("infobatch", {"ratio": 0.5}), ("loss_threshold", {"warmup_fraction": 0.2, "window": 16}),
    ("random_subset", {"fraction": 0.5}),
    ("multistage", {"warmup_fraction": 0.2, "window": 16, "switch_window": 2, "meta_loss_threshold": 5.0,
                    "explore_fraction": 0.2, "guard_window": 8}),
])
def test_resumed_run_equals_an_uninterrupted_one(tmp_path, ds, tok, method, params):
    """Counts, filter state (RNGs, scores, tau, buffer) and parameters of a run stopped at a checkpoint and
    resumed with resume_from_checkpoint equal those of the same run without the interruption."""
    def make(out, callbacks=()):
        kw = {"method": method, "method_params": params} if method else {"filters": [RandomSkip(rate=0.3, seed=5)]}
        model, _ = tiny_model("tiny-bert", num_labels=2, seed=0)
        return SeqTrainer(model=model, args=make_args(out, num_train_epochs=3, save_strategy="steps", save_steps=5),
                          train_dataset=ds, data_collator=Collator(pad_token_id=tok.pad_token_id), processing_class=tok,
                          callbacks=list(callbacks), **kw)

    full = make(tmp_path / "full")
    full.train()
    stopped = make(tmp_path / "part", [StopAt(5)])
    stopped.train()
    assert stopped.state.global_step == 5
    resumed = make(tmp_path / "part")
    resumed.train(resume_from_checkpoint=True)
    assert counts(resumed.datadiet_engine) == counts(full.datadiet_engine)
    fs, rs = full.datadiet_engine.state_dict(), resumed.datadiet_engine.state_dict()
    def untimed(x):  # wall-clock fields (cost_s, ...) are measurements, not state
        if isinstance(x, dict):
            return {k: untimed(v) for k, v in x.items() if not str(k).endswith("_s")}
        return [untimed(v) for v in x] if isinstance(x, (list, tuple)) else x

    assert str(untimed(rs["filters"])) == str(untimed(fs["filters"]))
    assert resumed.datadiet_train_loss() == pytest.approx(full.datadiet_train_loss(), rel=1e-6)
    for (n, a), (_, b) in zip(full.model.named_parameters(), resumed.model.named_parameters()):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6, msg=n)


def test_resume_from_a_checkpoint_without_datadiet_state_is_refused(tmp_path, ds, tok):
    (tmp_path / "checkpoint-3").mkdir()
    model, _ = tiny_model("tiny-bert", num_labels=2, seed=0)
    t = SeqTrainer(model=model, args=make_args(tmp_path), train_dataset=ds, data_collator=Collator(pad_token_id=0),
                   processing_class=tok, filters=[RandomSkip()])
    with pytest.raises(DataDietError, match="has no datadiet_state.pt.*filters' state is lost"):
        t.train(resume_from_checkpoint=str(tmp_path / "checkpoint-3"))


# ---------------------------------------------------------------------- method= with a user's own dataset
@pytest.mark.timeout(180)
@pytest.mark.parametrize("method,params", [
    ("data_diet", {"keep": 0.5, "score_seeds": 1, "score_steps": 2, "cache": False}),
    ("ingenious", {"fraction": 0.5, "cache": False}),
    ("multistage", {"warmup_fraction": 0.2, "window": 16, "switch_window": 2, "meta_loss_threshold": 5.0}),
])
def test_method_on_a_hf_dataset_with_text_columns(tmp_path, tok, method, params):
    """A user's datasets.Dataset (raw 'text' column beside the tokenized one) and DataCollatorWithPadding:
    the method plans on what the Trainer's dataloader would feed the collator, and its work is logged."""
    from transformers import DataCollatorWithPadding

    train = _hf_dataset(tok, n=64)
    model, _ = tiny_model("tiny-bert", num_labels=2, seed=0)
    t = DataDietTrainer(model=model, args=make_args(tmp_path, logging_strategy="steps", logging_steps=2,
                                                    num_train_epochs=2),
                        train_dataset=train, data_collator=DataCollatorWithPadding(tok), processing_class=tok,
                        method=method, method_params=params)
    assert t.datadiet_task == "classification"  # inferred from the model
    t.train()
    e = t.datadiet_engine
    logged = [h for h in t.state.log_history if "datadiet/examples_seen" in h]
    assert logged and logged[-1]["datadiet/examples_seen"] == e.counts.examples_seen
    assert logged[-1]["datadiet/selection_s"] >= 0
    if method in ("data_diet", "ingenious"):  # prune: the Trainer trains on the subset, its schedule sized once
        assert len(t.train_dataset) == 32 and e.counts.examples_seen == 64 and t.state.global_step == 8
    else:
        assert e.counts.examples_seen == 128
        assert e.counts.examples_backpropagated + sum(e.skipped().values()) == 128


def test_build_model_reseeds_only_the_task_head(tmp_path, ds, tok):
    """Scoring runs under the Trainer: the run's seed gives the model as it is; another seed re-draws the
    classifier head (the body is what the user loaded) and leaves the training model untouched."""
    model, _ = tiny_model("tiny-bert", num_labels=2, seed=0)
    t = DataDietTrainer(model=model, args=make_args(tmp_path), train_dataset=ds, data_collator=Collator(pad_token_id=0),
                        processing_class=tok, method="random_subset")
    build = t.datadiet_plan_context().build_model
    same, other, again = build(0), build(1), build(1)
    for (n, p), q, r, s in zip(model.named_parameters(), same.parameters(), other.parameters(), again.parameters()):
        assert torch.equal(p, q), n
        assert torch.equal(r, s), n  # seeded: reproducible
        assert torch.equal(p, r) != (n == "classifier.weight"), n  # (the bias starts at 0 either way)


@pytest.mark.timeout(120)
def test_each_epoch_is_announced_once_in_both_front_ends(tmp_path, ds, tok):
    """InfoBatch computes a threshold at each epoch start: 3 epochs give exactly 3 thresholds (None for epoch 0)
    under the plain loop and under the Trainer, and the same ones (the loop once announced epochs twice)."""
    from datadiet.online import InfoBatch

    _, engine = run_loop(ds, tok, filters=[InfoBatch(ratio=0.5, seed=1)], epochs=3)
    t = run_trainer(tmp_path, ds, tok, filters=[InfoBatch(ratio=0.5, seed=1)], num_train_epochs=3)
    lo, hf = engine.filters[0].thresholds, t.datadiet_engine.filters[0].thresholds
    assert len(lo) == len(hf) == 3 and lo[0] is None and hf[0] is None
    assert all(x is not None for x in lo[1:] + hf[1:])
    assert lo[1] == pytest.approx(hf[1], rel=1e-6)  # same batches in epoch 0, so the same stored losses
