#!/usr/bin/env bash
# Session 5, call 3: 3xTF32 kernels forced to 2 groups per SM (launch bounds: at most 128 registers) against 1.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O
M=".gpu/Memopt.Tests/memopt.dll"
for g in 0 2; do
  MEMOPT_TC_F32_MIN_GROUPS=$g timeout 150 bash .gpu/run $M bench gemm --device cuda --sizes square,model --rows 8192 --repeats 5 --tiles narrow,narrowdeep --fp32-matmul 3xtf32 --out $O/gemm_g$g.json 2>&1 | grep -E "square|lm_head|qkv.forward|fc.forward|fc2.grad_input|tensor-core kernel 3xtf32 (Narrow|NarrowDeep) layout (12|14)" | tee $O/gemm_g$g.txt
done
