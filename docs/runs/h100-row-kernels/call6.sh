#!/usr/bin/env bash
# Session 7, call 6: + bias and GELU in one GEMM (the MLP's fc, Ops.LinearGelu). CUDA tests of the tensor-core GEMM
# (the GELU epilogue on the real kernel against the real two launches), bf16 matmul/Linear, the bf16, fused-head and
# model classes; memory reports (predicted vs measured, rtx5090 b32) for the bf16 techniques, plain and --fused-head;
# one profiled bf16 + flash step (b32) against PyTorch.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O
(MEMOPT_TEST_DEVICE=cuda timeout 240 bash .gpu/run .gpu/Memopt.Tests/Memopt.Tests.dll -class Memopt.Tests.Kernels.TensorCoreGemmTests -class Memopt.Tests.Kernels.Bf16MatMulTests -class Memopt.Tests.Model.Bf16ModelTests -class Memopt.Tests.Model.FusedHeadModelTests -class Memopt.Tests.Model.TransformerLMTests 2>&1 | tail -3) > $O/tests.txt; cat $O/tests.txt
TECHNIQUES="bf16 bf16_flash combined" PLOT=0 timeout 150 bash benchmarks/gpu/memory-reports.sh $O/mem rtx5090 32 --no-trace
TECHNIQUES="bf16_flash" PLOT=0 EXTRA=--fused-head SUFFIX=-fused timeout 60 bash benchmarks/gpu/memory-reports.sh $O/mem rtx5090 32 --no-trace
cat $O/mem/summary.txt; grep -hE "^  peak \(tracked\)|^  pool reserved|^  activations|^  saved_for_backward|^  forward peak" $O/mem/*.txt
REPEATS=10 PROFILE=1 BATCHES=32 TECHNIQUES=bf16_flash timeout 120 bash benchmarks/gpu/bench-step.sh $O/prof "--train-args=--fused-head" --top 45 > $O/prof.log 2>&1
grep -A12 "^bf16_flash" $O/prof/memopt_step.txt | cut -c1-120; grep -E "gelu|NarrowK64" $O/prof/memopt_step.txt | cut -c1-120; tail -4 $O/prof.log
cd $O && tar czf prof.tgz prof prof.log && rm -rf prof prof.log && tar czf mem.tgz mem && rm -rf mem
