#!/usr/bin/env bash
# Session 8, call 5: the bf16 narrow tiles (ptxas: 129 registers, so one group per SM) with launch bounds for two
# groups, against one (MEMOPT_TC_BF16_MIN_GROUPS=1, an experiment switch removed after this call): 4096³ and the model
# shapes on the narrow and narrow-deep tiles, the registers and groups per SM the driver reports; CUDA tests of the GEMM.
set -uo pipefail
O=${OUT:-/tmp/out}; mkdir -p $O
M="bash .gpu/run .gpu/Memopt.Tests/memopt.dll"
for g in 1 2; do
  MEMOPT_TC_BF16_MIN_GROUPS=$g timeout 200 $M bench gemm --device cuda --sizes square,model,2048x256x50257:nn,50257x256x2048:tn --rows 8192 --tiles narrow,narrowdeep --c-dtype bf16 --repeats 10 --simt-max-gflop 0 --out $O/narrow_g$g.json > $O/narrow_g$g.txt 2>&1
  grep -E "tensor-core kernel" $O/narrow_g$g.txt | sed "s/^/g$g /"
done
paste <(grep -E "^[a-z0-9_.]+ +[0-9]" $O/narrow_g1.txt | cut -c1-75) <(grep -E "^[a-z0-9_.]+ +[0-9]" $O/narrow_g2.txt | cut -c51-75)
(MEMOPT_TEST_DEVICE=cuda timeout 200 bash .gpu/run .gpu/Memopt.Tests/Memopt.Tests.dll -class Memopt.Tests.Kernels.TensorCoreGemmTests -class Memopt.Tests.Kernels.Bf16MatMulTests 2>&1 | sed 's/\x1b\[[0-9;]*m//g' | tail -20) > $O/tests.txt; tail -2 $O/tests.txt
cd $O && tar czf call5.tgz narrow_* tests.txt && rm -f narrow_*
