#!/usr/bin/env bash
# Session 7, call 4: + the staged epilogue accumulating into a float32 C (the fused head's dW). CUDA tests of the
# tensor-core GEMM and the fused head; 4096³ with a bf16 C in all four transposes, memopt twice and torch.matmul, in
# one call; one profiled bf16 + flash step (b32) against PyTorch.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O
M="bash .gpu/run .gpu/Memopt.Tests/memopt.dll"
(MEMOPT_TEST_DEVICE=cuda timeout 200 bash .gpu/run .gpu/Memopt.Tests/Memopt.Tests.dll -class Memopt.Tests.Kernels.TensorCoreGemmTests -class Memopt.Tests.Kernels.LinearCrossEntropyTests 2>&1 | tail -3) > $O/tests.txt; cat $O/tests.txt
for run in 1 2; do
  timeout 60 $M bench gemm --device cuda --sizes square --c-dtype bf16 --repeats 15 --simt-max-gflop 0 --out $O/g_$run.json > $O/g_$run.txt 2>&1
done
timeout 90 python3 benchmarks/pytorch/bench_gemm.py --sizes square --repeats 15 --dtypes bf16 --memopt $O/g_1.json > $O/torch_gemm.txt 2>&1
grep -E "square" $O/g_1.txt $O/g_2.txt | cut -c1-150; tail -8 $O/torch_gemm.txt
REPEATS=10 PROFILE=1 BATCHES=32 TECHNIQUES=bf16_flash timeout 120 bash benchmarks/gpu/bench-step.sh $O/prof "--train-args=--fused-head" --top 45 > $O/prof.log 2>&1
grep -A12 "^bf16_flash" $O/prof/memopt_step.txt | cut -c1-120; tail -4 $O/prof.log
cd $O && tar czf prof.tgz prof prof.log && rm -rf prof prof.log && tar czf gemm.tgz g_*.json g_*.txt torch_gemm.txt && rm -f g_*.json g_*.txt torch_gemm.txt
