#!/usr/bin/env bash
# Session 6, call 4: the chunk kernel's four loads in one basic block (clamped indices), the head's bias in the
# logits GEMM's epilogue. CUDA tests, checks, the kernel benchmark, then profiled steps (bf16 + flash and the fp32
# baseline under 3xTF32, batch 32).
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O
M="bash .gpu/run .gpu/Memopt.Tests/memopt.dll"
(MEMOPT_TEST_DEVICE=cuda timeout 150 bash .gpu/run .gpu/Memopt.Tests/Memopt.Tests.dll -class Memopt.Tests.Kernels.CrossEntropyTests -class Memopt.Tests.Kernels.LinearCrossEntropyTests 2>&1 | tail -3) > $O/tests.txt; cat $O/tests.txt
timeout 120 $M check --device cuda --kernel cross_entropy > $O/check.txt 2>&1; tail -6 $O/check.txt
timeout 120 $M bench kernels --device cuda --kernels cross_entropy --out $O/kernels.json > $O/kernels.txt 2>&1; cat $O/kernels.txt
REPEATS=10 PROFILE=1 BATCHES=32 TECHNIQUES=bf16_flash timeout 150 bash benchmarks/gpu/bench-step.sh $O/prof-bf16 "--train-args=--fused-head" --top 25 > $O/prof-bf16.log 2>&1
REPEATS=10 PROFILE=1 BATCHES=32 TECHNIQUES=baseline timeout 150 bash benchmarks/gpu/bench-step.sh $O/prof-fp32 "--train-args=--fused-head --fp32-matmul 3xtf32" --top 25 > $O/prof-fp32.log 2>&1
grep -A34 "^bf16_flash" $O/prof-bf16/memopt_step.txt | cut -c1-120; tail -4 $O/prof-bf16.log
grep -A34 "^baseline" $O/prof-fp32/memopt_step.txt | cut -c1-120; tail -4 $O/prof-fp32.log
cd $O && tar czf prof.tgz prof-bf16 prof-fp32 prof-bf16.log prof-fp32.log kernels.json && rm -rf prof-bf16 prof-fp32 prof-bf16.log prof-fp32.log kernels.json
