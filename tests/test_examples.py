"""The user scripts in examples/ run (``--tiny``: tiny models built from configs, data built in the script)
and print their final datadiet counts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

#: the mixin bug that breaks DataDietMixin + TRL's SFTTrainer (see tests/test_trl.py, NO_GRAD_OUTPUTS_BUG).
def run_example(name: str, tmp_path: Path) -> tuple[str, dict[str, float]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), "--tiny", "--out", str(tmp_path / "out")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-4000:]
    counts = {m[1]: float(m[2]) for m in re.finditer(r"^(datadiet/[\w/]+): ([-+0-9.e]+)$", proc.stdout, re.M)}
    assert {"datadiet/examples_seen", "datadiet/examples_backpropagated", "datadiet/optimizer_steps"} <= counts.keys(), \
        proc.stdout
    return proc.stdout, counts


def skipped(counts: dict[str, float]) -> dict[str, float]:
    return {k.removeprefix("datadiet/skipped/"): v for k, v in counts.items() if k.startswith("datadiet/skipped/")}


@pytest.mark.timeout(180)
def test_trainer_multistage_example(tmp_path):
    _, c = run_example("trainer_multistage.py", tmp_path)
    s = skipped(c)
    assert s and set(s) <= {"loss_threshold", "meta_predictor"}, s
    assert c["datadiet/examples_backpropagated"] + sum(s.values()) == c["datadiet/examples_seen"]


@pytest.mark.timeout(180)
def test_trainer_data_diet_example(tmp_path):
    out, c = run_example("trainer_data_diet.py", tmp_path)
    m = re.search(r"trained on (\d+) of (\d+) examples", out)
    assert m and 0 < int(m[1]) < int(m[2]), out
    assert c["datadiet/examples_seen"] == c["datadiet/examples_backpropagated"] == 2 * int(m[1])  # 2 epochs
    assert c["datadiet/selection_s"] >= 0


@pytest.mark.timeout(180)
def test_sft_lora_example(tmp_path):
    pytest.importorskip("trl")
    pytest.importorskip("peft")
    _, c = run_example("sft_lora.py", tmp_path)
    s = skipped(c)
    assert s.get("selective_backprop", 0) > 0, c
    assert c["datadiet/examples_backpropagated"] + sum(s.values()) == c["datadiet/examples_seen"]
