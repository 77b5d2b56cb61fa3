#!/usr/bin/env bash
# Regime A on a bare GPU machine within a short window (issue "evidence at scale", item 7): the suite
# src/datadiet/bench/suites/regime_a_gpu.yaml (health_tweets, whole training split, one epoch, MiniLM bf16:
# full, selective_backprop, loss_threshold, multistage_moving_d30, each with its matched random_skip, ingenious
# and random_subset at 25%), seed 0 first, then seeds 1 and 2 while the time budget lasts.
#
# Prepare here once (writes .device/minilm/, git-ignored, ~34 MiB: MiniLM as bf16 byte planes, its tokenizer
# and config, the health-tweets zip, manifest.json with bytes and sha256):
#     .venv/bin/python scripts/device_pack_minilm.py
# then one device call (the tracked tree, ~19 MiB, travels too: 64 MiB in all):
#     run(command="bash benchmarks/gpu_check.sh", carry=[".device/minilm"], timeout_s=540)
# On the device the pack is checked against its manifest and laid out as stand-ins for the two asset
# packages under $DEVICE_STORE/site (on PYTHONPATH; the weights widened back to float32), so datadiet finds
# MiniLM and health_tweets as it does here. What finished is copied to $OUT/regime_a_gpu (results.jsonl,
# report.md, report.html, suite.json) and $OUT/device.log, also when DEVICE_BUDGET_S (default 480 s) stops
# the suite; a second call on a warm machine resumes (the results folder stays in $DEVICE_STORE).
#
# Knobs: DEVICE_BUDGET_S (480), DEVICE_SEEDS (3: seeds 0..N-1), DEVICE_STORE (/tmp/datadiet_device),
# DEVICE_PACK (.device/minilm), PYTHON (python3), DEVICE_SUITE_ARGS (more `datadiet bench` arguments).
# Dry check here on CPU with the tiny random model and a few hundred examples (about a minute):
#     OUT=/tmp/out PYTHON=.venv/bin/python DEVICE_DRY=1 bash benchmarks/gpu_check.sh
set -euo pipefail
OUT="${OUT:?OUT must name the folder for results}"
STORE="${DEVICE_STORE:-/tmp/datadiet_device}"
PACK="${DEVICE_PACK:-.device/minilm}"
PY="${PYTHON:-python3}"
SUITE=regime_a_gpu
RES="$STORE/$SUITE"
END=$(( $(date +%s) + ${DEVICE_BUDGET_S:-480} ))
mkdir -p "$STORE" "$OUT"
[ -f "$PACK/manifest.json" ] || { echo "no $PACK/manifest.json: run scripts/device_pack_minilm.py here and carry $PACK"; exit 2; }

SITE=$("$PY" scripts/device_pack_minilm.py unpack "$STORE" --out "$PACK")
export PYTHONPATH="$PWD/src:$SITE" DATADIET_CACHE="$STORE/cache" PYTHONUNBUFFERED=1
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU"
  "$PY" -c "import torch,transformers,datadiet;print('torch',torch.__version__,'transformers',transformers.__version__,
'datadiet',datadiet.__version__,'cuda',torch.version.cuda,torch.cuda.is_available() and torch.cuda.get_device_name(0))"
  "$PY" -c "from datadiet.models.registry import minilm_folder;from datadiet.data.builtin import _health_tweets as h
print('minilm from',minilm_folder());print('health_tweets',len(h()),'rows')"; } 2>&1 | tee -a "$OUT/device.log"

EXTRA=()
if [ -n "${DEVICE_DRY:-}" ]; then  # CPU dry check: tiny random model, a few hundred examples, float32
  EXTRA=(--set model.name=tiny-bert data.max_train=256 data.max_test=128 train.device=cpu train.bf16=false
         train.fused_adamw=false train.eval_every=64 train.eval_max_examples=128 train.threads=1)
fi

copy_back() {
  [ -f "$RES/results.jsonl" ] || return 0
  mkdir -p "$OUT/$SUITE"
  # a stopped suite writes no report: make one from what finished
  [ "$RES/report.md" -nt "$RES/results.jsonl" ] || "$PY" -m datadiet -q report "$RES" >>"$OUT/device.log" 2>&1 || true
  for f in results.jsonl report.md report.html suite.json; do [ -f "$RES/$f" ] && cp "$RES/$f" "$OUT/$SUITE/"; done
  echo "copied to $OUT/$SUITE: $(ls "$OUT/$SUITE" | tr '\n' ' ')" | tee -a "$OUT/device.log"
}
trap copy_back EXIT

# seed 0 for every cell first, then the same suite with seeds 0..k (same name: finished cells are skipped)
for k in $(seq 1 "${DEVICE_SEEDS:-3}"); do
  LEFT=$(( END - $(date +%s) )); [ "$LEFT" -gt 30 ] || { echo "budget spent before seeds 0..$((k-1))" | tee -a "$OUT/device.log"; break; }
  SEEDS=$(seq -s, 0 $((k - 1)))
  sed "s/^seeds: .*/seeds: [$SEEDS]/" "src/datadiet/bench/suites/$SUITE.yaml" > "$STORE/$SUITE.yaml"
  echo "== seeds [$SEEDS], $LEFT s left" | tee -a "$OUT/device.log"
  # shellcheck disable=SC2086
  timeout "$LEFT" "$PY" -m datadiet bench --suite "$STORE/$SUITE.yaml" --out "$RES" -q --no-report \
    "${EXTRA[@]}" ${DEVICE_SUITE_ARGS:-} 2>&1 | tee -a "$OUT/device.log" || true
done
