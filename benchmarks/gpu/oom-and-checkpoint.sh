#!/usr/bin/env bash
# Out-of-memory handling and PyTorch-readable checkpoints on the GPU host (docs/gpu-validation.md):
#   bash benchmarks/gpu/oom-and-checkpoint.sh OUTDIR
set -uo pipefail
out=${1:-gpu-out}
m=".gpu/Runner/memopt.dll"
mkdir -p "$out"
{
  echo "## budget: rtx5090 batch 32 under --memory-limit 2GiB"
  bash .gpu/run $m train --preset rtx5090 --device cuda --steps 3 --memory-limit 2GiB --cache-dir /tmp/cache --results-dir /tmp/r1 2>&1 | tail -1; echo "exit code $?"
  echo "## driver: rtx5090 batch 8192 (421 GB of logits) with the budget above the card's memory"
  bash .gpu/run $m train --preset rtx5090 --device cuda --batch-size 8192 --steps 1 --memory-limit 400GiB --cache-dir /tmp/cache --results-dir /tmp/r2 2>&1 | tail -1; echo "exit code $?"
  echo "## checkpoint read by PyTorch"
  bash .gpu/run $m train --preset lab4 --device cuda --steps 20 --cache-dir /tmp/cache --results-dir /tmp/r3 --checkpoint /tmp/lab4.safetensors > /dev/null 2>&1
  python3 -c "
from safetensors.torch import load_file
from safetensors import safe_open
t = load_file('/tmp/lab4.safetensors')
print('tensors', len(t), 'parameters', sum(v.numel() for v in t.values()), 'dtype', {str(v.dtype) for v in t.values()})
print('wte.weight', tuple(t['wte.weight'].shape), 'blocks.0.attn.qkv.weight', tuple(t['blocks.0.attn.qkv.weight'].shape))
with safe_open('/tmp/lab4.safetensors', 'pt') as f: print('metadata keys', sorted(f.metadata().keys()))
"
} 2>&1 | tee "$out/oom-and-checkpoint.txt"
