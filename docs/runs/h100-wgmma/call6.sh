#!/usr/bin/env bash
# Session 8, call 6: the training step with the LM head's logits materialized (no --fused-head: memopt train's
# default), whose dW GEMM runs on the narrow tile (dY's leading dimension 50,257 is odd): bf16 narrow tiles at one
# group per SM (MEMOPT_TC_BF16_MIN_GROUPS=1, the experiment switch) and at two (the new default), then PyTorch.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O
M="bash .gpu/run .gpu/Memopt.Tests/memopt.dll"
MEMOPT_TC_BF16_MIN_GROUPS=1 timeout 150 $M bench step --device cuda --preset rtx5090 --batch-sizes 32,128 --warmup 3 --repeats 10 --random-tokens --techniques bf16,bf16_flash --out $O/step_g1.json > $O/step_g1.txt 2>&1
grep -E "^(bf16|combined)" $O/step_g1.txt | cut -c1-110
REPEATS=10 PROFILE=0 BATCHES=32,128 TECHNIQUES=bf16,bf16_flash timeout 300 bash benchmarks/gpu/bench-step.sh $O/g2 > $O/g2.log 2>&1
cat $O/g2/side_by_side.txt
cd $O && tar czf call6.tgz step_g1.* g2 g2.log && rm -rf step_g1.* g2 g2.log
