#!/usr/bin/env bash
# Session 6, call 1: the staged epilogue of the 64-deep tile. CUDA tests of the tensor-core GEMM (the staged theory
# runs the real kernel), the short-K products and 4096³ with a bf16 C, staged (auto) against direct stores in one
# call, torch.matmul on the same sizes, then the bf16 step matrix against PyTorch eager.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O
M="bash .gpu/run .gpu/Memopt.Tests/memopt.dll"
(MEMOPT_TEST_DEVICE=cuda timeout 150 bash .gpu/run .gpu/Memopt.Tests/Memopt.Tests.dll -class Memopt.Tests.Kernels.TensorCoreGemmTests -class Memopt.Tests.Kernels.LinearCrossEntropyTests 2>&1 | tail -6) > $O/tests.txt; cat $O/tests.txt
S=2048x50264x256:nt,8192x1024x256:nt,8192x768x256:nt,8192x256x1024:nn,square
for run in 1 2; do
  timeout 60 $M bench gemm --device cuda --sizes $S --c-dtype bf16 --repeats 7 --simt-max-gflop 0 --out $O/g_staged_$run.json > $O/g_staged_$run.txt 2>&1
  timeout 60 $M bench gemm --device cuda --sizes $S --c-dtype bf16 --repeats 7 --simt-max-gflop 0 --tc-stores direct --out $O/g_direct_$run.json > $O/g_direct_$run.txt 2>&1
done
timeout 90 python3 benchmarks/pytorch/bench_gemm.py --sizes $S --repeats 7 --dtypes bf16 --memopt $O/g_staged_1.json > $O/torch_gemm.txt 2>&1
cat $O/g_staged_1.txt $O/g_direct_1.txt $O/g_staged_2.txt $O/g_direct_2.txt | grep -v "^deep"; tail -12 $O/torch_gemm.txt
REPEATS=10 PROFILE=0 TECHNIQUES=bf16,bf16_flash,bf16_flash_window64,combined timeout 280 bash benchmarks/gpu/bench-step.sh $O/bf16 "--train-args=--fused-head" > $O/bf16.log 2>&1
tail -16 $O/bf16.log
cd $O && tar czf gemm.tgz g_*.json g_*.txt torch_gemm.txt && rm -f g_*.json g_*.txt && tar czf steps.tgz bf16 bf16.log && rm -rf bf16 bf16.log
