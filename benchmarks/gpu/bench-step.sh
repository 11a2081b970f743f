#!/usr/bin/env bash
# Training-step benchmark, memopt and PyTorch side by side: `memopt bench step` and benchmarks/pytorch/bench_step.py
# with the same preset, techniques, batch sizes, warm-up and timed steps, both on uniformly random tokens.
# On the GPU host, from the repository root:
#   bash benchmarks/gpu/bench-step.sh OUTDIR [more `memopt bench step` options, e.g. --top 40]
# Writes OUTDIR/memopt_step.{json,txt} (with --profile: per-kernel times of one step per configuration),
# OUTDIR/torch_step.{json,txt} and OUTDIR/side_by_side.txt; with KERNELS=1 also OUTDIR/memopt_kernels.{json,txt}.
# Environment: MEMOPT_DLL (default .gpu/Memopt.Tests/memopt.dll, run through `bash .gpu/run`), PRESET (rtx5090),
# BATCHES (32,64,128), TECHNIQUES (empty: the study's six), WARMUP (3), REPEATS (15), PROFILE (1), KERNELS (0),
# PYTHON (python3), TORCH_TF32 (0; 1: PyTorch with TF32 allowed, to compare with --train-args=--tf32).
set -uo pipefail
out=${1:-gpu-out}
shift || true
dll=${MEMOPT_DLL:-.gpu/Memopt.Tests/memopt.dll}
preset=${PRESET:-rtx5090}
batches=${BATCHES:-32,64,128}
warmup=${WARMUP:-3}
repeats=${REPEATS:-15}
python=${PYTHON:-python3}
mkdir -p "$out"
profile=()
[ "${PROFILE:-1}" = 1 ] && profile=(--profile)
techniques=()
[ -n "${TECHNIQUES:-}" ] && techniques=(--techniques "$TECHNIQUES")

bash .gpu/run "$dll" bench step --device cuda --preset "$preset" --batch-sizes "$batches" --warmup "$warmup" \
  --repeats "$repeats" --random-tokens "${techniques[@]}" "${profile[@]}" --out "$out/memopt_step.json" "$@" 2>&1 | tee "$out/memopt_step.txt"
memopt_rc=${PIPESTATUS[0]}

"$python" benchmarks/pytorch/bench_step.py --preset "$preset" --batch-sizes "$batches" --warmup "$warmup" \
  --repeats "$repeats" "${techniques[@]}" $( [ "${TORCH_TF32:-0}" = 1 ] && echo --tf32 ) --out "$out/torch_step.json" \
  $( [ -f "$out/memopt_step.json" ] && echo --memopt "$out/memopt_step.json" --table "$out/side_by_side.txt" ) \
  2>&1 | tee "$out/torch_step.txt"
torch_rc=${PIPESTATUS[0]}

kernels_rc=0
if [ "${KERNELS:-0}" = 1 ]; then
  bash .gpu/run "$dll" bench kernels --device cuda --preset "$preset" --out "$out/memopt_kernels.json" 2>&1 | tee "$out/memopt_kernels.txt"
  kernels_rc=${PIPESTATUS[0]}
fi
echo "exit codes: memopt step $memopt_rc, pytorch $torch_rc, memopt kernels $kernels_rc"
[ "$memopt_rc" = 0 ] && [ "$torch_rc" = 0 ] && [ "$kernels_rc" = 0 ]
