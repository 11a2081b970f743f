#!/usr/bin/env bash
# Session 7, call 3: + the chunk kernel at 512 threads per row, quad embedding lookup and flash-attention delta/dq
# passes, grad-norm and single-group sums with four loads in flight. CUDA tests of the changed classes, kernel checks,
# one profiled bf16 + flash step (b32) against PyTorch.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O
M="bash .gpu/run .gpu/Memopt.Tests/memopt.dll"
(MEMOPT_TEST_DEVICE=cuda timeout 300 bash .gpu/run .gpu/Memopt.Tests/Memopt.Tests.dll -class Memopt.Tests.Kernels.EmbeddingTests -class Memopt.Tests.Kernels.FlashAttentionTests -class Memopt.Tests.Kernels.FlashAttentionTensorCoreTests -class Memopt.Tests.Kernels.GradNormTests -class Memopt.Tests.Kernels.ReduceTests -class Memopt.Tests.Kernels.CrossEntropyTests -class Memopt.Tests.Kernels.LinearCrossEntropyTests -class Memopt.Tests.Kernels.LayerNormTests -class Memopt.Tests.Kernels.ElementwiseTests 2>&1 | tail -3) > $O/tests.txt; cat $O/tests.txt
(for k in cross_entropy grad_norm embedding layernorm; do timeout 90 $M check --device cuda --kernel $k; done) > $O/check.txt 2>&1; grep -E "^(cross|grad|embed|layer)|passed" $O/check.txt
REPEATS=10 PROFILE=1 BATCHES=32 TECHNIQUES=bf16_flash timeout 120 bash benchmarks/gpu/bench-step.sh $O/prof "--train-args=--fused-head" --top 45 > $O/prof.log 2>&1
grep -A52 "^bf16_flash" $O/prof/memopt_step.txt | cut -c1-120; tail -4 $O/prof.log
cd $O && tar czf prof.tgz prof prof.log && rm -rf prof prof.log
