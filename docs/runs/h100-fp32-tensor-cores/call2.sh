#!/usr/bin/env bash
# Session 5, call 2: 3xTF32 tiles and registers, and where an fp32 step's time goes under 3xTF32.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O
M=".gpu/Memopt.Tests/memopt.dll"
timeout 150 bash .gpu/run $M bench gemm --device cuda --sizes square,model --rows 8192 --repeats 5 --tiles narrow,narrowdeep --fp32-matmul 3xtf32 --out $O/gemm_3xtf32_tiles.json 2>&1 | tail -40 | tee $O/gemm_3xtf32_tiles.txt
timeout 200 bash .gpu/run $M bench step --device cuda --preset rtx5090 --batch-sizes 32 --warmup 3 --repeats 10 --random-tokens --techniques baseline --profile --top 30 "--train-args=--fused-head --fp32-matmul 3xtf32" --out $O/step_profile.json 2>&1 | tail -45 | tee $O/step_profile.txt
