#!/usr/bin/env bash
# Session 7, call 2 (an experiment, temporary environment knobs not kept in the code): the fused head's cross-entropy
# chunk kernel with groups of 256, 512 and 1024 threads per row (MEMOPT_CE_GROUP), and the LayerNorm parameter sum
# with groups of 64 and 256 (MEMOPT_LN_SUM_GROUP); one profiled bf16 + flash step (b32) each, memopt alone.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O
M="bash .gpu/run .gpu/Memopt.Tests/memopt.dll"
for g in 1024 512 256; do
  for s in 256 64; do
    echo "== MEMOPT_CE_GROUP=$g MEMOPT_LN_SUM_GROUP=$s" | tee -a $O/steps.txt
    MEMOPT_CE_GROUP=$g MEMOPT_LN_SUM_GROUP=$s timeout 80 $M bench step --device cuda --preset rtx5090 --batch-sizes 32 --techniques bf16_flash --random-tokens --warmup 3 --repeats 10 --profile --top 60 --out $O/step_${g}_${s}.json --train-args=--fused-head > $O/step_${g}_${s}.txt 2>&1
    grep -E "^bf16_flash|cross_entropy.chunk|layernorm.bwd_param_sum" $O/step_${g}_${s}.txt | cut -c1-110 | tee -a $O/steps.txt
  done
done
cd $O && tar czf steps.tgz step_* && rm -f step_*
