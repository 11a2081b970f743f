#!/usr/bin/env bash
# Session 7, call 5: the step matrix against PyTorch eager with everything of this session: bf16 techniques with
# --fused-head, fp32 ones with --fused-head --fp32-matmul 3xtf32, then the fp32 baseline at batch 32 with the default
# IEEE SIMT GEMM.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O
REPEATS=10 PROFILE=0 TECHNIQUES=bf16,bf16_flash,bf16_flash_window64,combined timeout 200 bash benchmarks/gpu/bench-step.sh $O/bf16 "--train-args=--fused-head" > $O/bf16.log 2>&1
tail -16 $O/bf16.log
REPEATS=10 PROFILE=0 TECHNIQUES=baseline,checkpointing timeout 220 bash benchmarks/gpu/bench-step.sh $O/fp32 "--train-args=--fused-head --fp32-matmul 3xtf32" > $O/fp32.log 2>&1
tail -10 $O/fp32.log
REPEATS=5 PROFILE=0 BATCHES=32 TECHNIQUES=baseline timeout 120 bash benchmarks/gpu/bench-step.sh $O/ieee "--train-args=--fused-head" > $O/ieee.log 2>&1
tail -5 $O/ieee.log
cd $O && tar czf steps.tgz bf16 bf16.log fp32 fp32.log ieee ieee.log && rm -rf bf16 bf16.log fp32 fp32.log ieee ieee.log
