#!/usr/bin/env bash
# Acceptance runs of the bf16 (issue 4) and flash/window (issue 5) techniques, on the GPU host:
#   bash benchmarks/gpu/precision-attention.sh OUTDIR bf16 PRESET "32 64 128" [TRAIN ARGS...]
#                                              one epoch, fp32 vs bf16, per batch size (e.g. --seed 3: names end in -seed3)
#   bash benchmarks/gpu/precision-attention.sh OUTDIR attention                 timed steps: naive vs flash, windows
# Each run writes its metrics JSON under OUTDIR/<preset>/ and one summary line to OUTDIR/summary.txt.
set -uo pipefail
out=${1:?OUTDIR}; mode=${2:?mode}
pack=${PACK:-.gpu}
m=${MEMOPT_DLL:-$pack/Runner/memopt.dll}
mkdir -p "$out"

run() { # name, then train arguments
  local name=$1; shift
  local dir="$out/$name"
  mkdir -p "$dir"
  bash $pack/run $m train --device cuda --cache-dir /tmp/cache --results-dir "$dir" "$@" > "$dir/train.log" 2>&1
  local rc=$?
  local f=$(ls "$dir"/*_metrics.json 2>/dev/null | head -1)
  if [ -n "$f" ]; then
    python3 - "$f" "$name" "$rc" >> "$out/summary.txt" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); m = d["metrics"]
print(f"{sys.argv[2]:<34} rc={sys.argv[3]} steps={m['steps']:>5} step_ms={m['step_ms_median']:8.2f} "
      f"epoch_s={m['epoch_seconds']:7.1f} val_ppl={m['val_perplexity']:8.3f} peak_MiB={m['peak_memory_bytes']/2**20:9.1f} "
      f"driver_MiB={(m.get('driver_used_bytes') or 0)/2**20:9.1f}")
PY
  else
    echo "$name rc=$rc (no metrics) $(tail -2 "$dir/train.log" | tr '\n' ' ')" >> "$out/summary.txt"
  fi
  tail -1 "$out/summary.txt"
}

case $mode in
  bf16)
    preset=${3:?preset}; batches=${4:-"32 64 128"}; shift 4 2>/dev/null || shift $#
    tag=$(echo "$*" | tr -d ' -'); tag=${tag:+-$tag}
    for b in $batches; do
      run "$preset-b$b-fp32$tag" --preset "$preset" --batch-size "$b" "$@"
      run "$preset-b$b-bf16$tag" --preset "$preset" --batch-size "$b" --bf16 "$@"
    done ;;
  attention)
    s=40
    run rtx5090-b128-bf16 --preset rtx5090 --batch-size 128 --bf16 --steps $s --eval-batches 2
    run rtx5090-b128-bf16-flash --preset rtx5090 --batch-size 128 --bf16 --flash-attn --steps $s --eval-batches 2
    run rtx5090-b128-fp32-flash --preset rtx5090 --batch-size 128 --flash-attn --steps $s --eval-batches 2
    for w in 64 128; do
      run rtx5090-b128-bf16-flash-w$w --preset rtx5090 --batch-size 128 --bf16 --flash-attn --window-size $w --steps $s --eval-batches 2
      run rtx5090-b128-bf16-naive-w$w --preset rtx5090 --batch-size 128 --bf16 --window-size $w --steps $s --eval-batches 2
    done
    run medium-b8-bf16-flash --preset medium --batch-size 8 --bf16 --flash-attn --steps 25 --eval-batches 2
    run medium-b8-bf16-flash-w256 --preset medium --batch-size 8 --bf16 --flash-attn --window-size 256 --steps 25 --eval-batches 2
    run medium-b8-bf16-naive --preset medium --batch-size 8 --bf16 --steps 25 --eval-batches 2 ;;
  *) echo "unknown mode $mode" >&2; exit 2 ;;
esac
