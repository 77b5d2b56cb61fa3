"""Suite files: a grid of datasets x methods x seeds on one base configuration.

```yaml
name: smoke
description: what this suite measures
base:                       # a run config (data/model/train sections) applied to every cell
  model: {name: tiny-bert}
  train: {epochs: 1, batch_size: 16, threads: 2}
datasets:
  - rotten_tomatoes         # a name, or a mapping with per-dataset config overrides:
  - name: health_tweets
    config: {data: {max_train: 300}}
methods:
  - full                    # a name, or a mapping:
  - name: random_skip
    label: random_skip@selective_backprop   # unique within the suite (defaults to the name)
    params: {rate: "match:selective_backprop"}  # the realised skip rate of that label's cell
  - name: selective_backprop
seeds: [0, 1, 2]
```

Everything is validated before any cell runs: unknown datasets, models, methods, parameters and
config keys are refused naming the bad entry.
"""

from __future__ import annotations

import copy
import importlib.resources
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import RunConfig, apply_overrides, describe, read_yaml_file
from ..errors import ConfigError, DataDietError, suggest

MATCH = "match:"


@dataclass(frozen=True)
class MethodEntry:
    name: str
    label: str
    params: dict[str, Any] = field(default_factory=dict)

    def match_target(self) -> str | None:
        for v in self.params.values():
            if isinstance(v, str) and v.startswith(MATCH):
                return v[len(MATCH):]
        return None


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Cell:
    suite: str
    dataset: DatasetEntry
    method: MethodEntry
    seed: int

    @property
    def key(self) -> str:
        return f"{self.dataset.name}/{self.method.label}/s{self.seed}"

    @property
    def run_dir(self) -> str:
        safe = lambda s: s.replace("/", "_").replace("@", "_at_")  # noqa: E731
        return f"runs/{safe(self.dataset.name)}/{safe(self.method.label)}/s{self.seed}"


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    base: dict[str, Any]
    datasets: list[DatasetEntry]
    methods: list[MethodEntry]
    seeds: list[int]
    source: str = ""

    def cell_config(self, cell: Cell, *, params: dict[str, Any] | None = None) -> RunConfig:
        d = _merge(copy.deepcopy(self.base), cell.dataset.config)
        d.setdefault("data", {})["name"] = cell.dataset.name
        d.setdefault("train", {})["seed"] = cell.seed
        d["method"] = {"name": cell.method.name, "params": dict(params if params is not None else cell.method.params)}
        return RunConfig.from_dict(d)

    def cells(self) -> list[Cell]:
        """Every cell, ordered dataset -> seed -> method, with match targets before their matchers."""
        order = _topo(self.methods)
        return [Cell(self.name, d, m, s) for d in self.datasets for s in self.seeds for m in order]


def _merge(a: dict, b: dict) -> dict:
    for k, v in (b or {}).items():
        if isinstance(v, dict) and isinstance(a.get(k), dict):
            _merge(a[k], v)
        else:
            a[k] = copy.deepcopy(v)
    return a


def _topo(methods: list[MethodEntry]) -> list[MethodEntry]:
    done: list[MethodEntry] = []
    pending = list(methods)
    while pending:
        progressed = False
        for m in list(pending):
            t = m.match_target()
            if t is None or any(d.label == t for d in done):
                done.append(m)
                pending.remove(m)
                progressed = True
        if not progressed:
            raise ConfigError(f"suite methods have a cycle of 'match:' references: {[m.label for m in pending]}")
    return done


def builtin_suites() -> dict[str, Path]:
    root = importlib.resources.files("datadiet.bench") / "suites"
    return {p.name[:-5]: Path(str(p)) for p in root.iterdir() if p.name.endswith(".yaml")}


def portable_source(source: str) -> str:
    """``source`` as a results folder records it: a built-in suite by its place in the package, not by where this
    machine installed it (a committed ``suite.json`` then reads the same on every machine); any other file as given."""
    try:
        here = Path(source).resolve()
        for name, path in builtin_suites().items():
            if path.resolve() == here:
                return f"datadiet.bench/suites/{name}.yaml (built-in)"
    except (OSError, ValueError):
        pass
    return source


def resolve_suite_path(name_or_file: str) -> Path:
    p = Path(name_or_file)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise DataDietError(f"suite file {name_or_file!r} does not exist")
        return p
    known = builtin_suites()
    if name_or_file not in known:
        raise DataDietError(
            f"unknown suite {name_or_file!r}.{suggest(name_or_file, known)} Built-in suites: "
            f"{', '.join(sorted(known))}; or give a path to a suite YAML file."
        )
    return known[name_or_file]


def _example() -> str:
    """A good suite file to point at in a message: the built-in smoke suite, where it is installed."""
    return str(builtin_suites().get("smoke", "the built-in suites (datadiet bench --suite smoke)"))


