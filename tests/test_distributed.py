"""Several processes: 2 CPU ranks (gloo, torchrun), the plain loop and the Trainer mixin.

Each scenario is one torchrun launch (tests/_dist_worker.py), shared by the checks of this module and
bounded by a timeout, so a hang fails fast. The one-process references run in the test process.
"""

from __future__ import annotations

import pytest
import torch

from dist import launch, read_ranks
from dist_cases import LM_CASES, LOOP_CASES, TRAINER_CASES, curve_counts, lm_loop_run, loop_run, trainer_run

ALL_LOOP = [*LOOP_CASES, *LM_CASES]

pytestmark = pytest.mark.timeout(400)


@pytest.fixture(scope="module")
def loop_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist_loop")
    launch("tests/_dist_worker.py", "loop", str(out), timeout=300)
    return out, read_ranks(out)


@pytest.fixture(scope="module")
def trainer_out(tmp_path_factory):
    pytest.importorskip("transformers")
    out = tmp_path_factory.mktemp("dist_trainer")
    launch("tests/_dist_worker.py", "trainer", str(out), timeout=300)
    return out, read_ranks(out)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """Each loop case on one process with the global batch (2 x 4), computed once."""
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("one_process")
    out = {case: loop_run(case, per_rank_batch=8) for case in LOOP_CASES}
    return {**out, **{case: lm_loop_run(case, folder, per_rank_batch=8) for case in LM_CASES}}


# ---------------------------------------------------------------------- the plain loop
@pytest.mark.parametrize("case", ALL_LOOP)
def test_loop_ranks_stay_in_step(loop_out, case):
    """Both ranks skip different examples, yet take the same steps and end with the same weights and filter state."""
    _, (r0, r1) = loop_out
    a, b = r0["cases"][case], r1["cases"][case]
    assert a["optimizer_steps"] == b["optimizer_steps"] > 0
    assert a["backward_calls"] == b["backward_calls"] == a["optimizer_steps"]
    assert a["params"] == b["params"]  # bit for bit
    assert a["state"] == b["state"]
    assert a["global"] == b["global"]
    assert a["losses"] == b["losses"]
    if case != "full":
        assert a["counts"]["skipped"] and b["counts"]["skipped"]  # each rank skipped some of its own examples


@pytest.mark.parametrize("case", ALL_LOOP)
def test_two_ranks_equal_one_rank_with_twice_the_batch(loop_out, one_process, case):
    """2 ranks x batch 4 train what 1 rank x batch 8 trains: same decisions, counts, steps, weights."""
    out, (r0, _) = loop_out
    model, engine, res = one_process[case]
    a = r0["cases"][case]
    one = engine.counts.as_dict()
    for k in ("examples_seen", "examples_forwarded", "examples_backpropagated", "optimizer_steps"):
        assert a["global"][k] == one[k], k
    assert a["global"]["skipped"] == engine.skipped()
    two = torch.load(out / f"{case}.pt", weights_only=True)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(two[k], v, rtol=0, atol=2e-5, msg=k)
    assert a["losses"] == pytest.approx(res.losses, abs=1e-5)


@pytest.mark.parametrize("case", list(LOOP_CASES))
def test_learning_curve_points_count_examples_over_every_rank(loop_out, one_process, case):
    """eval_by="examples" on 2 ranks evaluates (on rank 0) where 1 rank with twice the batch does, and its
    points carry the counts of both ranks."""
    _, (r0, r1) = loop_out
    _, _, res = one_process[case]
    one = curve_counts(res)
    assert len(one) >= 8 and [p["examples_seen"] for p in one] == sorted({p["examples_seen"] for p in one})
    assert r0["cases"][case]["curve"] == one
    assert r1["cases"][case]["curve"] == []  # only the rank given ``evaluate`` evaluates


def test_counts_sum_over_ranks_and_the_record_names_the_world_size(loop_out):
    _, (r0, r1) = loop_out
    for case in ALL_LOOP:
        a, b = r0["cases"][case], r1["cases"][case]
        assert a["summary_world_size"] == 2
        for k in ("examples_seen", "examples_forwarded", "examples_backpropagated"):
            assert a["counts"][k] + b["counts"][k] == a["global"][k], (case, k)
        for reason, n in a["global"]["skipped"].items():
            assert a["counts"]["skipped"].get(reason, 0) + b["counts"]["skipped"].get(reason, 0) == n
        assert a["counts"]["optimizer_steps"] == b["counts"]["optimizer_steps"] == a["global"]["optimizer_steps"]


