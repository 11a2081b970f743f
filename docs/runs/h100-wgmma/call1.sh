#!/usr/bin/env bash
# Session 8, call 1: the 64-deep tile on wgmma (sm_90a PTX loaded through ILGPU). ptxas's view of the four layouts,
# the wgmma CUDA tests with both readings of the MN-major descriptor offsets, then 4096³ bf16-C on mma.sync and wgmma
# against torch.matmul in the same call.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O
M="bash .gpu/run .gpu/Memopt.Tests/memopt.dll"
T="bash .gpu/run .gpu/Memopt.Tests/Memopt.Tests.dll"
PTXAS=$(command -v ptxas || echo /usr/local/cuda/bin/ptxas)
timeout 120 $M bench gemm --device cuda --sizes 256x256x256 --ptx $O/k --repeats 1 --simt-max-gflop 0 > $O/ptx.txt 2>&1; tail -3 $O/ptx.txt
for l in 12 13 14 15; do echo "layout $l"; timeout 60 $PTXAS -arch=sm_90a -v $O/k.wgmma.$l.ptx -o /dev/null 2>&1 | grep -v "^$" | tail -4; done > $O/ptxas.txt 2>&1; cat $O/ptxas.txt
rm -f $O/k.*.ptx
(MEMOPT_TEST_DEVICE=cuda timeout 240 $T -class Memopt.Tests.Kernels.WgmmaGemmTests 2>&1 | tail -25) > $O/tests-wgmma.txt; tail -4 $O/tests-wgmma.txt
(MEMOPT_WGMMA_MN_SWAP=1 MEMOPT_TEST_DEVICE=cuda timeout 240 $T -class Memopt.Tests.Kernels.WgmmaGemmTests 2>&1 | tail -25) > $O/tests-wgmma-swap.txt; tail -4 $O/tests-wgmma-swap.txt
for mma in mma wgmma; do
  timeout 150 $M bench gemm --device cuda --sizes square --c-dtype bf16 --repeats 15 --simt-max-gflop 0 --tc-mma $mma --out $O/g_$mma.json > $O/g_$mma.txt 2>&1
  grep -E "square|wgmma" $O/g_$mma.txt | cut -c1-140
done
MEMOPT_WGMMA_MN_SWAP=1 timeout 150 $M bench gemm --device cuda --sizes square --c-dtype bf16 --repeats 15 --simt-max-gflop 0 --tc-mma wgmma --out $O/g_wgmma_swap.json > $O/g_wgmma_swap.txt 2>&1
grep -E "square" $O/g_wgmma_swap.txt | cut -c1-140
timeout 150 python3 benchmarks/pytorch/bench_gemm.py --sizes square --repeats 15 --dtypes bf16 --memopt $O/g_wgmma.json > $O/torch.txt 2>&1; tail -8 $O/torch.txt
