#!/usr/bin/env bash
# Session 6, call 7: the code after the review's mends. CUDA tests of the cross-entropy and flash-attention classes,
# the cross-entropy and grad-norm kernel checks, one profiled bf16 + flash step.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O
M="bash .gpu/run .gpu/Memopt.Tests/memopt.dll"
(MEMOPT_TEST_DEVICE=cuda timeout 200 bash .gpu/run .gpu/Memopt.Tests/Memopt.Tests.dll -class Memopt.Tests.Kernels.CrossEntropyTests -class Memopt.Tests.Kernels.LinearCrossEntropyTests -class Memopt.Tests.Kernels.FlashAttentionTests 2>&1 | tail -3) > $O/tests.txt; cat $O/tests.txt
timeout 120 $M check --device cuda --kernel cross_entropy > $O/check.txt 2>&1; timeout 120 $M check --device cuda --kernel grad_norm >> $O/check.txt 2>&1; grep -E "^(cross|grad)|passed" $O/check.txt
REPEATS=10 PROFILE=1 BATCHES=32 TECHNIQUES=bf16_flash timeout 100 bash benchmarks/gpu/bench-step.sh $O/prof "--train-args=--fused-head" --top 12 > $O/prof.log 2>&1
grep -A9 "^bf16_flash" $O/prof/memopt_step.txt | cut -c1-120; tail -4 $O/prof.log
cd $O && tar czf prof.tgz prof prof.log && rm -rf prof prof.log
