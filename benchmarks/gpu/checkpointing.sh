#!/usr/bin/env bash
# Gradient checkpointing, fp32 baseline: peak memory and step time against the number of checkpointed blocks.
# On the GPU host:  bash benchmarks/gpu/checkpointing.sh OUTDIR
set -uo pipefail
out=${1:-gpu-out}
m=".gpu/Runner/memopt.dll"
mkdir -p "$out"
run() {  # preset batch label flags...
  local preset=$1 batch=$2 label=$3; shift 3
  bash .gpu/run $m train --preset $preset --device cuda --batch-size $batch --steps 25 --eval-batches 2 --technique "$label" \
    --results-dir "$out/$preset" --checkpoint /tmp/ck.safetensors --cache-dir /tmp/cache "$@" 2>&1 |
    grep -E "^(step|memory) " | sed "s/^/$preset b$batch $label: /" | tee -a "$out/checkpointing.txt"
}
for preset in rtx5090 medium; do
  batch=32; [ $preset = medium ] && batch=8
  run $preset $batch off
  run $preset $batch every4 --gradient-checkpointing --checkpoint-every 4
  run $preset $batch every2 --gradient-checkpointing --checkpoint-every 2
  run $preset $batch every1 --gradient-checkpointing --checkpoint-every 1
done
