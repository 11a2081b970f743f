#!/usr/bin/env bash
# `memopt memory --measure` for every technique of the study (issue 8), on the GPU host:
#   bash benchmarks/gpu/memory-reports.sh OUTDIR [PRESET] [BATCH] [--no-trace]
# For each technique: OUTDIR/PRESET-bBATCH-TECHNIQUE.{txt,json,png} (report, exact bytes, memory over time) and
# .trace.json (Chrome trace of the measured steps; open in https://ui.perfetto.dev), then one line per technique
# (predicted vs measured tracked peak) in OUTDIR/summary.txt. Env: MEMOPT_DLL (default .gpu/Memopt.Tests/memopt.dll),
# TECHNIQUES (space-separated subset of the names below; default all), EXTRA (train flags added to every technique,
# e.g. "--fused-head"), SUFFIX (appended to every file name, e.g. "-fused") and PLOT (0: no PNG).
set -uo pipefail
out=${1:?OUTDIR}; preset=${2:-rtx5090}; batch=${3:-32}; trace=1
[ "${4:-}" = "--no-trace" ] && trace=0
m=${MEMOPT_DLL:-.gpu/Memopt.Tests/memopt.dll}
mkdir -p "$out"
bash .gpu/run $m info --device cuda >/dev/null 2>&1
seq=${SEQ:-256}  # the presets' T (lab4, rtx5090): windows T/4 and T/2
declare -A techniques=(
  [baseline]="" [bf16]="--bf16" [bf16_flash]="--bf16 --flash-attn"
  [bf16_flash_window$((seq/4))]="--bf16 --flash-attn --window-size $((seq/4))"
  [bf16_flash_window$((seq/2))]="--bf16 --flash-attn --window-size $((seq/2))"
  [checkpointing]="--gradient-checkpointing"
  [combined]="--bf16 --flash-attn --window-size $((seq/4)) --gradient-checkpointing")
for name in ${TECHNIQUES:-baseline bf16 bf16_flash bf16_flash_window$((seq/4)) bf16_flash_window$((seq/2)) checkpointing combined}; do
  base="$out/$preset-b$batch-$name${SUFFIX:-}"
  extra=(--json "$base.json")
  [ "${PLOT:-1}" = 1 ] && extra+=(--plot "$base.png")
  [ $trace = 1 ] && extra+=(--trace "$base.trace.json")
  bash .gpu/run $m memory --device cuda --preset "$preset" --batch-size "$batch" ${techniques[$name]} ${EXTRA:-} --measure --steps 3 \
    --cache-dir /tmp/cache --top 15 "${extra[@]}" > "$base.txt" 2>&1
  echo "$preset b$batch $name${SUFFIX:-} rc=$? $(grep -m1 '^peak (tracked)' "$base.txt" | tr -s ' ')" >> "$out/summary.txt"
done
cat "$out/summary.txt"
