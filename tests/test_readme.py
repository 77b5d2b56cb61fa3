"""Every ```python block of README.md runs as written, with tiny stand-ins for the real assets.

The only changes made to a block before it runs (``SUBSTITUTIONS``, plain string replacement):

- ``"minilm"`` -> ``"tiny-bert"`` and ``"smollm2-135m"`` -> ``"tiny-llama"``: random models built
  from configs instead of the real weights (same tokenizer interface, seconds instead of minutes);
- ``max_train=2000`` -> ``max_train=64``: 64 Rotten Tomatoes snippets instead of 2,000;
- ``"configs/rotten_tomatoes.yaml"`` -> ``configs/tiny.yaml`` (absolute path): the tiny run config.

A block that starts with ``# continuing from the snippet above`` runs after the block before it,
in the same namespace, as a reader pasting them one after the other would. Each block runs in a
fresh temporary working directory (its output folders land there).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CONTINUES = "# continuing from the snippet above"

SUBSTITUTIONS = {
    '"minilm"': '"tiny-bert"',
    '"smollm2-135m"': '"tiny-llama"',
    "max_train=2000": "max_train=64",
    '"configs/rotten_tomatoes.yaml"': json.dumps(str(ROOT / "configs" / "tiny.yaml")),
}

#: the mixin bug that breaks DataDietMixin + TRL's SFTTrainer (see tests/test_trl.py, NO_GRAD_OUTPUTS_BUG).

def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), flags=re.S | re.M)


BLOCKS = python_blocks()


def tiny(code: str) -> str:
    for old, new in SUBSTITUTIONS.items():
        code = code.replace(old, new)
    return code


def chain(i: int) -> list[int]:
    """Block ``i`` and the blocks it continues, first to last."""
    return (chain(i - 1) if BLOCKS[i].startswith(CONTINUES) and i > 0 else []) + [i]


def test_readme_has_python_blocks_and_every_substitution_is_used():
    assert len(BLOCKS) >= 5
    text = "\n".join(BLOCKS)
    assert all(old in text for old in SUBSTITUTIONS), [old for old in SUBSTITUTIONS if old not in text]
    assert not BLOCKS[0].startswith(CONTINUES)
    for i, code in enumerate(BLOCKS):
        compile(code, f"README.md python block {i}", "exec")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("i", range(len(BLOCKS)), ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_block_runs(i, tmp_path, monkeypatch):
    if any(name in BLOCKS[i] for name in ("from trl", "from peft")):
        pytest.importorskip("trl")
        pytest.importorskip("peft")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATADIET_CACHE", str(tmp_path / "cache"))
    namespace: dict = {"__name__": "__readme__"}
    for j in chain(i):
        exec(compile(tiny(BLOCKS[j]), f"README.md python block {j}", "exec"), namespace)
