#!/usr/bin/env bash
# Session 6, call 5: everything of this session (staged epilogue, bias loads up front, the head's bias in the logits
# GEMM, the chunk kernel's loads in flight, GELU quads). CUDA tests; the head's dx and dW GEMMs by tile; the step
# matrix against PyTorch eager (bf16 techniques with --fused-head, fp32 ones with --fused-head --fp32-matmul 3xtf32);
# one profiled bf16 + flash step.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O
M="bash .gpu/run .gpu/Memopt.Tests/memopt.dll"
(MEMOPT_TEST_DEVICE=cuda timeout 200 bash .gpu/run .gpu/Memopt.Tests/Memopt.Tests.dll -class Memopt.Tests.Kernels.TensorCoreGemmTests -class Memopt.Tests.Kernels.LinearCrossEntropyTests -class Memopt.Tests.Kernels.CrossEntropyTests -class Memopt.Tests.Kernels.ElementwiseTests -class Memopt.Tests.Kernels.Bf16ElementwiseTests 2>&1 | tail -3) > $O/tests.txt; cat $O/tests.txt
timeout 60 $M bench gemm --device cuda --sizes 2048x256x50264:nn,50264x256x2048:tn --tiles auto,wide,widedeep --repeats 7 --simt-max-gflop 0 > $O/head_gemms.txt 2>&1; cat $O/head_gemms.txt
REPEATS=10 PROFILE=1 BATCHES=32 TECHNIQUES=bf16_flash timeout 100 bash benchmarks/gpu/bench-step.sh $O/prof "--train-args=--fused-head" --top 25 > $O/prof.log 2>&1
grep -A32 "^bf16_flash" $O/prof/memopt_step.txt | cut -c1-120
REPEATS=10 PROFILE=0 TECHNIQUES=bf16,bf16_flash,bf16_flash_window64,combined timeout 180 bash benchmarks/gpu/bench-step.sh $O/bf16 "--train-args=--fused-head" > $O/bf16.log 2>&1
tail -16 $O/bf16.log
REPEATS=10 PROFILE=0 TECHNIQUES=baseline,checkpointing timeout 200 bash benchmarks/gpu/bench-step.sh $O/fp32 "--train-args=--fused-head --fp32-matmul 3xtf32" > $O/fp32.log 2>&1
tail -10 $O/fp32.log
cd $O && tar czf steps.tgz prof prof.log bf16 bf16.log fp32 fp32.log && rm -rf prof prof.log bf16 bf16.log fp32 fp32.log
