#!/usr/bin/env bash
# Session 7, call 7: the code after the review's mends (one quad-kind check, one warp butterfly, Quad +, one strided
# sum, GELU's Φ from erfc below 0). CUDA tests of the touched classes, the kernel checks, one profiled bf16 + flash
# step (b32) against PyTorch.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O
M="bash .gpu/run .gpu/Memopt.Tests/memopt.dll"
(MEMOPT_TEST_DEVICE=cuda timeout 300 bash .gpu/run .gpu/Memopt.Tests/Memopt.Tests.dll -class Memopt.Tests.Kernels.LayerNormTests -class Memopt.Tests.Kernels.Bf16RowKernelTests -class Memopt.Tests.Kernels.ElementwiseTests -class Memopt.Tests.Kernels.Bf16ElementwiseTests -class Memopt.Tests.Kernels.FlashAttentionTests -class Memopt.Tests.Kernels.GradNormTests -class Memopt.Tests.Kernels.ReduceTests -class Memopt.Tests.Kernels.TensorCoreGemmTests -class Memopt.Tests.Kernels.CrossEntropyTests -class Memopt.Tests.Kernels.BiasAddTests -class Memopt.Tests.Kernels.EmbeddingTests 2>&1 | tail -3) > $O/tests.txt; cat $O/tests.txt
(for k in layernorm elementwise gelu grad_norm cross_entropy; do timeout 90 $M check --device cuda --kernel $k; done) > $O/check.txt 2>&1; grep -E "passed" $O/check.txt
REPEATS=10 PROFILE=1 BATCHES=32 TECHNIQUES=bf16_flash timeout 120 bash benchmarks/gpu/bench-step.sh $O/prof "--train-args=--fused-head" --top 45 > $O/prof.log 2>&1
grep -A8 "^bf16_flash" $O/prof/memopt_step.txt | cut -c1-120; grep -E "gelu|layernorm|grad_norm|flash_attention" $O/prof/memopt_step.txt | cut -c1-110; tail -4 $O/prof.log
cd $O && tar czf prof.tgz prof prof.log && rm -rf prof prof.log