def load_suite(name_or_file: str, *, overrides: list[str] | None = None) -> Suite:
    """Read and fully validate a suite (``overrides`` apply to its ``base`` config, e.g. ``train.epochs=1``)."""
    path = resolve_suite_path(name_or_file)
    raw = read_yaml_file(path, what="suite file", example=_example())
    return parse_suite({} if raw is None else raw, source=str(path), overrides=overrides)


def parse_suite(raw: dict[str, Any], *, source: str = "<dict>", overrides: list[str] | None = None) -> Suite:
    where = f"suite {source}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: the suite file must be a mapping (name:, base:, datasets:, methods:, seeds:), "
                          f"but it holds {describe(raw)}; see {_example()} for an example")
    allowed = {"name", "description", "base", "datasets", "methods", "seeds"}
    for k in raw:
        if k not in allowed:
            raise ConfigError(f"{where}: unknown key {k!r}.{suggest(k, allowed)} Valid keys: {', '.join(sorted(allowed))}")
    for k, noun, form in (("datasets", "dataset", "{name, config}"), ("methods", "method", "{name, label, params}")):
        v = raw.get(k)
        if isinstance(v, str) and v.strip():
            raise ConfigError(f"{where}: {k} must be a list of {noun} names, got the string {v!r}; "
                              f"write {k}: [{v}]")
        if v and not isinstance(v, list):
            raise ConfigError(f"{where}: {k} must be a list of {noun} names (or {form} mappings), got {v!r}; "
                              f"write one entry per line, each starting with '- '")
        if not v:
            raise ConfigError(f"{where}: '{k}' must list at least one entry")
    base = raw.get("base")
    if base is not None and not isinstance(base, dict):
        raise ConfigError(f"{where}: base must be a run config mapping (data:, model:, train:, method: sections), "
                          f"got {base!r}")
    base = apply_overrides(base or {}, overrides or [])
    datasets = []
    for i, d in enumerate(raw["datasets"]):
        if isinstance(d, str):
            datasets.append(DatasetEntry(d))
        elif isinstance(d, dict) and "name" in d and set(d) <= {"name", "config"}:
            cfg = d.get("config")
            if cfg is not None and not isinstance(cfg, dict):
                raise ConfigError(f"{where}: datasets[{i}].config must be a mapping of config sections "
                                  f"(e.g. {{data: {{max_train: 300}}}}), got {cfg!r}")
            datasets.append(DatasetEntry(str(d["name"]), cfg or {}))
        else:
            raise ConfigError(f"{where}: datasets[{i}] must be a name or {{name, config}}, got {d!r}")
    methods = []
    for i, m in enumerate(raw["methods"]):
        if isinstance(m, str):
            methods.append(MethodEntry(m, m))
        elif isinstance(m, dict) and "name" in m and set(m) <= {"name", "label", "params"}:
            params = m.get("params")
            if params is not None and not isinstance(params, dict):
                raise ConfigError(f"{where}: methods[{i}].params must be a mapping of parameter names to values "
                                  f"(e.g. {{rate: 0.5}}), got {params!r}")
            methods.append(MethodEntry(str(m["name"]), str(m.get("label") or m["name"]), dict(params or {})))
        else:
            raise ConfigError(f"{where}: methods[{i}] must be a name or {{name, label, params}}, got {m!r}")
    labels = [m.label for m in methods]
    dup = {x for x in labels if labels.count(x) > 1}
    if dup:
        raise ConfigError(f"{where}: method labels must be unique; repeated: {sorted(dup)}. Give each a 'label'.")
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        hint = f"; write seeds: [{seeds}]" if isinstance(seeds, int) and not isinstance(seeds, bool) else ""
        raise ConfigError(f"{where}: seeds must be a non-empty list of non-negative integers, got {seeds!r}{hint}")
    suite = Suite(name=str(raw.get("name") or Path(source).stem), description=str(raw.get("description") or ""),
                  base=base, datasets=datasets, methods=methods, seeds=list(seeds), source=source)
    validate_suite(suite)
    return suite


def validate_suite(suite: Suite) -> None:
    """Check every cell's names, parameters and config keys before any work starts."""
    from ..methods.registry import METHODS
    from ..runner import check_config

    labels = {m.label for m in suite.methods}
    for m in suite.methods:
        if m.name not in METHODS:
            raise ConfigError(
                f"suite {suite.name!r}: unknown method {m.name!r} (entry {m.label!r}).{suggest(m.name, METHODS)} "
                f"Known methods: {', '.join(METHODS)}"
            )
        t = m.match_target()
        if t is not None and t not in labels:
            raise ConfigError(f"suite {suite.name!r}: method {m.label!r} matches {t!r}, which is not a method label in this suite ({', '.join(sorted(labels))})")
    for d in suite.datasets:
        for m in suite.methods:
            params = {k: (0.5 if isinstance(v, str) and v.startswith(MATCH) else v) for k, v in m.params.items()}
            try:
                cfg = suite.cell_config(Cell(suite.name, d, m, suite.seeds[0]), params=params)
                check_config(cfg)
            except DataDietError as e:
                raise type(e)(f"suite {suite.name!r}, dataset {d.name!r}, method {m.label!r}: {e}") from None
