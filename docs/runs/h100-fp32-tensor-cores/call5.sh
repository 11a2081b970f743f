#!/usr/bin/env bash
# Session 5, call 5: multi-tensor optimizer and the fp32 tensor-core path on the H100: CUDA tests, every kernel check,
# the memory model against measured bytes under 3xTF32, and GEMMs at 4096^3 against torch (bf16, fp32, TF32).
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O
M=".gpu/Memopt.Tests/memopt.dll"
(MEMOPT_TEST_DEVICE=cuda timeout 200 bash .gpu/run .gpu/Memopt.Tests/Memopt.Tests.dll -class Memopt.Tests.Kernels.AdamWTests -class Memopt.Tests.Kernels.GradNormTests -class Memopt.Tests.Kernels.MultiTensorTests -class Memopt.Tests.Kernels.TensorCoreGemmTests -class Memopt.Tests.Kernels.TensorCoreGemmTf32Tests -class Memopt.Tests.Memory.SplitKWorkspaceTests 2>&1 | tail -4) > $O/tests.txt
cat $O/tests.txt
timeout 150 bash .gpu/run $M check --device cuda > $O/check.txt 2>&1; tail -4 $O/check.txt; grep -E "adamw|grad_norm|chunk" $O/check.txt
TECHNIQUES="baseline checkpointing" EXTRA="--fused-head --fp32-matmul 3xtf32" SUFFIX=-3xtf32 PLOT=0 timeout 150 bash benchmarks/gpu/memory-reports.sh $O/memory rtx5090 32 --no-trace
cat $O/memory/summary.txt
for mode in 3xtf32 tf32; do
  timeout 100 bash .gpu/run $M bench gemm --device cuda --sizes square --repeats 7 --fp32-matmul $mode --out $O/gemm_$mode.json > $O/gemm_$mode.txt 2>&1
done
timeout 100 python3 benchmarks/pytorch/bench_gemm.py --sizes square --repeats 7 --dtypes bf16,f32,tf32 --out $O/torch_gemm.json --memopt $O/gemm_3xtf32.json > $O/torch_gemm.txt 2>&1
python3 - $O <<'PY' | tee $O/gemm_ratios.txt
import json,sys
o=sys.argv[1]
t={(r["name"],r["impl"]):r["tflops"] for r in json.load(open(o+"/torch_gemm.json"))["results"]}
for mode in ["3xtf32","tf32"]:
    for r in json.load(open(f"{o}/gemm_{mode}.json"))["results"]:
        ref = {"tc_bf16":"torch_bf16","tc_tf32":"torch_tf32","tc_3xtf32":"torch_f32"}[r["impl"]]
        if mode=="tf32" and r["impl"]=="tc_bf16": continue
        print(f'{r["name"]:<10} {r["impl"]:<10} {r.get("variant") or "":<26} {r["tflops"]:7.1f} TFLOP/s  {ref} {t[(r["name"],ref)]:7.1f}  ratio {r["tflops"]/t[(r["name"],ref)]:.3f}  {r.get("note") or ""}')
PY
