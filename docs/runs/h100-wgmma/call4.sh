#!/usr/bin/env bash
# Session 8, call 4: after the review's mends (one slice cursor and one 64-deep copy helper for the mma.sync and
# wgmma kernels). ptxas on the tensor-core kernels' PTX; CUDA tests of the GEMMs and the bf16 model; 4096³ bf16-C on
# both instructions; one profiled bf16 + flash step at b32 against PyTorch.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O
M="bash .gpu/run .gpu/Memopt.Tests/memopt.dll"
PTXAS=$(command -v ptxas || echo /usr/local/cuda/bin/ptxas)
timeout 120 $M bench gemm --device cuda --sizes 256x256x256 --tiles narrow,narrowk64 --ptx $O/k --repeats 1 --simt-max-gflop 0 > $O/ptx.txt 2>&1
for f in k.Narrow k.NarrowK64 k.wgmma.12 k.wgmma.15; do arch=sm_90; case $f in *wgmma*) arch=sm_90a;; esac; echo "$f ($arch)"; timeout 60 $PTXAS -arch=$arch -v $O/$f.ptx -o /dev/null 2>&1 | grep -E "registers|spill"; done > $O/ptxas.txt 2>&1; cat $O/ptxas.txt; rm -f $O/k.*.ptx
(MEMOPT_TEST_DEVICE=cuda timeout 300 bash .gpu/run .gpu/Memopt.Tests/Memopt.Tests.dll -class Memopt.Tests.Kernels.TensorCoreGemmTests -class Memopt.Tests.Kernels.WgmmaGemmTests \
  -class Memopt.Tests.Kernels.Bf16MatMulTests -class Memopt.Tests.Kernels.LinearCrossEntropyTests -class Memopt.Tests.Kernels.TensorCoreGemmTf32Tests \
  -class Memopt.Tests.Model.Bf16ModelTests -class Memopt.Tests.Model.FusedHeadModelTests -class Memopt.Tests.Model.FlashAttentionModelTests -class Memopt.Tests.Model.Bf16TrainerTests 2>&1 | sed 's/\x1b\[[0-9;]*m//g' | tail -30) > $O/tests.txt; tail -2 $O/tests.txt
for mma in mma wgmma; do
  timeout 60 $M bench gemm --device cuda --sizes square --c-dtype bf16 --repeats 15 --simt-max-gflop 0 --tc-mma $mma --out $O/sq_$mma.json > $O/sq_$mma.txt 2>&1
  grep -E "^square" $O/sq_$mma.txt | cut -c1-75 | sed "s/^/$mma /"
done
timeout 90 python3 benchmarks/pytorch/bench_gemm.py --sizes square --repeats 15 --dtypes bf16 --memopt $O/sq_wgmma.json > $O/torch_sq.txt 2>&1; tail -5 $O/torch_sq.txt
REPEATS=10 PROFILE=1 BATCHES=32 TECHNIQUES=bf16_flash timeout 150 bash benchmarks/gpu/bench-step.sh $O/prof "--train-args=--fused-head" --top 45 > $O/prof.log 2>&1
grep -A4 "^bf16_flash" $O/prof/memopt_step.txt | cut -c1-120; grep -E "tc_gemm" $O/prof/memopt_step.txt | cut -c1-120; tail -3 $O/prof.log
cd $O && tar czf call4.tgz ptx.txt ptxas.txt tests.txt sq_* torch_sq.txt prof prof.log && rm -rf sq_* prof prof.log
