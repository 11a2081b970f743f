#!/usr/bin/env bash
# The training issue's acceptance run and the runs that explain its gap (docs/results.md), on the GPU host:
#   bash benchmarks/gpu/train-lab4.sh OUTDIR
set -uo pipefail
out=${1:-gpu-out}
m=".gpu/Runner/memopt.dll"
mkdir -p "$out"
bash .gpu/run $m train --preset lab4 --device cuda --results-dir "$out/lab4-1epoch" --cache-dir /tmp/cache 2>&1 | tail -8 | tee "$out/lab4-1epoch.txt"
bash .gpu/run $m train --preset lab4 --device cuda --epochs 3 --technique baseline-3epochs --results-dir "$out/lab4-3epochs" --cache-dir /tmp/cache 2>&1 | tail -6 | tee "$out/lab4-3epochs.txt"
bash .gpu/run $m train --preset lab4 --device cuda --untied-head --technique baseline-untied --results-dir "$out/lab4-untied" --cache-dir /tmp/cache 2>&1 | tail -6 | tee "$out/lab4-untied.txt"
bash .gpu/run $m train --preset rtx5090 --device cuda --steps 100 --results-dir "$out/rtx5090" --cache-dir /tmp/cache 2>&1 | tail -6 | tee "$out/rtx5090-b32-100steps.txt"
