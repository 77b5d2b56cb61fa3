"""Run configuration: typed sections, strict keys, YAML files and ``key=value`` overrides."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ._validate import check_choice, check_float, check_int
from .errors import ConfigError, suggest


@dataclass
class DataConfig:
    name: str = "rotten_tomatoes"
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    task: str | None = None  # inferred from the dataset when omitted
    test_size: float | int | None = None  # built-in default when omitted
    test_file: str | None = None
    max_train: int | None = None  # stratified subsample of the train split
    max_test: int | None = None
    split_seed: int = 0  # fixed: the split does not change with the training seed
    context_length: int = 64  # causal LM: tokens per context
    max_contexts: int | None = None  # causal LM: subsample of train contexts
    selection: str | None = None  # a selection file (`datadiet select`): train on those examples only
    label_noise: float = 0.0  # flip this share of training labels (seeded by split_seed): planted noise


@dataclass
class ModelConfig:
    name: str = "minilm"
    max_length: int = 64  # classification: truncation length


@dataclass
class TrainConfig:
    epochs: int = 1
    max_steps: int | None = None  # stop after this many optimizer steps (passes over the data as needed)
    batch_size: int = 16
    eval_batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup: float = 0.0  # fraction of the run
    schedule: str = "linear"  # linear | constant
    schedule_by: str = "examples"  # examples | steps: what "progress" means for the LR schedule
    max_grad_norm: float = 1.0
    bf16: bool = True  # bf16 autocast on CPU/GPU
    fused_adamw: bool = True
    threads: int | None = None  # torch intra-op threads (None: torch default)
    device: str = "auto"  # auto (cuda when available, else cpu) | cpu | cuda | cuda:N
    seed: int = 0
    eval_every: int | None = None  # optimizer steps between learning-curve evaluations
    eval_max_examples: int | None = 512  # examples used for intermediate evaluations


@dataclass
class MethodConfig:
    name: str = "full"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    output_dir: str = "runs"
    run_name: str | None = None
    overwrite: bool = False

    # --------------------------------------------------------------- conversion
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> RunConfig:
        d = copy.deepcopy(d or {})
        if not isinstance(d, dict):
            raise ConfigError(f"a config must be a mapping of sections, got {type(d).__name__}")
        _check_keys(d, cls, "")
        sections = {}
        for f in dataclasses.fields(cls):
            if f.name in d and dataclasses.is_dataclass(f.default_factory() if callable(f.default_factory) else None):
                sub = d[f.name]
                if sub is None:
                    sub = {}
                if not isinstance(sub, dict):
                    raise ConfigError(f"config section {f.name!r} must be a mapping, got {sub!r}")
                sections[f.name] = type(f.default_factory())(**sub)
        top = {k: v for k, v in d.items() if k not in sections}
        cfg = cls(**sections, **top)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        for key, v in (("data.name", self.data.name), ("model.name", self.model.name), ("method.name", self.method.name)):
            if not isinstance(v, str) or not v.strip():
                raise ConfigError(f"{key} must be a name or a path (a string), got {v!r}; quote it if it looks like a number")
        t = self.train
        t.epochs = check_int("train.epochs", t.epochs, min=1)
        if t.max_steps is not None:
            t.max_steps = check_int("train.max_steps", t.max_steps, min=1)
        t.batch_size = check_int("train.batch_size", t.batch_size, min=1)
        t.eval_batch_size = check_int("train.eval_batch_size", t.eval_batch_size, min=1)
        t.lr = check_float("train.lr", t.lr, min=0.0, min_open=True)
        t.weight_decay = check_float("train.weight_decay", t.weight_decay, min=0.0)
        t.warmup = check_float("train.warmup", t.warmup, min=0.0, max=1.0)
        check_choice("train.schedule", t.schedule, ("linear", "constant"))
        check_choice("train.schedule_by", t.schedule_by, ("examples", "steps"))
        t.max_grad_norm = check_float("train.max_grad_norm", t.max_grad_norm, min=0.0)
        t.seed = check_int("train.seed", t.seed, min=0)
        if t.threads is not None:
            check_int("train.threads", t.threads, min=1)
        if t.eval_every is not None:
            check_int("train.eval_every", t.eval_every, min=1)
        check_int("model.max_length", self.model.max_length, min=2)
        check_int("data.context_length", self.data.context_length, min=2)
        for k in ("max_train", "max_test", "max_contexts"):
            v = getattr(self.data, k)
            if v is not None:
                check_int(f"data.{k}", v, min=1)
        check_float("data.label_noise", self.data.label_noise, min=0.0, max=1.0, max_open=True)
        if self.data.selection is not None and (not isinstance(self.data.selection, str) or not self.data.selection.strip()):
            raise ConfigError(f"data.selection must be the path of a selection file (from `datadiet select`), "
                              f"got {self.data.selection!r}")
        if self.data.task is not None:
            check_choice("data.task", self.data.task, ("classification", "causal_lm"))
        if not isinstance(self.method.params, dict):
            raise ConfigError(f"method.params must be a mapping, got {self.method.params!r}")


def _check_keys(d: dict[str, Any], cls: type, prefix: str) -> None:
    names = {f.name: f for f in dataclasses.fields(cls)}
    for k, v in d.items():
        if k not in names:
            raise ConfigError(
                f"unknown config key {prefix + k!r}.{suggest(k, names)} "
                f"Valid keys{' in ' + prefix.rstrip('.') if prefix else ''}: {', '.join(names)}"
            )
        f = names[k]
        sub = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(sub) and isinstance(v, dict):
            _check_keys(v, type(sub), f"{prefix}{k}.")


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key=value, e.g. train.lr=5e-5")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {item!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(d: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``d`` with ``section.key=value`` overrides applied (values parsed as YAML)."""
    d = copy.deepcopy(d)
    for item in overrides or []:
        path, value = parse_override(item)
        node = d
        for p in path[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
        node[path[-1]] = value
    return d


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config (or start from defaults when ``path`` is None) and apply overrides."""
    d: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {str(p)!r} does not exist; see configs/ for examples")
        try:
            d = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from None
    return RunConfig.from_dict(apply_overrides(d, overrides or []))
