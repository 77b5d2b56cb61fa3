"""Worker for tests/test_distributed.py: run under torchrun with 2 CPU processes (gloo).

``python -m torch.distributed.run --nproc-per-node 2 tests/_dist_worker.py SCENARIO OUT`` trains every case of
the scenario through the plain loop on this rank and writes ``OUT/rank{r}.json`` (and rank 0's final weights as
``OUT/{case}.pt``).
"""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

import torch
import torch.distributed as dist

from dist import write_and_leave
from dist_cases import (LM_CASES, LOOP_CASES, TRAINER_CASES, curve_counts, lm_loop_run, loop_run, state_fingerprint,
                        trainer_run)


def params_digest(model: torch.nn.Module) -> int:
    h = 0
    for _, p in sorted(model.state_dict().items()):
        h = zlib.crc32(p.detach().cpu().contiguous().numpy().tobytes(), h)
    return h


def refusals(out: Path) -> dict:
    """What the mixin says, on several processes, to settings it does not support."""
    from transformers import TrainingArguments

    from datadiet.integrations.hf import DataDietTrainer
    from dist_cases import planted

    said = {}
    for name, kw in (("fsdp", {"fsdp": "full_shard"}),):
        model, ds, collator = planted(16)
        try:
            args = TrainingArguments(output_dir=str(out / name), use_cpu=True, report_to=[], ddp_backend="gloo", **kw)
            DataDietTrainer(model=model, args=args, train_dataset=ds, data_collator=collator, method="random_skip")
            said[name] = None
        except Exception as e:  # noqa: BLE001 - the message is what the test checks
            said[name] = f"{type(e).__name__}: {e}"
    return said


def main() -> None:
    scenario, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    from datadiet.core.distributed import current, RankMismatchError

    ranks = current()
    result: dict = {"rank": ranks.rank, "world_size": ranks.world_size, "cases": {}}
    if scenario == "loop":
        for case in [*LOOP_CASES, *LM_CASES]:
            if case in LM_CASES:
                model, engine, res = lm_loop_run(case, out, ranks=ranks, per_rank_batch=4)
            else:
                model, engine, res = loop_run(case, ranks=ranks, per_rank_batch=4)
            result["cases"][case] = {
                "params": params_digest(model), "optimizer_steps": engine.counts.optimizer_steps,
                "backward_calls": len(res.losses), "losses": res.losses, "counts": {**engine.counts.as_dict(), "skipped": engine.skipped()},
                "global": engine.global_counts.as_dict(), "state": state_fingerprint(engine),
                "summary_world_size": engine.summary()["world_size"], "curve": curve_counts(res)}
            if ranks.rank == 0:
                torch.save(model.state_dict(), out / f"{case}.pt")
    elif scenario == "trainer":
        for case in TRAINER_CASES:
            t = trainer_run(case, out / case)
            e = t.datadiet_engine
            logs = [h for h in t.state.log_history if "datadiet/examples_seen" in h]
            result["cases"][case] = {
                "params": params_digest(t.model), "global_step": t.state.global_step,
                "optimizer_steps": e.counts.optimizer_steps, "counts": {**e.counts.as_dict(), "skipped": e.skipped()},
                "global": e.global_counts.as_dict(), "state": state_fingerprint(e), "last_log": logs[-1],
                "train_loss": t.state.log_history[-1].get("train_loss"), "n_train": len(t.train_dataset)}
            if ranks.rank == 0:
                torch.save(t.model.state_dict(), out / f"trainer-{case}.pt")
        result["refusals"] = refusals(out)
        # resume on 2 ranks: a run checkpointed every 4 steps, resumed from step 8, ends where it ends uninterrupted
        whole = trainer_run("multistage", out / "resume", save_steps=4)
        again = trainer_run("multistage", out / "resume_again", resume=str(out / "resume" / "checkpoint-8"))
        result["resume"] = {"whole": params_digest(whole.model), "resumed": params_digest(again.model),
                            "whole_counts": whole.datadiet_engine.global_counts.as_dict(),
                            "resumed_counts": again.datadiet_engine.global_counts.as_dict(),
                            "files": sorted(p.name for p in (out / "resume" / "checkpoint-8").glob("datadiet_state*"))}
    elif scenario == "mismatch":
        # rank 1 runs other filter settings (random_skip rate), then more batches than rank 0: both must raise
        for case, kw in (("rate", {"rate_by_rank": True}), ("batches", {"extra_batches_on_rank1": True})):
            try:
                loop_run("random_skip", ranks=ranks, per_rank_batch=4, **kw)
                result["cases"][case] = {"error": None}
            except RankMismatchError as e:
                result["cases"][case] = {"error": str(e)}
    write_and_leave(out, ranks.rank, result)

if __name__ == "__main__":
    main()
