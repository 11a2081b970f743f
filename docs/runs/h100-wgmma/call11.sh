#!/usr/bin/env bash
# Session 8, call 11: after the final review (the 64-deep ring's load stage kept by Slice64Copies.Refill). ptxas on the
# 64-deep kernels' PTX; CUDA tests of the wgmma and tensor-core GEMM classes; 4096³ on auto; the bf16 + flash step at b32.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O
M="bash .gpu/run .gpu/Memopt.Tests/memopt.dll"
PTXAS=$(command -v ptxas || echo /usr/local/cuda/bin/ptxas)
for f in .gpu/ptx/*.ptx; do arch=sm_90; case $f in *wgmma*) arch=sm_90a;; esac; echo "$(basename $f) ($arch): $($PTXAS -arch=$arch -v $f -o /dev/null 2>&1 | grep -oE 'Used [0-9]+ registers|[0-9]+ bytes spill stores' | tr '\n' ' ')"; done | tee $O/ptxas.txt
(MEMOPT_TEST_DEVICE=cuda timeout 240 bash .gpu/run .gpu/Memopt.Tests/Memopt.Tests.dll -class Memopt.Tests.Kernels.WgmmaGemmTests -class Memopt.Tests.Kernels.TensorCoreGemmTests -class Memopt.Tests.Kernels.LinearCrossEntropyTests 2>&1 | sed 's/\x1b\[[0-9;]*m//g' | tail -12) > $O/tests.txt; tail -2 $O/tests.txt
timeout 60 $M bench gemm --device cuda --sizes square --c-dtype bf16 --repeats 15 --simt-max-gflop 0 > $O/g.txt 2>&1; grep -E "^square|tensor-core kernel" $O/g.txt | cut -c1-100
REPEATS=10 PROFILE=0 BATCHES=32 TECHNIQUES=bf16_flash timeout 120 bash benchmarks/gpu/bench-step.sh $O/step "--train-args=--fused-head" > $O/step.log 2>&1; grep rtx5090 $O/step/side_by_side.txt
cd $O && tar czf call11.tgz ptxas.txt tests.txt g.txt step step.log && rm -rf step step.log g.txt
