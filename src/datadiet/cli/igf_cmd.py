"""``datadiet igf``: collect IG pairs and train IGF's secondary learner once, into a reusable file."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .common import EXIT_OK, add_config_args, add_param_args, echo, load_cfg, out_file, parse_params

log = logging.getLogger(__name__)


def add_igf(p: argparse.ArgumentParser) -> None:
    add_config_args(p, required=False)
    add_param_args(p, "igf parameter, e.g. -p n_pairs=400 ig_estimate=first_order learner_lr=1e-4 (values parsed "
                      "as YAML; override the config's method.params when its method is igf)")
    p.add_argument("--out", metavar="FILE.pt",
                   help="learner file to write (default: OUTPUT_DIR/igf/DATA-MODEL-learner.pt)")


def cmd_igf(args: argparse.Namespace) -> int:
    from ..methods.igf.learner import save_learner
    from ..methods.igf.method import IGF
    from ..methods.registry import build_method
    from ..runner import prepare

    cfg = load_cfg(args)
    params = {**(dict(cfg.method.params) if cfg.method.name == IGF.name else {}), **parse_params(args.params)}
    params.pop("learner", None)  # this command makes the learner
    method = build_method(IGF.name, params)
    out = Path(args.out) if args.out else (
        Path(cfg.output_dir) / "igf" / f"{cfg.data.name.replace('/', '_')}-{cfg.model.name.replace('/', '_')}-learner.pt")
    out_file(out, "--out" if args.out else "learner file", suffix=".pt")  # before collecting pairs, not after
    ds, lm, train, _test, _collator, _ = prepare(cfg)
    if ds.task != "causal_lm":
        from ..errors import DataDietError

        raise DataDietError(f"igf needs causal-LM text, but {cfg.data.name!r} is a {ds.task} dataset; use e.g. "
                            "data.name=austen with model.name=smollm2-135m")
    prep = method.prepare_learner(model=lm.model, dataset=train, model_name=cfg.model.name, bf16=cfg.train.bf16,
                                  progress=not args.quiet)
    save_learner(prep.learner, out, meta=prep.meta)
    m = prep.meta
    fit = m.get("fit") or {}
    echo(f"IG pairs: {m['n_train_pairs']} to train, {m['n_val_pairs']} to validate ({method.ig_estimate}); "
         f"IG mean {m['ig_mean']:.4g}, std {m['ig_std']:.4g} (perplexity points)")
    if fit:
        pear = fit.get("val_pearson")
        echo(f"learner: validation MSE {fit['val_mse_at_init']:.4f} at init -> {fit['best_val_mse']:.4f} "
             f"(epoch {fit['best_epoch']}), Pearson r {pear if pear is None else f'{pear:.3f}'}")
    reused = " (from the cache; paid earlier)" if prep.reused_s >= prep.cost_s > 0 else ""
    echo(f"cost: {prep.cost_s:.1f} s (pairs {m.get('pairs_s', 0.0):.1f} s, learner {m.get('learner_s', 0.0):.1f} s){reused}")
    echo(f"learner file: {out}")
    echo(f"use with: datadiet train -c CONFIG --set method.name=igf method.params.learner={out}")
    return EXIT_OK
