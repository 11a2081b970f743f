#!/usr/bin/env bash
# Session 7, call 1: warp-per-row LayerNorm (forward, dx, the residual add fused into the forward), four-column
# parameter partials, elementwise quads, four-output split-K sums. CUDA tests of those classes, the kernel checks,
# one profiled bf16 + flash step (b32) against PyTorch.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O
M="bash .gpu/run .gpu/Memopt.Tests/memopt.dll"
(MEMOPT_TEST_DEVICE=cuda timeout 240 bash .gpu/run .gpu/Memopt.Tests/Memopt.Tests.dll -class Memopt.Tests.Kernels.LayerNormTests -class Memopt.Tests.Kernels.Bf16RowKernelTests -class Memopt.Tests.Kernels.ElementwiseTests -class Memopt.Tests.Kernels.Bf16ElementwiseTests -class Memopt.Tests.Kernels.TensorCoreGemmTests 2>&1 | tail -3) > $O/tests.txt; cat $O/tests.txt
(for k in layernorm elementwise gelu; do timeout 90 $M check --device cuda --kernel $k; done) > $O/check.txt 2>&1; grep -E "^(layer|elem|gelu)|passed" $O/check.txt
REPEATS=10 PROFILE=1 BATCHES=32 TECHNIQUES=bf16_flash timeout 120 bash benchmarks/gpu/bench-step.sh $O/prof "--train-args=--fused-head" --top 40 > $O/prof.log 2>&1
grep -A48 "^bf16_flash" $O/prof/memopt_step.txt | cut -c1-120; tail -4 $O/prof.log
cd $O && tar czf prof.tgz prof prof.log && rm -rf prof prof.log
