#!/usr/bin/env bash
# Session 6, call 2: the cross-entropy chunk with four quads in flight per thread. Checks against the CPU reference,
# CUDA tests, the kernel benchmark, then bf16 steps with the per-kernel profile (top 25).
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O
M="bash .gpu/run .gpu/Memopt.Tests/memopt.dll"
(MEMOPT_TEST_DEVICE=cuda timeout 150 bash .gpu/run .gpu/Memopt.Tests/Memopt.Tests.dll -class Memopt.Tests.Kernels.CrossEntropyTests -class Memopt.Tests.Kernels.LinearCrossEntropyTests 2>&1 | tail -3) > $O/tests.txt; cat $O/tests.txt
timeout 120 $M check --device cuda --kernel cross_entropy > $O/check.txt 2>&1; tail -12 $O/check.txt
timeout 120 $M bench kernels --device cuda --kernels cross_entropy --out $O/kernels.json > $O/kernels.txt 2>&1; cat $O/kernels.txt
REPEATS=10 PROFILE=1 BATCHES=32 TECHNIQUES=bf16,bf16_flash timeout 200 bash benchmarks/gpu/bench-step.sh $O/prof "--train-args=--fused-head" --top 25 > $O/prof.log 2>&1
grep -A28 "bf16_flash.b32\b" $O/prof/memopt_step.txt | head -60; tail -5 $O/prof.log
cd $O && tar czf prof.tgz prof prof.log kernels.json && rm -rf prof prof.log kernels.json
