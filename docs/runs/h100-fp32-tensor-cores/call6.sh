#!/usr/bin/env bash
# Session 5, call 6: the two CUDA test failures of call 5 in detail; memory model vs measured under 3xTF32.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O
M=".gpu/Memopt.Tests/memopt.dll"
MEMOPT_TEST_DEVICE=cuda timeout 200 bash .gpu/run .gpu/Memopt.Tests/Memopt.Tests.dll -class Memopt.Tests.Kernels.AdamWTests -class Memopt.Tests.Kernels.GradNormTests -class Memopt.Tests.Kernels.MultiTensorTests -class Memopt.Tests.Memory.SplitKWorkspaceTests > $O/tests_full.txt 2>&1
grep -B2 -A25 "\[FAIL\]" $O/tests_full.txt | head -120
tail -3 $O/tests_full.txt
TECHNIQUES="baseline checkpointing" EXTRA="--fused-head --fp32-matmul 3xtf32" SUFFIX=-3xtf32 PLOT=0 timeout 150 bash benchmarks/gpu/memory-reports.sh $O/memory rtx5090 32 --no-trace
for f in $O/memory/*.txt; do echo "== $f"; grep -iE "peak|predicted|measured|differ|exact" $f | head -8; done
tar czf $O/memory.tgz -C $O memory && rm -rf $O/memory
