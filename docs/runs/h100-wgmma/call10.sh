#!/usr/bin/env bash
# Session 8, call 10: the wgmma test class with the staged bf16 C cases and the split labels checked; bench gemm's
# wgmma resource lines from the weakly keyed table.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O
M="bash .gpu/run .gpu/Memopt.Tests/memopt.dll"
(MEMOPT_TEST_DEVICE=cuda timeout 200 bash .gpu/run .gpu/Memopt.Tests/Memopt.Tests.dll -class Memopt.Tests.Kernels.WgmmaGemmTests 2>&1 | sed 's/\x1b\[[0-9;]*m//g' | tail -12) > $O/tests.txt; tail -2 $O/tests.txt
timeout 60 $M bench gemm --device cuda --sizes 4096x4096x4096,2048x256x50264:nn --c-dtype bf16 --repeats 5 --simt-max-gflop 0 > $O/g.txt 2>&1; grep -E "^(4096|2048)|tensor-core kernel" $O/g.txt | cut -c1-110
