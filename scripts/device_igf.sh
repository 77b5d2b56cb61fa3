#!/usr/bin/env bash
# The IGF GPU suite on a bare accelerator machine (issue 17). Prepare here once:
#     .venv/bin/python scripts/device_pack.py        # writes .device/ (git-ignored)
# The GGUF travels in parts (each device call carries at most 64 MiB): one device call per part,
# back to back (the machine stays warm about 30 s between calls), the last one runs the suite:
#     run(command="bash scripts/device_igf.sh receive", carry=[".device/common", ".device/p0"])
#     run(command="bash scripts/device_igf.sh receive", carry=[".device/common", ".device/p1"])
#     run(command="bash scripts/device_igf.sh run",     carry=[".device/common", ".device/p2"], timeout_s=600)
# `run` also works in one call when every part is carried (a machine that takes more than 64 MiB).
# Results land in $OUT/igf_gpu_60 and $OUT/igf_gpu_20 (results.jsonl, report.md) and $OUT/device.log, also
# when DEVICE_BUDGET_S (default 540 s) stops a suite; a second `run` call on a warm machine resumes.
# Locally, for a dry check on CPU: OUT=/tmp/out DEVICE_SUITE_ARGS="--dry-run" bash scripts/device_igf.sh run
set -euo pipefail
STAGE="${1:?usage: device_igf.sh receive|run}"
STORE="${DEVICE_STORE:-/tmp/datadiet_device}"
OUT="${OUT:?OUT must name the folder for results}"
mkdir -p "$STORE/parts" "$OUT"
for d in .device/p*; do [ -d "$d" ] && cp "$d"/* "$STORE/parts/"; done
echo "parts on this machine: $(ls "$STORE/parts" | tr '\n' ' ')"
[ "$STAGE" = receive ] && exit 0
[ "$STAGE" = run ] || { echo "unknown stage $STAGE (receive|run)"; exit 2; }

PY="${PYTHON:-python3}"
MANIFEST=.device/common/manifest.json
GGUF_NAME=$("$PY" -c "import json;print(json.load(open('$MANIFEST'))['gguf'])")
WANT=$("$PY" -c "import json;print(json.load(open('$MANIFEST'))['sha256'])")
if [ ! -f "$STORE/$GGUF_NAME" ]; then
  cat "$STORE"/parts/"$GGUF_NAME".part* > "$STORE/$GGUF_NAME.tmp"
  GOT=$(sha256sum "$STORE/$GGUF_NAME.tmp" | cut -d' ' -f1)
  if [ "$GOT" != "$WANT" ]; then
    echo "the model parts on this machine do not add up ($(ls "$STORE/parts" | wc -l) parts; sha256 $GOT, want $WANT):"
    echo "send every part with 'receive' calls first (the machine must stay warm between calls)"; exit 3
  fi
  mv "$STORE/$GGUF_NAME.tmp" "$STORE/$GGUF_NAME"
fi
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$STORE/site" \
  .device/common/wheels/*.whl
export PYTHONPATH="$PWD/src:$STORE/site" DATADIET_CACHE="$STORE/cache" PYTHONUNBUFFERED=1
REL=$("$PY" -c "import json;print(json.load(open('$MANIFEST'))['austen_rel'])")
mkdir -p "$DATADIET_CACHE/debs/r-cran-janeaustenr/$REL"
cp .device/common/austen/* "$DATADIET_CACHE/debs/r-cran-janeaustenr/$REL/"
"$PY" - "$STORE/$GGUF_NAME" "$DATADIET_CACHE/models/smollm2-135m" <<'PYEOF'
import sys
from pathlib import Path
from datadiet.models.registry import convert_gguf
out = Path(sys.argv[2])
if not ((out / "config.json").exists() and any(out.glob("*.safetensors"))):
    convert_gguf(Path(sys.argv[1]), out)
PYEOF
{ nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU"; \
  "$PY" -c "import torch,transformers;print('torch',torch.__version__,'transformers',transformers.__version__,'cuda',torch.cuda.is_available())"; } \
  | tee "$OUT/device.log"
# 60 steps first (the paper's horizon), then 20; the harness folder stays on the machine (a second `run` call on a
# warm machine resumes), and what finished is copied to $OUT even when the time budget stops a suite
copy_back() { for h in ${DEVICE_HORIZONS:-60 20}; do if [ -f "$STORE/igf_gpu_$h/results.jsonl" ]; then mkdir -p "$OUT/igf_gpu_$h"
  cp "$STORE/igf_gpu_$h"/results.jsonl "$OUT/igf_gpu_$h/"; cp "$STORE/igf_gpu_$h"/report.md "$OUT/igf_gpu_$h/" 2>/dev/null || true; fi; done; }
trap copy_back EXIT
END=$(( $(date +%s) + ${DEVICE_BUDGET_S:-540} ))
for h in ${DEVICE_HORIZONS:-60 20}; do
  LEFT=$(( END - $(date +%s) )); [ "$LEFT" -gt 20 ] || break
  # shellcheck disable=SC2086
  timeout "$LEFT" "$PY" -m datadiet bench --suite "${DEVICE_SUITE:-igf_gpu}" --out "$STORE/igf_gpu_$h" -q \
    --set train.max_steps=$h ${DEVICE_SUITE_ARGS:-} 2>&1 | tee -a "$OUT/device.log" || true
done
