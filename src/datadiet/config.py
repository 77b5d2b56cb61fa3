"""Run configuration: typed sections, strict keys, YAML files and ``key=value`` overrides."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ._validate import check_bool, check_mapping, check_real, check_size, check_str
from .core.params import Check, int_at_least, one_of, optional
from .errors import ConfigError, suggest


# Every field declares its check beside it (``_f(default, check)``): a ``core.params`` check,
# ``check(key, value) -> value``, run by :meth:`RunConfig.validate` with the dotted key
# ("train.bf16"), so each message names the key, the value given and what is allowed.
def _f(default: Any, check: Check, *, factory: Any = None) -> Any:
    meta = {"check": check}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _text(default: str | None, what: str = "a non-empty string") -> Any:
    """A string field (``optional`` when the default is None). A bare number or yes/no (``run_name=5``,
    ``run_name: 010``) is refused with the fix, quote it: YAML reads those as numbers or true/false and
    may already have changed them (``010`` reads as 8), so taking them back as text could be wrong."""
    check = lambda name, v: check_str(name, v, what=what)  # noqa: E731
    return _f(default, optional(check) if default is None else check)


def _real(default: float, lo: float | None = None, hi: float | None = None, **open_: bool) -> Any:
    return _f(default, lambda name, v: check_real(name, v, min=lo, max=hi, **open_))


_SEED = int_at_least(0, 2**32 - 1)


@dataclass
class DataConfig:
    name: str = _text("rotten_tomatoes", "a name or a path (a string)")
    text_column: str = _text("text", "a column name (a string)")
    text_pair_column: str | None = _text(None, "a column name (a string)")
    label_column: str = _text("label", "a column name (a string)")
    task: str | None = _f(None, optional(one_of("classification", "causal_lm")))  # inferred when omitted
    test_size: float | int | None = _f(None, optional(check_size))  # built-in default when omitted
    test_file: str | None = _text(None, "the path of a data file (a string)")
    max_train: int | None = _f(None, optional(int_at_least(1)))  # stratified subsample of the train split
    max_test: int | None = _f(None, optional(int_at_least(1)))
    split_seed: int = _f(0, _SEED)  # fixed: the split does not change with the training seed
    context_length: int = _f(64, int_at_least(2))  # causal LM: tokens per context
    max_contexts: int | None = _f(None, optional(int_at_least(1)))  # causal LM: subsample of train contexts
    # a selection file (`datadiet select`): train on those examples only
    selection: str | None = _text(None, "the path of a selection file (from `datadiet select`)")
    # flip this share of training labels (seeded by split_seed): planted noise
    label_noise: float = _real(0.0, 0.0, 1.0, max_open=True)


@dataclass
class ModelConfig:
    name: str = _text("minilm", "a name or a path (a string)")
    max_length: int = _f(64, int_at_least(2))  # classification: truncation length


@dataclass
class TrainConfig:
    epochs: int = _f(1, int_at_least(1))
    # stop after this many optimizer steps (passes over the data as needed)
    max_steps: int | None = _f(None, optional(int_at_least(1)))
    batch_size: int = _f(16, int_at_least(1))
    eval_batch_size: int = _f(64, int_at_least(1))
    lr: float = _real(1e-4, 0.0, min_open=True)
    weight_decay: float = _real(0.01, 0.0)
    warmup: float = _real(0.0, 0.0, 1.0)  # fraction of the run
    schedule: str = _f("linear", one_of("linear", "constant"))
    # what "progress" means for the LR schedule
    schedule_by: str = _f("examples", one_of("examples", "steps"))
    max_grad_norm: float = _real(1.0, 0.0)
    bf16: bool = _f(True, check_bool)  # bf16 autocast on CPU/GPU
    fused_adamw: bool = _f(True, check_bool)
    threads: int | None = _f(None, optional(int_at_least(1)))  # torch intra-op threads (None: torch default)
    # torch.use_deterministic_algorithms for the run (on CUDA also deterministic cuBLAS / cuDNN); a CPU run
    # with a fixed seed and thread count is already bit-identical on the same machine without it
    deterministic: bool = _f(False, check_bool)
    # auto (cuda when available, else cpu) | cpu | cuda | cuda:N (checked when the device is opened)
    device: str = _text("auto", "a device name (auto, cpu, cuda or cuda:N)")
    seed: int = _f(0, _SEED)
    eval_every: int | None = _f(None, optional(int_at_least(1)))  # learning-curve evaluations every this many eval_by units
    # what eval_every counts: optimizer steps, or examples seen (every method then gets points at the same
    # places of its pass over the data as full training, however many examples it skips)
    eval_by: str = _f("steps", one_of("steps", "examples"))
    eval_max_examples: int | None = _f(512, optional(int_at_least(1)))  # examples for intermediate evaluations, evenly spaced over the test split


@dataclass
class MethodConfig:
    name: str = _text("full", "a name or a path (a string)")
    params: dict[str, Any] = _f(None, check_mapping, factory=dict)  # checked by the method itself


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    output_dir: str = _text("runs", "a folder path (a string)")
    run_name: str | None = _text(None, "a folder name (a string)")
    overwrite: bool = _f(False, check_bool)

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
        """Check (and normalise: 1 -> 1.0 for a float) every field by the check declared beside it."""
        _check_fields(self, "")


def _check_fields(obj: Any, prefix: str) -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _check_fields(value, f"{prefix}{f.name}.")
        elif f.metadata.get("check") is not None:
            setattr(obj, f.name, f.metadata["check"](prefix + f.name, value))


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


def describe(value: Any) -> str:
    """What a YAML document holds, in words: 'a list', 'a number (42)', ..."""
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return f"true/false ({value})"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    return f"a {type(value).__name__}"


def read_yaml_file(path: str | Path, *, what: str, example: str) -> Any:
    """The YAML document in ``path``; a missing file, a folder, binary data or invalid YAML is a
    :class:`ConfigError` (one line) naming the file and the fault. ``what``: "config file", ...;
    ``example``: a good file to point at."""
    p = Path(path)
    name = repr(str(p))
    if not p.exists():
        raise ConfigError(f"{what} {name} does not exist; see {example} for an example")
    if p.is_dir():
        raise ConfigError(f"{what} {name} is a folder, not a YAML file; give the path of a {what} such as {example}")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {what} {name}: {e.strerror or e}; check the path and its permissions") from None
    not_text = f"{what} {name} is not a text file"
    fix = f"give a YAML {what} such as {example}"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{not_text} (byte {e.start} is not UTF-8 text); {fix}") from None
    try:
        return yaml.safe_load(text)
    except yaml.reader.ReaderError as e:  # a control character such as NUL: binary data
        raise ConfigError(f"{not_text} (it holds the control character #x{e.character:04x} at position "
                          f"{e.position}); {fix}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {name} is not valid YAML: {_yaml_problem(e)}") from None


def _yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error on one line: the problem and where it is."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None)
    if problem and mark is not None:
        context = getattr(e, "context", None)
        return (f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
                + (f" ({context})" if context else ""))
    return " ".join(str(e).split())


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config (or start from defaults when ``path`` is None) and apply overrides."""
    d: dict[str, Any] = {}
    if path is not None:
        d = read_yaml_file(path, what="config file", example="configs/tiny.yaml")
        if d is None:
            d = {}
        if not isinstance(d, dict):
            raise ConfigError(f"config file {str(path)!r} must be a mapping of sections (data:, model:, train:, "
                              f"method:), but it holds {describe(d)}; see configs/tiny.yaml for an example")
    return RunConfig.from_dict(apply_overrides(d, overrides or []))
