#!/usr/bin/env bash
# Session 8, call 3: the wgmma kernel under the final rule (Auto: wgmma from 8 K slices per group). CUDA tests of the
# GEMMs and the bf16 model; 4096³ bf16-C on mma.sync and wgmma, twice, against torch.matmul; the bf16 step matrix
# against PyTorch; a bf16 + flash memory report (predicted vs measured); Nsight Compute on the fp32 SIMT GEMM at 4096³.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O
M="bash .gpu/run .gpu/Memopt.Tests/memopt.dll"
(MEMOPT_TEST_DEVICE=cuda timeout 300 bash .gpu/run .gpu/Memopt.Tests/Memopt.Tests.dll -class Memopt.Tests.Kernels.TensorCoreGemmTests -class Memopt.Tests.Kernels.WgmmaGemmTests \
  -class Memopt.Tests.Kernels.Bf16MatMulTests -class Memopt.Tests.Kernels.LinearCrossEntropyTests -class Memopt.Tests.Kernels.TensorCoreGemmTf32Tests \
  -class Memopt.Tests.Model.Bf16ModelTests -class Memopt.Tests.Model.FusedHeadModelTests -class Memopt.Tests.Model.FlashAttentionModelTests -class Memopt.Tests.Model.Bf16TrainerTests 2>&1 | tail -30) > $O/tests.txt; tail -3 $O/tests.txt
for run in 1 2; do for mma in mma wgmma; do
  timeout 60 $M bench gemm --device cuda --sizes square --c-dtype bf16 --repeats 15 --simt-max-gflop 0 --tc-mma $mma --out $O/sq_${mma}_$run.json > $O/sq_${mma}_$run.txt 2>&1
  grep -E "^square" $O/sq_${mma}_$run.txt | cut -c1-75 | sed "s/^/$mma $run /"
done; done
timeout 90 python3 benchmarks/pytorch/bench_gemm.py --sizes square --repeats 15 --dtypes bf16 --memopt $O/sq_wgmma_1.json > $O/torch_sq.txt 2>&1; tail -6 $O/torch_sq.txt
REPEATS=10 PROFILE=0 TECHNIQUES=bf16,bf16_flash,bf16_flash_window64,combined timeout 300 bash benchmarks/gpu/bench-step.sh $O/bf16 --train-args=--fused-head > $O/bf16.log 2>&1
cat $O/bf16/side_by_side.txt
TECHNIQUES="bf16_flash" PLOT=0 EXTRA=--fused-head SUFFIX=-fused timeout 120 bash benchmarks/gpu/memory-reports.sh $O/mem rtx5090 32 --no-trace; cat $O/mem/summary.txt
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
timeout 150 $NCU --target-processes all -k regex:TiledKernel --launch-skip 2 --launch-count 1 --clock-control none --section SpeedOfLight --section WarpStateStats \
  --section SchedulerStats --section InstructionStats --section MemoryWorkloadAnalysis_Tables --section Occupancy \
  $M bench gemm --device cuda --sizes 4096x4096x4096 --repeats 1 --simt-max-gflop 200 > $O/ncu_simt.txt 2>&1; grep -E "Throughput|Eligible|Issued Warp|No Eligible|Stall|Bank|Registers|Achieved Occ|Warp Cycles" $O/ncu_simt.txt | head -40
cd $O && tar czf call3.tgz tests.txt sq_* torch_sq.txt bf16 bf16.log mem ncu_simt.txt && rm -rf sq_* bf16 bf16.log mem
