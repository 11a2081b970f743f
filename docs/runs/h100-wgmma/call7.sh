#!/usr/bin/env bash
# Session 8, call 7: the fp32 SIMT GEMM (128×128 tile) with its slice's eight k steps as a loop with a run-time count
# (MEMOPT_SIMT_KLOOP=1) instead of unrolled (ILGPU hoisted all 32 shared loads of an unrolled slice ahead of the
# FMAs: 249 registers, one group per SM), and with launch bounds for two groups per SM (MEMOPT_SIMT_GROUPS=2); both
# experiment switches. 4096³ and the model's shapes, registers/spills/groups; then the fp32 baseline step at b32.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O
M="bash .gpu/run .gpu/Memopt.Tests/memopt.dll"
for cfg in "0 1" "1 1" "1 2"; do set -- $cfg
  MEMOPT_SIMT_KLOOP=$1 MEMOPT_SIMT_GROUPS=$2 timeout 150 $M bench gemm --device cuda --sizes square,model --rows 8192 --tiles auto --simt-tiles t128x128 --repeats 7 --out $O/simt_l$1_g$2.json > $O/simt_l$1_g$2.txt 2>&1
  echo "loop=$1 groups=$2"; grep -E "^simt kernel" $O/simt_l$1_g$2.txt; grep -E "^square" $O/simt_l$1_g$2.txt | cut -c1-28,95-140
done
timeout 100 python3 benchmarks/pytorch/bench_gemm.py --sizes square --repeats 7 --dtypes f32 --memopt $O/simt_l1_g2.json > $O/torch_f32.txt 2>&1; tail -5 $O/torch_f32.txt
for cfg in "0 1" "1 2"; do set -- $cfg
  MEMOPT_SIMT_KLOOP=$1 MEMOPT_SIMT_GROUPS=$2 timeout 120 $M bench step --device cuda --preset rtx5090 --batch-sizes 32 --warmup 3 --repeats 5 --random-tokens --techniques baseline --train-args=--fused-head --out $O/step_l$1_g$2.json > $O/step_l$1_g$2.txt 2>&1
  echo "step loop=$1 groups=$2"; grep -E "^baseline" $O/step_l$1_g$2.txt | cut -c1-100
done
cd $O && tar czf call7.tgz simt_* torch_f32.txt step_* && rm -f simt_* step_*
