#!/usr/bin/env bash
# Session 5, call 1: TF32 / 3xTF32 GEMM kernels on the H100: CUDA tests, GEMM at 4096^3 against torch, fp32 steps.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O
M=".gpu/Memopt.Tests/memopt.dll"
(MEMOPT_TEST_DEVICE=cuda timeout 240 bash .gpu/run .gpu/Memopt.Tests/Memopt.Tests.dll -class Memopt.Tests.Kernels.TensorCoreGemmTf32Tests -class Memopt.Tests.Kernels.TensorCoreGemmTests 2>&1 | tail -25) > $O/tests.txt
cat $O/tests.txt
for mode in 3xtf32 tf32; do
  timeout 150 bash .gpu/run $M bench gemm --device cuda --sizes square --repeats 7 --fp32-matmul $mode --out $O/gemm_$mode.json 2>&1 | tail -14 | tee $O/gemm_$mode.txt
done
timeout 120 python3 benchmarks/pytorch/bench_gemm.py --sizes square --repeats 7 --dtypes bf16,f32,tf32 --out $O/torch_gemm.json --memopt $O/gemm_3xtf32.json 2>&1 | tail -12 | tee $O/torch_gemm.txt
python3 - <<'PY' $O 2>&1 | tee -a $O/torch_gemm.txt
import json,sys
o=sys.argv[1]
t={(r["name"],r["impl"]):r["tflops"] for r in json.load(open(o+"/torch_gemm.json"))["results"]}
for mode in ["tf32","3xtf32"]:
    for r in json.load(open(f"{o}/gemm_{mode}.json"))["results"]:
        if r["impl"].startswith("tc_") and r["impl"]!="tc_bf16":
            ref = t.get((r["name"],"torch_tf32" if mode=="tf32" else "torch_f32"))
            print(r["name"], r["impl"], r.get("variant"), round(r["tflops"],2), "torch", ref and round(ref,2), "ratio", ref and round(r["tflops"]/ref,3), r.get("note"))
PY
REPEATS=10 PROFILE=0 TECHNIQUES=baseline,checkpointing BATCHES=32,128 timeout 240 bash benchmarks/gpu/bench-step.sh $O/step3x "--train-args=--fused-head --fp32-matmul 3xtf32" 2>&1 | tail -12