def test_a_rank_disagreement_is_an_error_not_a_hang(tmp_path):
    launch("tests/_dist_worker.py", "mismatch", str(tmp_path), timeout=200)
    for r in read_ranks(tmp_path):
        rate, batches = r["cases"]["rate"]["error"], r["cases"]["batches"]["error"]
        assert rate is not None and "ranks disagree" in rate and "last_decision" in rate
        assert batches is not None and "different points of the run" in batches
        assert "a batch submitted to the step engine" in batches


# ---------------------------------------------------------------------- the Trainer mixin under torchrun
@pytest.mark.parametrize("case", list(TRAINER_CASES))
def test_trainer_ranks_stay_in_step(trainer_out, case):
    _, (r0, r1) = trainer_out
    a, b = r0["cases"][case], r1["cases"][case]
    assert a["global_step"] == b["global_step"] > 0
    assert a["optimizer_steps"] == b["optimizer_steps"] > 0
    assert a["params"] == b["params"]
    assert a["state"] == b["state"]
    assert a["global"] == b["global"]
    assert a["train_loss"] == b["train_loss"]
    for k in ("examples_seen", "examples_forwarded", "examples_backpropagated"):
        assert a["counts"][k] + b["counts"][k] == a["global"][k]
        assert a["last_log"][f"datadiet/{k}"] == a["global"][k]  # the logs count every rank's work
    assert a["global"]["examples_seen"] == 2 * a["n_train"]  # 2 epochs over the (selected) set, shared out


def test_trainer_prune_method_trains_rank_0s_subset(trainer_out):
    _, (r0, r1) = trainer_out
    a, b = r0["cases"]["random_subset"], r1["cases"]["random_subset"]
    assert a["n_train"] == b["n_train"] == 32


@pytest.mark.parametrize("case", ["random_skip", "random_subset"])
def test_trainer_two_ranks_equal_one_rank_with_twice_the_batch(trainer_out, tmp_path, case):
    out, (r0, _) = trainer_out
    one = trainer_run(case, tmp_path, per_rank_batch=8)
    a = r0["cases"][case]
    c = one.datadiet_engine.counts.as_dict()
    for k in ("examples_seen", "examples_backpropagated", "optimizer_steps"):
        assert a["global"][k] == c[k], k
    two = torch.load(out / f"trainer-{case}.pt", weights_only=True)
    for k, v in one.model.state_dict().items():
        torch.testing.assert_close(two[k], v, rtol=0, atol=2e-5, msg=k)


def test_trainer_resumes_on_two_ranks_as_if_uninterrupted(trainer_out):
    _, (r0, r1) = trainer_out
    for r in (r0, r1):
        res = r["resume"]
        assert res["files"] == ["datadiet_state.pt", "datadiet_state.rank1.pt"]  # each rank's own state
        assert res["resumed"] == res["whole"]
        assert res["resumed_counts"] == res["whole_counts"]
    assert r0["resume"]["whole"] == r1["resume"]["whole"]


def test_trainer_refuses_fsdp_on_several_processes(trainer_out):
    _, (r0, r1) = trainer_out
    for r in (r0, r1):
        said = r["refusals"]["fsdp"]
        assert said is not None and "DDP only" in said and "FSDP" in said


# ---------------------------------------------------------------------- the runner / CLI
def test_cli_trains_on_two_processes_and_rank_0_writes_the_record(tmp_path):
    import json
    import sys

    from dist import launch_env, run_bounded

    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "datadiet", "train", "--nproc", "2", "--config", "configs/tiny.yaml", "--set",
           "method.name=random_skip", "method.params.rate=0.3", "train.bf16=false", "train.epochs=2", "--out", str(out)]
    p = run_bounded(cmd, env=launch_env(), timeout=200, what="datadiet train --nproc 2")
    assert p.stdout.count("accuracy:") == 1  # rank 0 speaks for the run
    assert "processes: 2 (gloo)" in p.stdout
    (folder,) = out.iterdir()
    rec = json.loads((folder / "record.json").read_text())
    assert rec["status"] == "finished" and rec["world_size"] == 2
    per_rank, counts = rec["per_rank_counts"], rec["counts"]
    assert len(per_rank) == 2
    assert counts["examples_seen"] == 2 * 200
    for k in ("examples_seen", "examples_forwarded", "examples_backpropagated"):
        assert sum(r[k] for r in per_rank) == counts[k]
    assert sum(r["skipped"]["random_skip"] for r in per_rank) == counts["skipped"]["random_skip"] > 0
    assert per_rank[0]["optimizer_steps"] == per_rank[1]["optimizer_steps"] == counts["optimizer_steps"]
    assert rec["timings"]["sync_s"] > 0


