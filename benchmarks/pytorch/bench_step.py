#!/usr/bin/env python3
"""PyTorch reference for `memopt bench step`: the time of whole training steps of train_ref.py's model (memopt's
architecture, presets and parameter counts) per technique and batch size, timed the same way (warm-up steps, then the
median and minimum of timed steps, each ended by torch.cuda.synchronize(); host clock from before the batch upload),
written as the same JSON records (suite "step", name "{preset}.{technique}.b{batch}", impl "torch"). With
--memopt FILE it also prints the two runs side by side.

Techniques (memopt's labels, src/Runner/Experiments/Technique.cs; W = T/4 unless the label names it):
  baseline            fp32, naive attention        checkpointing   fp32, torch.utils.checkpoint around every block
  bf16                autocast bf16                 combined        bf16 + flash + window W + checkpointing
  bf16_flash          + SDPA flash backend          window{W}       fp32 naive attention with the window mask
  bf16_flash_window{W} + flex_attention with a sliding-window block mask (compiled)
Each step: batch upload, forward, backward, clip_grad_norm_ (1.0), Adam (fused, lr 1e-3), zero_grad(set_to_none).
Data: uniformly random tokens (time and memory only), as train_ref.py without --tokens.
Memory: torch.cuda.max_memory_allocated / max_memory_reserved over the configuration (stats reset before the model is
built, the caching allocator emptied between configurations).

    python benchmarks/pytorch/bench_step.py --preset rtx5090 --batch-sizes 32,64,128 --out torch_step.json
    python benchmarks/pytorch/bench_step.py --out torch_step.json --memopt memopt_step.json [--table side_by_side.txt]
"""
import argparse
import gc
import json
import math
import os
import re
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import train_ref as ref  # noqa: E402  (the model, presets and attention variants)
import bench_results  # noqa: E402

DEFAULT_TECHNIQUES = ["baseline", "bf16", "bf16_flash", "bf16_flash_window", "checkpointing", "combined"]


