#!/usr/bin/env bash
# Session 5, call 4: fp32 kernels at two groups per SM and the float4 cross-entropy chunk: CUDA tests, check, and
# the fp32 techniques' steps against PyTorch eager (3xTF32, fused head), b32/64/128.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O
M=".gpu/Memopt.Tests/memopt.dll"
(MEMOPT_TEST_DEVICE=cuda timeout 200 bash .gpu/run .gpu/Memopt.Tests/Memopt.Tests.dll -class Memopt.Tests.Kernels.TensorCoreGemmTf32Tests -class Memopt.Tests.Kernels.CrossEntropyTests -class Memopt.Tests.Kernels.LinearCrossEntropyTests -class Memopt.Tests.Kernels.BiasAddTests 2>&1 | tail -8) > $O/tests.txt
cat $O/tests.txt
timeout 60 bash .gpu/run $M check --device cuda --kernel cross_entropy 2>&1 | tail -8 | tee $O/check.txt
REPEATS=10 PROFILE=1 TECHNIQUES=baseline,checkpointing BATCHES=32,64,128 timeout 330 bash benchmarks/gpu/bench-step.sh $O/step3x --top 12 "--train-args=--fused-head --fp32-matmul 3xtf32" > $O/step3x.log 2>&1
tail -9 $O/step3x.log
grep -A16 "^baseline  *32 " $O/step3x/memopt_step.txt | head -18
