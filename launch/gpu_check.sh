#!/usr/bin/env bash
# One command for the GPU figures of issue #19 on a bare GPU machine (PyTorch present, no
# network), in under 8 minutes:
#   1. installs hydra-core, omegaconf, diffusers, open_clip, wandb ... from a wheel folder
#      (pip install --no-index --find-links "$WHEELS"; skipped where they import already);
#   2. builds the real-format stand-ins (python -m cosy_bench.bench.standins) and runs the
#      headline sweep on them (explainer=invert,clip_dissect,milan x model=resnet18,vit_b16)
#      with the documented local-input overrides, 1024 px images, batches of 8, then
#      python -m cosy_bench.report on it;
#   3. bench synthesis for SDXL's and Stable Cascade's shapes, bench activations --decode gpu;
#   4. prints one table: step, seconds, status.
# Usage:   WHEELS=/path/to/wheels bash launch/gpu_check.sh [--dry-run]
# --dry-run (or GPU_CHECK_DRY=1): the same steps on the CPU at tiny sizes (tested in CI:
# tests/test_gpu_check.py). OUT=... chooses the work folder (default: a temporary one);
# GPU_CHECK_EXPLAINERS=... the sweep's explainers (default invert,clip_dissect,milan).
set -u
DRY=${GPU_CHECK_DRY:-0}
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    -h|--help) sed -n "2,/^set -u/{/^#/p}" "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $arg (use --dry-run)" >&2; exit 2 ;;
  esac
done
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$(mktemp -d -t gpu_check.XXXXXX)}
PY=${PYTHON:-python}
mkdir -p "$OUT"
export COSY_CACHE_DIR="$OUT/cache" WANDB_MODE=disabled HF_HUB_OFFLINE=1 PYTHONPATH="$REPO"
cd "$REPO"

if [ "$DRY" = 1 ]; then
  SIZE=64; CASCADE_SIZE=128; SAMPLE=8; BATCH=2; STEPS=1; SCALE=16; DEVICE=cpu; IMAGES=2; TRAINER=cpu
else
  SIZE=1024; CASCADE_SIZE=1024; SAMPLE=128; BATCH=8; STEPS=20; SCALE=1; DEVICE=cuda; IMAGES=8; TRAINER=gpu
fi
TABLE="$OUT/table.tsv"
printf "step\tseconds\tstatus\n" > "$TABLE"

step() {  # step NAME COMMAND...: runs it, logs to $OUT/NAME.log, one table row
  local name=$1; shift
  local start=$(date +%s.%N)
  "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  local secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
  printf "%s\t%s\t%s\n" "$name" "$secs" "$([ $rc = 0 ] && echo ok || echo "FAILED rc=$rc ($OUT/$name.log)")" >> "$TABLE"
  return 0
}

install() {
  if $PY -c "import hydra, omegaconf, diffusers, open_clip, wandb, lightning" 2>/dev/null; then
    echo "packages present"; return 0
  fi
  if [ -z "${WHEELS:-}" ]; then echo "set WHEELS=<folder of wheels>" >&2; return 1; fi
  $PY -m pip install --no-index --find-links "$WHEELS" -e "$REPO"
}

sweep() {
  local inputs; inputs=$($PY -m cosy_bench.bench.standins "$OUT/standins" \
      --image-size "$SIZE" --sample-size "$SAMPLE") || return 1
  export TORCH_HOME="$OUT/standins/torch"
  # shellcheck disable=SC2086  # the second line holds the overrides, one word each
  $PY -m cosy_bench -m explainer="${GPU_CHECK_EXPLAINERS:-invert,clip_dissect,milan}" \
      model=resnet18,vit_b16 \
      $(echo "$inputs" | tail -n 1) model.milan_checkpoint=random \
      layer=output "neurons.ids=[0,1,2,3]" \
      n_images="$IMAGES" generator_batch_size="$BATCH" generator.num_inference_steps="$STEPS" \
      generator.height="$SIZE" generator.width="$SIZE" trainer="$TRAINER" logger=none \
      hydra.sweep.dir="$OUT/sweep" \
    && $PY -m cosy_bench.report "$OUT/sweep"
}

step install install
step sweep sweep
step synthesis_sdxl $PY -m cosy_bench.bench synthesis --model sdxl --size "$SIZE" \
  --steps "$STEPS" --images "$IMAGES" --batch "$BATCH" --scale "$SCALE" --device "$DEVICE" \
  --skip-authors
step synthesis_cascade $PY -m cosy_bench.bench synthesis --model stable_cascade \
  --size "$CASCADE_SIZE" --steps "$STEPS" --images "$IMAGES" --batch "$BATCH" --scale "$SCALE" \
  --device "$DEVICE" --skip-authors
step activations_gpu_decode $PY -m cosy_bench.bench activations --decode gpu \
  --images "$((IMAGES * 8))" --device "$DEVICE" --folder "$OUT/jpegs"

echo "== gpu_check ($([ "$DRY" = 1 ] && echo dry run, CPU || echo GPU)): $OUT"
column -t -s $'\t' "$TABLE" 2>/dev/null || cat "$TABLE"
! grep -q FAILED "$TABLE"
