#!/usr/bin/env bash
# Session 5, call 7: the step matrix against PyTorch eager with everything of this session (multi-tensor optimizer,
# float4 chunk, 3xTF32): bf16 techniques with --fused-head, fp32 techniques with --fused-head --fp32-matmul 3xtf32.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O
(MEMOPT_TEST_DEVICE=cuda timeout 100 bash .gpu/run .gpu/Memopt.Tests/Memopt.Tests.dll -class Memopt.Tests.Kernels.GradNormTests -class Memopt.Tests.Kernels.AdamWTests 2>&1 | tail -3) > $O/tests.txt; cat $O/tests.txt
REPEATS=10 PROFILE=1 TECHNIQUES=baseline,checkpointing timeout 260 bash benchmarks/gpu/bench-step.sh $O/fp32 --top 15 "--train-args=--fused-head --fp32-matmul 3xtf32" > $O/fp32.log 2>&1
tail -10 $O/fp32.log
REPEATS=10 PROFILE=1 TECHNIQUES=bf16,bf16_flash,bf16_flash_window64,combined timeout 300 bash benchmarks/gpu/bench-step.sh $O/bf16 --top 15 "--train-args=--fused-head" > $O/bf16.log 2>&1
tail -16 $O/bf16.log
cd $O && tar czf steps.tgz fp32 bf16 fp32.log bf16.log && rm -rf fp32 bf16
