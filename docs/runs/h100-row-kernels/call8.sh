#!/usr/bin/env bash
# Session 7, call 8: GELU's Φ from one erfc whatever the sign (call 7's branch cost 11 µs a call). CUDA tests of the
# elementwise classes and the bf16 model, the gelu check, one profiled bf16 + flash step (b32) against PyTorch.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O
M="bash .gpu/run .gpu/Memopt.Tests/memopt.dll"
(MEMOPT_TEST_DEVICE=cuda timeout 200 bash .gpu/run .gpu/Memopt.Tests/Memopt.Tests.dll -class Memopt.Tests.Kernels.ElementwiseTests -class Memopt.Tests.Kernels.Bf16ElementwiseTests -class Memopt.Tests.Model.Bf16ModelTests 2>&1 | tail -3) > $O/tests.txt; cat $O/tests.txt
timeout 90 $M check --device cuda --kernel gelu > $O/check.txt 2>&1; grep -E "gelu|passed" $O/check.txt
REPEATS=10 PROFILE=1 BATCHES=32 TECHNIQUES=bf16_flash timeout 120 bash benchmarks/gpu/bench-step.sh $O/prof "--train-args=--fused-head" --top 45 > $O/prof.log 2>&1
grep -A4 "^bf16_flash" $O/prof/memopt_step.txt | cut -c1-120; grep -E "gelu" $O/prof/memopt_step.txt | cut -c1-110; tail -4 $O/prof.log
cd $O && tar czf prof.tgz prof prof.log && rm -rf prof prof.log
