#!/usr/bin/env python3
"""PyTorch reference for `memopt bench gemm`: torch.matmul in bf16 and in fp32 (TF32 off) at the same shapes, timed the
same way (warm-up call, samples of back-to-back calls lasting >= 2 ms each, CUDA events, median), written as the same
JSON records. --dtypes tf32 adds fp32 matmuls with TF32 allowed (torch.backends.cuda.matmul.allow_tf32), the counterpart
of `memopt bench gemm --fp32-matmul tf32`. With --memopt FILE it also prints the memopt/torch ratios of the two runs side by side.

    python benchmarks/pytorch/bench_gemm.py --out torch_gemm.json [--sizes square,model] [--rows 8192,16384,32768]
    python benchmarks/pytorch/bench_gemm.py --out torch_gemm.json --memopt memopt_gemm.json
"""
import argparse
import json
import math

import torch

import bench_results

# The rtx5090 preset's Linear layers (in -> out features), as in src/Runner/Commands/BenchCommand.cs.
LAYERS = [("qkv", 256, 768), ("proj", 256, 256), ("fc", 256, 1024), ("fc2", 1024, 256), ("lm_head", 256, 50257)]


def cases(sizes, rows):
    for token in [t.strip() for t in sizes.split(",") if t.strip()]:
        if token == "square":
            for ta, tb in [(False, False), (False, True), (True, False), (True, True)]:
                yield (f"square.{'t' if ta else 'n'}{'t' if tb else 'n'}", 4096, 4096, 4096, ta, tb)
        elif token == "model":
            for r in rows:
                for name, fin, fout in LAYERS:
                    # y = x W^T; dX = dY W; dW = dY^T X (x [rows, in], W [out, in], dY [rows, out]).
                    yield (f"{name}.forward.r{r}", r, fout, fin, False, True)
                    yield (f"{name}.grad_input.r{r}", r, fin, fout, False, False)
                    yield (f"{name}.grad_weight.r{r}", fout, fin, r, True, False)
        else:
            dims, _, t = token.partition(":")
            m, n, k = (int(v) for v in dims.split("x"))
            t = t or "nn"
            yield (f"{m}x{n}x{k}.{t}", m, n, k, t[0] == "t", t[1] == "t")


def time_ms(fn, samples, min_sample_ms=2.0):
    """Median and min per call: warm-up, then samples of back-to-back calls between CUDA events."""
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    once = start.elapsed_time(end)
    inner = max(1, math.ceil(min_sample_ms / max(once, 1e-3)))
    times = []
    for _ in range(samples):
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / inner)
    times.sort()
    return times[len(times) // 2], times[0], samples


def run_case(case, dtype, samples, gen, tf32=False):
    name, m, n, k, ta, tb = case
    torch.backends.cuda.matmul.allow_tf32 = tf32
    a = torch.rand((k, m) if ta else (m, k), device="cuda", generator=gen).mul_(2).sub_(1).to(dtype)
    b = torch.rand((n, k) if tb else (k, n), device="cuda", generator=gen).mul_(2).sub_(1).to(dtype)
    opa, opb = (a.t() if ta else a), (b.t() if tb else b)
    out = torch.empty((m, n), device="cuda", dtype=dtype)
    med, mn, s = time_ms(lambda: torch.matmul(opa, opb, out=out), samples)
    flop = 2.0 * m * n * k
    tname = "bf16" if dtype == torch.bfloat16 else "f32"
    rec = dict(suite="gemm", name=name, impl=f"torch_{'tf32' if tf32 else tname}", input_type=tname, output_type=tname, m=m, n=n, k=k, batch=1,
               trans_a=ta, trans_b=tb, ms=med, ms_min=mn, samples=s, tflops=flop / (med * 1e-3) / 1e12, max_error=None, note=None)
    del a, b, opa, opb, out
    return rec


def compare(torch_records, memopt_path):
    with open(memopt_path) as f:
        mem = json.load(f)["results"]
    by = {}
    for r in torch_records + mem:  # several tiles per case (memopt --tiles a,b): keep the fastest
        key, tf = (r["name"], r["impl"]), r["tflops"]
        if isinstance(tf, (int, float)) and not math.isnan(tf) and (key not in by or tf > by[key]["tflops"]):
            by[key] = r
    names = list(dict.fromkeys(r["name"] for r in torch_records))
    print(f"\n{'case':<28} {'tc TF/s':>8} {'torch bf16':>10} {'ratio':>6} | {'simt TF/s':>9} {'torch f32':>9} {'ratio':>6}")
    for nm in names:
        def tf(impl):
            r = by.get((nm, impl))
            return r["tflops"] if r else float("nan")
        tc, tb, st, tf32 = tf("tc_bf16"), tf("torch_bf16"), tf("simt_f32"), tf("torch_f32")
        line = f"{nm:<28} {tc:8.1f} {tb:10.1f} {tc / tb:6.2f} | {st:9.2f} {tf32:9.1f} {st / tf32:6.3f}"
        # memopt --fp32-matmul tf32 / 3xtf32 records: TF32 against torch with TF32 allowed, 3xTF32 against torch fp32.
        t1, tt, t3 = tf("tc_tf32"), tf("torch_tf32"), tf("tc_3xtf32")
        if not math.isnan(t1):
            line += f" | tf32 {t1:7.1f} torch tf32 {tt:7.1f} {t1 / tt:6.2f}"
        if not math.isnan(t3):
            line += f" | 3xtf32 {t3:7.2f} / torch f32 {tf32:7.2f} = {t3 / tf32:6.3f}"
        print(line)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="square,model")
    p.add_argument("--rows", default="8192,16384,32768")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dtypes", default="bf16,f32")
    p.add_argument("--out")
    p.add_argument("--memopt", help="memopt bench gemm --out JSON to compare with")
    args = p.parse_args()

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    gen = torch.Generator(device="cuda").manual_seed(args.seed)
    rows = [int(r) for r in args.rows.split(",") if r.strip()]
    dtypes = {"bf16": torch.bfloat16, "f32": torch.float32, "tf32": torch.float32}
    records = []
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}, TF32 off except for --dtypes tf32, median of {args.repeats}")
    print(f"{'case':<28} {'M':>6} {'N':>6} {'K':>6} | " + " | ".join(f"{d + ' ms':>9} {'TFLOP/s':>8}" for d in args.dtypes.split(",")))
    for case in cases(args.sizes, rows):
        line = f"{case[0]:<28} {case[1]:>6} {case[2]:>6} {case[3]:>6} |"
        for dt in [d.strip() for d in args.dtypes.split(",") if d.strip()]:
            try:
                r = run_case(case, dtypes[dt], args.repeats, gen, tf32=dt == "tf32")
                records.append(r)
                line += f" {r['ms']:9.3f} {r['tflops']:8.1f} |"
            except torch.cuda.OutOfMemoryError as e:
                line += f" {'OOM':>18} |"
            torch.cuda.empty_cache()
        print(line, flush=True)
    if args.out:
        bench_results.write(args.out, "gemm", records)
    if args.memopt:
        compare(records, args.memopt)


if __name__ == "__main__":
    main()
