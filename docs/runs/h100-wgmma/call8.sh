#!/usr/bin/env bash
# Session 8, call 8: after the review's mends (the wgmma tests also check that wgmma launched; InstructionFor; bench
# gemm names the instruction each case ran on). CUDA tests of the wgmma and tensor-core GEMM classes; a bench gemm
# over 4096³ and two model shapes on auto.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O
M="bash .gpu/run .gpu/Memopt.Tests/memopt.dll"
(MEMOPT_TEST_DEVICE=cuda timeout 240 bash .gpu/run .gpu/Memopt.Tests/Memopt.Tests.dll -class Memopt.Tests.Kernels.WgmmaGemmTests -class Memopt.Tests.Kernels.TensorCoreGemmTests 2>&1 | sed 's/\x1b\[[0-9;]*m//g' | tail -20) > $O/tests.txt; tail -2 $O/tests.txt
timeout 100 $M bench gemm --device cuda --sizes square,8192x768x256:nt,2048x256x50264:nn --c-dtype bf16 --repeats 7 --simt-max-gflop 0 --out $O/g.json > $O/g.txt 2>&1
grep -E "^(square|8192|2048)|tensor-core kernel" $O/g.txt | cut -c1-120; grep -o '"note": "[^"]*"' $O/g.json | sort | uniq -c
