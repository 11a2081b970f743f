#!/usr/bin/env bash
# GPU validation on a host without .NET (see docs/gpu-validation.md). Prepare on a dev machine first:
#   ../shared/tools/gpu-pack src/Runner && dotnet publish tests -c Release -o .gpu/Memopt.Tests
# then on the GPU host, from the repository root:  bash benchmarks/gpu/validate.sh OUTDIR
set -uo pipefail
out=${1:-gpu-out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/nvidia-smi.txt"
bash .gpu/run .gpu/Runner/memopt.dll info 2>&1 | tee "$out/info.txt"
MEMOPT_TEST_DEVICE=cuda bash .gpu/run .gpu/Memopt.Tests/Memopt.Tests.dll 2>&1 | sed 's/\x1b\[[0-9;]*m//g' > "$out/tests-cuda.txt"
tail -3 "$out/tests-cuda.txt"
bash .gpu/run .gpu/Runner/memopt.dll check --device cuda 2>&1 | tee "$out/check-cuda.txt"
