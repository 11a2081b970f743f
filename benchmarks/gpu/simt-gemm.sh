#!/usr/bin/env bash
# The fp32 SIMT GEMM on the GPU (issue 9). Prepare on a dev machine, from the repository root:
#   ../shared/tools/gpu-pack src/Runner && dotnet publish tests -c Release -o .gpu/Memopt.Tests --nologo -v q
#   cp benchmarks/pytorch/bench_gemm.py .gpu/          # optional: torch fp32/bf16 on the same shapes
# then on the GPU host (device tool: carry [".gpu"]), from the repository root, in two calls (each < 10 minutes):
#   bash benchmarks/gpu/simt-gemm.sh $OUT check   # GEMM tests on CUDA, PTX, every SIMT tile at 4096³, registers
#   bash benchmarks/gpu/simt-gemm.sh $OUT shapes  # default plans at 4096³, the rtx5090 Linear and attention shapes; torch
set -uo pipefail
out=${1:-gpu-out}
part=${2:-check}
mkdir -p "$out"
M="bash .gpu/run .gpu/Memopt.Tests/memopt.dll"
strip() { sed 's/\x1b\[[0-9;]*m//g'; }
if [ "$part" = check ]; then
  nvidia-smi --query-gpu=name,clocks.max.sm,driver_version --format=csv | tee "$out/nvidia-smi.txt"
  # MatMulTests/Bf16MatMulTests run both kernel paths; TiledGemmTests runs every tile, split count and layout on CUDA.
  MEMOPT_TEST_DEVICE=cuda timeout 300 bash .gpu/run .gpu/Memopt.Tests/Memopt.Tests.dll -class Memopt.Tests.Kernels.MatMulTests \
    -class Memopt.Tests.Kernels.Bf16MatMulTests -class Memopt.Tests.Kernels.TiledGemmTests 2>&1 | strip > "$out/tests-cuda.txt"
  tail -2 "$out/tests-cuda.txt"; grep -E "\[FAIL\]" "$out/tests-cuda.txt"
  # Each SIMT tile at 4096³ in the four transposes (the PTX of each tile goes to $out/gemm.simt.TILE.ptx).
  $M bench gemm --device cuda --sizes square --simt-tiles t128x128,t128x64,t256x32 --ptx "$out/gemm" \
    --out "$out/simt_square_tiles.json" 2>&1 | strip | tee "$out/simt_square_tiles.txt"
  if command -v ptxas > /dev/null; then
    for f in "$out"/gemm.simt.*.ptx; do ptxas -arch=sm_90 -v "$f" -o /dev/null 2>&1 | tail -2; done | tee "$out/ptxas.txt"
  fi
else
  $M bench gemm --device cuda --sizes square,model,attention --rows 8192,16384,32768 \
    --out "$out/memopt_gemm.json" 2>&1 | strip | tee "$out/memopt_gemm.txt"
  if [ -f .gpu/bench_gemm.py ]; then
    python3 .gpu/bench_gemm.py --sizes square,model --rows 8192,16384,32768 --out "$out/torch_gemm.json" \
      --memopt "$out/memopt_gemm.json" 2>&1 | tee "$out/torch_gemm.txt"
  fi
fi
