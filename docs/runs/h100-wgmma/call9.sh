#!/usr/bin/env bash
# Session 8, call 9: the final code (the descriptors from one helper, `memopt info`'s tensor-core line). CUDA tests of
# the wgmma, tensor-core GEMM and command-line classes; memopt info; 4096³ on auto against torch.matmul; the bf16 + flash
# step at b32 against PyTorch.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O
M="bash .gpu/run .gpu/Memopt.Tests/memopt.dll"
(MEMOPT_TEST_DEVICE=cuda timeout 300 bash .gpu/run .gpu/Memopt.Tests/Memopt.Tests.dll -class Memopt.Tests.Kernels.WgmmaGemmTests -class Memopt.Tests.Kernels.TensorCoreGemmTests \
  -class Memopt.Tests.Runner.CommandLineTests -class Memopt.Tests.Kernels.LinearCrossEntropyTests 2>&1 | sed 's/\x1b\[[0-9;]*m//g' | tail -20) > $O/tests.txt; tail -2 $O/tests.txt
timeout 60 $M info --device cuda > $O/info.txt 2>&1; cat $O/info.txt
timeout 60 $M bench gemm --device cuda --sizes square --c-dtype bf16 --repeats 15 --simt-max-gflop 0 --out $O/g.json > $O/g.txt 2>&1
timeout 90 python3 benchmarks/pytorch/bench_gemm.py --sizes square --repeats 15 --dtypes bf16 --memopt $O/g.json > $O/torch_sq.txt 2>&1; tail -5 $O/torch_sq.txt
REPEATS=10 PROFILE=0 BATCHES=32 TECHNIQUES=bf16_flash timeout 120 bash benchmarks/gpu/bench-step.sh $O/step "--train-args=--fused-head" > $O/step.log 2>&1; cat $O/step/side_by_side.txt
cd $O && tar czf call9.tgz tests.txt info.txt g.* torch_sq.txt step step.log && rm -rf g.* step step.log