def test_cli_nproc_is_refused_under_a_launcher(monkeypatch, capsys):
    from datadiet.cli.main import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", "--nproc", "2", "--config", "configs/tiny.yaml"]) == 2
    assert "leave it out" in capsys.readouterr().err


# ---------------------------------------------------------------------- no processes needed
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shards_cover_every_item_once_as_evenly_as_possible(world):
    from datadiet.core.distributed import shard_slice

    for n in range(0, 20):
        parts = [list(range(n))[shard_slice(n, rank=r, world_size=world)] for r in range(world)]
        assert sum(parts, []) == list(range(n))  # contiguous, in rank order
        sizes = [len(p) for p in parts]
        assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_engine_and_loop_must_agree_on_the_processes():
    from types import SimpleNamespace

    from datadiet.core.engine import StepEngine
    from datadiet.errors import DataDietError
    from datadiet.loop import fit

    from dist_cases import planted

    model, ds, collator = planted(8)
    two = SimpleNamespace(world_size=2, rank=0, is_main=True)
    with pytest.raises(DataDietError, match="pass the same ranks to fit"):
        fit(model, ds, engine=StepEngine(task="classification", batch_size=4, ranks=two), collator=collator)
    with pytest.raises(DataDietError, match=r"StepEngine\(\.\.\., ranks=ranks\)"):
        fit(model, ds, engine=StepEngine(task="classification", batch_size=4), collator=collator, ranks=two)


def test_a_state_saved_on_two_processes_resumes_only_on_two():
    from datadiet.core.engine import StepEngine
    from datadiet.errors import DataDietError
    from datadiet.online import RandomSkip

    state = StepEngine(task="classification", batch_size=4, filters=[RandomSkip(rate=0.5)]).state_dict()
    state["ranks"] = {"world_size": 2, "global": {}, "skipped_global": {}, "submits": 0, "digest": 0}
    with pytest.raises(DataDietError, match="saved by a run on 2 processes; resume it on as many"):
        StepEngine(task="classification", batch_size=4, filters=[RandomSkip(rate=0.5)]).load_state_dict(state)


def test_cli_prune_method_on_two_processes_selects_what_one_process_selects(tmp_path):
    """data_diet's scoring runs are shared out over the ranks; the selection is one process's (batch 2 x 8 = 16)."""
    import json
    import sys

    from dist import launch_env, run_bounded

    from datadiet.config import load_config
    from datadiet.runner import run

    sets = ["method.name=data_diet", "method.params.score_seeds=2", "method.params.score_steps=3",
            "method.params.keep=0.5", "method.params.cache=false", "train.bf16=false", "run_name=r"]
    cmd = [sys.executable, "-m", "datadiet", "train", "--nproc", "2", "--config", "configs/tiny.yaml", "--set", *sets,
           "train.batch_size=8", "--out", str(tmp_path / "two")]
    run_bounded(cmd, env=launch_env(), timeout=200, what="datadiet train --nproc 2 (data_diet)")
    one = run(load_config("configs/tiny.yaml", [*sets, "train.batch_size=16", f"output_dir={tmp_path / 'one'}"]))
    two = json.loads((tmp_path / "two" / "r" / "record.json").read_text())
    assert two["world_size"] == 2 and two["status"] == "finished"
    sel = [json.loads((tmp_path / k / "r" / "selection.json").read_text()) for k in ("one", "two")]
    assert sel[0]["ids"] == sel[1]["ids"] and len(sel[0]["ids"]) == 100
    assert two["n_train_used"] == one["n_train_used"] == 100
    assert two["counts"]["examples_seen"] == one["counts"]["examples_seen"] == 100