def technique_flags(label, seq_len):
    """(bf16, flash, window, checkpointing) for one of memopt's technique labels."""
    quarter = max(1, seq_len // 4)
    m = re.fullmatch(r"(bf16_flash_window|window)(\d*)", label)
    if m:
        w = int(m.group(2)) if m.group(2) else quarter
        return (True, True, w, False) if m.group(1) == "bf16_flash_window" else (False, False, w, False)
    table = {
        "baseline": (False, False, None, False),
        "bf16": (True, False, None, False),
        "bf16_flash": (True, True, None, False),
        "checkpointing": (False, False, None, True),
        "combined": (True, True, quarter, True),
    }
    if label not in table:
        sys.exit(f"--techniques: unknown technique '{label}' (known: {', '.join(DEFAULT_TECHNIQUES)}, window, or a label such as bf16_flash_window64)")
    return table[label]


def label_of(label, seq_len):
    """bf16_flash_window -> bf16_flash_window64, as memopt labels it."""
    bf16, flash, window, ckpt = technique_flags(label, seq_len)
    if window is not None and label in ("bf16_flash_window", "window"):
        return f"{label}{window}"
    return label


def run_config(preset, label, batch, warmup, repeats, seed):
    c = ref.PRESETS[preset]
    t = c["seq"]
    bf16, flash, window, ckpt = technique_flags(label, t)
    name = f"{preset}.{label}.b{batch}"
    dtype = "bf16" if bf16 else "f32"
    rec = dict(suite="step", name=name, impl="torch", input_type=dtype, output_type=dtype, m=0, n=0, k=0, batch=batch,
               trans_a=False, trans_b=False, ms=float("nan"), ms_min=float("nan"), samples=0, tflops=None, max_error=None,
               note=None, variant=label, host_us=None, technique=label, preset=preset, seq_len=t, tokens_per_s=None,
               peak_bytes=None, peak_reserved_bytes=None, profile=None, bytes=None, gbps=None, bandwidth_ratio=None)
    dev = torch.device("cuda")
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(seed)
    model = opt = None
    try:
        model = ref.LM(c).to(dev)
        if window is not None and flash:
            attn = ref.flex_window_attention(window, t, dev)
        elif flash:
            attn = ref.flash_attention()
        else:
            attn = ref.naive_attention(window)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16)
        batches = ref.random_batches(c["vocab"], batch, t, seed)
        times = []
        for step in range(warmup + repeats):
            x, y = next(batches)
            s0 = time.perf_counter()
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            with autocast:
                loss = model(x, y, attn, ckpt)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            if step >= warmup:
                times.append((time.perf_counter() - s0) * 1000)
        med = statistics.median(times)
        rec.update(ms=med, ms_min=min(times), samples=len(times), tokens_per_s=batch * t / (med / 1000),
                   peak_bytes=torch.cuda.max_memory_allocated(), peak_reserved_bytes=torch.cuda.max_memory_reserved())
    except torch.cuda.OutOfMemoryError as e:
        rec.update(note=f"OOM: {str(e).splitlines()[0]}", peak_bytes=torch.cuda.max_memory_allocated())
    except Exception as e:  # one technique failing (e.g. a backend missing) must not lose the others
        rec.update(note=f"FAIL: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    finally:
        del model, opt
        gc.collect()
        torch.cuda.empty_cache()
    return rec


def side_by_side(torch_records, memopt_path):
    """A text table: per configuration memopt's and torch's median step, their ratio, tokens/s and peak memory."""
    with open(memopt_path) as f:
        mem = {r["name"]: r for r in json.load(f)["results"]}

    def num(v):
        return v if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)) else None

    def fmt(v, spec):
        return format(v, spec) if v is not None else "-".rjust(int(re.match(r"\d+", spec).group(0)))

    lines = [f"{'configuration':<40} {'memopt ms':>10} {'torch ms':>9} {'ratio':>6} | {'memopt tok/s':>13} {'torch tok/s':>12} | "
             f"{'memopt peak MiB':>15} {'torch peak MiB':>14}"]
    names = list(dict.fromkeys([r["name"] for r in torch_records] + list(mem)))
    by_torch = {r["name"]: r for r in torch_records}
    for nm in names:
        m, t = mem.get(nm, {}), by_torch.get(nm, {})
        mm, tm = num(m.get("ms")), num(t.get("ms"))
        ratio = mm / tm if mm and tm else None
        mp, tp = num(m.get("peak_bytes")), num(t.get("peak_bytes"))
        notes = "; ".join(f"{who}: {r['note']}" for who, r in (("memopt", m), ("torch", t)) if r.get("note"))
        lines.append(f"{nm:<40} {fmt(mm, '10.2f')} {fmt(tm, '9.2f')} {fmt(ratio, '6.2f')} | "
                     f"{fmt(num(m.get('tokens_per_s')), '13,.0f')} {fmt(num(t.get('tokens_per_s')), '12,.0f')} | "
                     f"{fmt(mp / 2**20 if mp else None, '15.1f')} {fmt(tp / 2**20 if tp else None, '14.1f')}"
                     + (f"  {notes}" if notes else ""))
    lines.append("ratio = memopt ms / torch ms (> 1: memopt slower). Peak: memopt's tracked bytes vs torch.cuda.max_memory_allocated.")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="rtx5090", choices=sorted(ref.PRESETS))
    p.add_argument("--batch-sizes", default="32,64,128")
    p.add_argument("--techniques", default=",".join(DEFAULT_TECHNIQUES))
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=15, help="timed steps per configuration")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out")
    p.add_argument("--memopt", help="memopt bench step --out JSON to print side by side")
    p.add_argument("--table", help="also write the side-by-side table to this file")
    p.add_argument("--tf32", action="store_true", help="allow TF32 in fp32 matmuls (to compare with memopt --tf32)")
    a = p.parse_args()
    try:
        batches = [int(b) for b in a.batch_sizes.split(",") if b.strip()]
    except ValueError:
        sys.exit(f"--batch-sizes: '{a.batch_sizes}' is not a comma list of integers")
    if not batches or any(b <= 0 for b in batches):
        sys.exit(f"--batch-sizes: every batch size must be > 0, got '{a.batch_sizes}'")
    if a.warmup < 0 or a.repeats <= 0:
        sys.exit("--warmup must be >= 0 and --repeats > 0")
    t = ref.PRESETS[a.preset]["seq"]
    labels = [label_of(x.strip(), t) for x in a.techniques.split(",") if x.strip()]
    if not torch.cuda.is_available():
        sys.exit("no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = a.tf32
    torch.backends.cudnn.allow_tf32 = a.tf32

    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}, {a.preset}, random tokens, "
          f"{a.warmup} warm-up + {a.repeats} timed steps per configuration, TF32 {'on' if a.tf32 else 'off'}")
    print(f"{'technique':<24} {'batch':>5} {'median ms':>10} {'min ms':>9} {'tokens/s':>12} {'peak MiB':>10} {'reserved MiB':>13}")
    records = []
    for b in batches:
        for label in labels:
            r = run_config(a.preset, label, b, a.warmup, a.repeats, a.seed)
            records.append(r)
            if r["note"]:
                print(f"{label:<24} {b:>5} {r['note']}", flush=True)
            else:
                print(f"{label:<24} {b:>5} {r['ms']:10.2f} {r['ms_min']:9.2f} {r['tokens_per_s']:12,.0f} "
                      f"{r['peak_bytes'] / 2**20:10.1f} {r['peak_reserved_bytes'] / 2**20:13.1f}", flush=True)
    if a.out:
        bench_results.write(a.out, "step", records)
    if a.memopt:
        table = side_by_side(records, a.memopt)
        print("\n" + table)
        if a.table:
            with open(a.table, "w") as f:
                f.write(table + "\n")


if __name__ == "__main__":
    main()
