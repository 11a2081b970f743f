#!/usr/bin/env bash
# Session 8, call 2: the model's GEMM shapes (rtx5090, 8192 rows, bf16 C) and the fused head's chunk GEMMs on
# mma.sync and on wgmma; the bf16 step matrix (wgmma, the default now) against PyTorch eager; the same steps at
# batch 32 on mma.sync, in the same call.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O
M="bash .gpu/run .gpu/Memopt.Tests/memopt.dll"
for mma in mma wgmma; do
  timeout 100 $M bench gemm --device cuda --sizes model,2048x50264x256:nt,2048x256x50264:nn,50264x256x2048:tn --rows 8192 --c-dtype bf16 --repeats 10 --simt-max-gflop 0 --tc-mma $mma --out $O/model_$mma.json > $O/model_$mma.txt 2>&1
done
paste <(grep -E "^[a-z0-9_.]+ +[0-9]" $O/model_mma.txt | cut -c1-75) <(grep -E "^[a-z0-9_.]+ +[0-9]" $O/model_wgmma.txt | cut -c53-75)
REPEATS=10 PROFILE=0 TECHNIQUES=bf16,bf16_flash,bf16_flash_window64,combined timeout 330 bash benchmarks/gpu/bench-step.sh $O/bf16 --train-args=--fused-head > $O/bf16.log 2>&1
cat $O/bf16/side_by_side.txt
timeout 100 $M bench step --device cuda --preset rtx5090 --batch-sizes 32 --warmup 3 --repeats 10 --random-tokens --techniques bf16,bf16_flash,bf16_flash_window64,combined --train-args=--fused-head --tc-mma mma --out $O/step_mma_b32.json > $O/step_mma_b32.txt 2>&1
grep -E "^(bf16|combined)" $O/step_mma_b32.txt | cut -c1-110
cd $O && tar czf call2.tgz model_* bf16 bf16.log step_mma_b32.* && rm -rf model_* bf16 bf16.log step_mma_b32.*
