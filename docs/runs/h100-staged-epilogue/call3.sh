#!/usr/bin/env bash
# Session 6, call 3: the cross-entropy chunk folding 16 logits per block (AddBlock) with four quads in flight.
# CUDA tests, checks against the CPU reference, the kernel benchmark, then the step matrix against PyTorch eager
# (bf16 techniques with --fused-head; fp32 techniques with --fused-head --fp32-matmul 3xtf32), b32/64/128.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O
M="bash .gpu/run .gpu/Memopt.Tests/memopt.dll"
(MEMOPT_TEST_DEVICE=cuda timeout 150 bash .gpu/run .gpu/Memopt.Tests/Memopt.Tests.dll -class Memopt.Tests.Kernels.CrossEntropyTests -class Memopt.Tests.Kernels.LinearCrossEntropyTests 2>&1 | tail -3) > $O/tests.txt; cat $O/tests.txt
timeout 120 $M check --device cuda --kernel cross_entropy > $O/check.txt 2>&1; tail -6 $O/check.txt
timeout 120 $M bench kernels --device cuda --kernels cross_entropy --out $O/kernels.json > $O/kernels.txt 2>&1; cat $O/kernels.txt
REPEATS=10 PROFILE=0 TECHNIQUES=bf16,bf16_flash,bf16_flash_window64,combined timeout 200 bash benchmarks/gpu/bench-step.sh $O/bf16 "--train-args=--fused-head" > $O/bf16.log 2>&1
tail -16 $O/bf16.log
REPEATS=10 PROFILE=0 TECHNIQUES=baseline,checkpointing timeout 230 bash benchmarks/gpu/bench-step.sh $O/fp32 "--train-args=--fused-head --fp32-matmul 3xtf32" > $O/fp32.log 2>&1
tail -10 $O/fp32.log
cd $O && tar czf steps.tgz bf16 bf16.log fp32 fp32.log kernels.json && rm -rf bf16 bf16.log fp32 fp32.log kernels.json
