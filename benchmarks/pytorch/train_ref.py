#!/usr/bin/env python3
"""PyTorch reference of memopt's model and techniques, for side-by-side step time, memory and perplexity.

Same architecture as src/Model (pre-norm decoder, fused QKV with bias, erf GELU, token embedding x sqrt(d) plus the
sinusoid table, tied head or untied head with bias), same presets and parameter counts, same optimizer defaults
(Adam, lr 1e-3, 2% linear warm-up then cosine to 10%, global-norm clip 1.0), same timing window (3 warm-up steps, then
the median of the next 20 steps, each ended by torch.cuda.synchronize()), same metrics JSON fields as memopt's
results/{dataset}_{technique}_metrics.json plus "framework": "pytorch".

Techniques (as in the study):
  baseline    fp32, naive attention (scores and probabilities materialized, like memopt's baseline)
  --bf16      torch.autocast(bfloat16); fp32 master weights and Adam state
  --flash-attn  F.scaled_dot_product_attention restricted to the flash backend (needs --bf16)
  --window-size W  sliding-window causal attention: flex_attention (compiled) with a block mask;
                   without --flash-attn the naive path applies the same mask
  --gradient-checkpointing  torch.utils.checkpoint around every block

Data: --tokens DIR reads memopt's token cache (the *.train.tok / *.val.tok files `memopt prepare` writes: a 128-byte
header, then uint16 tokens when vocab <= 65536, else int32); without it, uniformly random tokens (valid for time and
memory only, perplexity is then meaningless and reported as null).

Example (H100): python benchmarks/pytorch/train_ref.py --preset rtx5090 --batch-size 32 --bf16 --flash-attn --steps 60
"""
import argparse
import glob
import json
import math
import os
import statistics
import struct
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as ckpt

PRESETS = {
    "lab4": dict(vocab=12000, d=128, layers=4, heads=4, dff=1024, seq=256, tied=True, head_bias=False),
    "rtx5090": dict(vocab=50257, d=256, layers=4, heads=8, dff=1024, seq=256, tied=False, head_bias=True),
    "tiny": dict(vocab=10000, d=256, layers=4, heads=4, dff=1024, seq=256, tied=True, head_bias=False),
    "small": dict(vocab=10000, d=512, layers=6, heads=8, dff=2048, seq=512, tied=True, head_bias=False),
    "medium": dict(vocab=50257, d=768, layers=12, heads=12, dff=3072, seq=1024, tied=True, head_bias=False),
}
PARAMS = {"lab4": 2_855_680, "rtx5090": 28_941_393}


def sinusoid(positions, d):
    pe = np.zeros((positions, d), dtype=np.float64)
    p = np.arange(positions)[:, None]
    i = np.arange(d)[None, :]
    angle = p / np.power(10000.0, 2 * (i // 2) / d)
    pe[:, 0::2] = np.sin(angle[:, 0::2])
    pe[:, 1::2] = np.cos(angle[:, 1::2])
    return torch.tensor(pe, dtype=torch.float32)


class Block(nn.Module):
    def __init__(self, c, layer):
        super().__init__()
        d, dff = c["d"], c["dff"]
        self.heads = c["heads"]
        self.ln1 = nn.LayerNorm(d, eps=1e-5)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d, eps=1e-5)
        self.fc = nn.Linear(d, dff)
        self.fc2 = nn.Linear(dff, d)
        std, rstd = 0.02, 0.02 / math.sqrt(2 * c["layers"])
        for lin, s in ((self.qkv, std), (self.proj, rstd), (self.fc, std), (self.fc2, rstd)):
            nn.init.normal_(lin.weight, 0, s)
            nn.init.zeros_(lin.bias)

    def attention(self, x, attn):
        b, t, d = x.shape
        h, hd = self.heads, d // self.heads
        q, k, v = self.qkv(x).view(b, t, 3, h, hd).permute(2, 0, 3, 1, 4)
        y = attn(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))

    def forward(self, x, attn):
        x = x + self.attention(self.ln1(x), attn)
        return x + self.fc2(F.gelu(self.fc(self.ln2(x))))


class LM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.wte = nn.Embedding(c["vocab"], c["d"])
        nn.init.normal_(self.wte.weight, 0, 0.02)
        self.register_buffer("pe", sinusoid(c["seq"], c["d"]), persistent=False)
        self.blocks = nn.ModuleList(Block(c, l) for l in range(c["layers"]))
        self.ln_f = nn.LayerNorm(c["d"], eps=1e-5)
        self.head = None
        if not c["tied"]:
            self.head = nn.Linear(c["d"], c["vocab"], bias=c["head_bias"])
            nn.init.normal_(self.head.weight, 0, 0.02)
            if c["head_bias"]:
                nn.init.zeros_(self.head.bias)

    def forward(self, ids, targets, attn, checkpointing):
        t = ids.shape[1]
        x = self.wte(ids) * math.sqrt(self.c["d"]) + self.pe[:t]
        for blk in self.blocks:
            x = ckpt.checkpoint(blk, x, attn, use_reentrant=False) if checkpointing else blk(x, attn)
        x = self.ln_f(x)
        logits = self.head(x) if self.head is not None else x @ self.wte.weight.t()
        # Under autocast cross_entropy runs in fp32 (PyTorch's autocast op list), like memopt's fp32 loss.
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def naive_attention(window):
    def attn(q, k, v):
        t, hd = q.shape[-2], q.shape[-1]
        s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(hd))
        i = torch.arange(t, device=q.device)
        keep = i[None, :] <= i[:, None]
        if window is not None:
            keep = keep & (i[None, :] > i[:, None] - window)
        p = torch.softmax(s.masked_fill(~keep, float("-inf")), dim=-1)
        return p @ v
    return attn


def flash_attention():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def attn(q, k, v):
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return attn


def flex_window_attention(window, t, device):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    compiled = torch.compile(flex_attention)

    def sliding(b, h, qi, ki):
        return (ki <= qi) & (ki > qi - window)
    mask = create_block_mask(sliding, B=None, H=None, Q_LEN=t, KV_LEN=t, device=device)

    def attn(q, k, v):
        return compiled(q, k, v, block_mask=mask)
    return attn


def read_tokens(path):
    with open(path, "rb") as f:
        header = f.read(128)
        if header[:8] != b"MEMOTOKS":
            sys.exit(f"{path}: not a memopt token file")
        width = struct.unpack_from("<i", header, 12)[0]
        count = struct.unpack_from("<q", header, 64)[0]
        data = np.frombuffer(f.read(), dtype=np.uint16 if width == 2 else np.int32)
    if data.size != count:
        sys.exit(f"{path}: truncated ({data.size} of {count} tokens)")
    return torch.from_numpy(data.astype(np.int64))


def batches(tokens, b, t, seed, shuffle):
    """memopt's cut: sequences of T+1 tokens with stride T, last partial batch dropped."""
    n = (tokens.numel() - 1) // t
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(n)
    idx = torch.arange(t + 1)
    for i in range(n // b):
        starts = order[i * b:(i + 1) * b] * t
        seq = tokens[starts[:, None] + idx[None, :]]
        yield seq[:, :-1], seq[:, 1:]


def random_batches(vocab, b, t, seed):
    g = torch.Generator().manual_seed(seed)
    while True:
        seq = torch.randint(0, vocab, (b, t + 1), generator=g)
        yield seq[:, :-1], seq[:, 1:]


def technique_label(a):
    parts = []
    if a.bf16: parts.append("bf16")
    if a.flash_attn: parts.append("flash")
    if a.window_size: parts.append(f"window{a.window_size}")
    if a.gradient_checkpointing: parts.append("checkpointing")
    return "+".join(parts) or "baseline"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="lab4", choices=sorted(PRESETS))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, help="optimizer steps (default: one epoch of --tokens, else 60)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--flash-attn", action="store_true")
    ap.add_argument("--window-size", type=int)
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--tokens", help="memopt token cache directory (holds *.train.tok and *.val.tok)")
    ap.add_argument("--eval-batches", type=int, default=50)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default="results/pytorch")
    a = ap.parse_args()
    if a.batch_size <= 0: sys.exit("--batch-size must be > 0")
    if a.steps is not None and a.steps <= 0: sys.exit("--steps must be > 0")
    if a.window_size is not None and a.window_size <= 0: sys.exit("--window-size must be > 0")
    if a.flash_attn and not a.bf16 and not a.window_size:
        sys.exit("--flash-attn: PyTorch's flash backend runs only in fp16/bf16; add --bf16")
    if not torch.cuda.is_available(): sys.exit("no CUDA device")

    torch.manual_seed(a.seed)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda")
    c = PRESETS[a.preset]
    t, b = c["seq"], a.batch_size
    model = LM(c).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    if a.preset in PARAMS and n_params != PARAMS[a.preset]:
        sys.exit(f"parameter count {n_params} differs from memopt's {PARAMS[a.preset]}")

    if a.window_size and a.flash_attn:
        attn = flex_window_attention(a.window_size, t, dev)
    elif a.flash_attn:
        attn = flash_attention()
    else:
        attn = naive_attention(a.window_size)

    if a.tokens:
        train_file = glob.glob(os.path.join(a.tokens, "*.train.tok"))
        val_file = glob.glob(os.path.join(a.tokens, "*.val.tok"))
        if len(train_file) != 1 or len(val_file) != 1:
            sys.exit(f"{a.tokens}: expected exactly one *.train.tok and one *.val.tok")
        train_tokens, val_tokens = read_tokens(train_file[0]), read_tokens(val_file[0])
        steps_per_epoch = ((train_tokens.numel() - 1) // t) // b
        total = a.steps or steps_per_epoch * a.epochs
        dataset = os.path.basename(os.path.normpath(a.tokens))
    else:
        train_tokens = val_tokens = None
        steps_per_epoch = None
        total = a.steps or 60
        dataset = "random"

    opt = torch.optim.Adam(model.parameters(), lr=a.lr, fused=True)
    warmup = max(1, total // 50)

    def lr_at(step):
        if step < warmup: return a.lr * (step + 1) / warmup
        prog = (step - warmup) / max(1, total - warmup)
        return a.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, prog))))

    def train_batches():
        epoch = 0
        while True:
            it = batches(train_tokens, b, t, a.seed + epoch, True) if train_tokens is not None else random_batches(c["vocab"], b, t, a.seed)
            yield from it
            epoch += 1

    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=a.bf16)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    stream = train_batches()
    step_ms, losses = [], []
    clock = time.perf_counter()
    for step in range(total):
        x, y = next(stream)
        s0 = time.perf_counter()
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        for g in opt.param_groups: g["lr"] = lr_at(step)
        with autocast:
            loss = model(x, y, attn, a.gradient_checkpointing)
        loss.backward()
        if a.grad_clip > 0: torch.nn.utils.clip_grad_norm_(model.parameters(), a.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        step_ms.append((time.perf_counter() - s0) * 1000)
        losses.append(loss.item())
    train_seconds = time.perf_counter() - clock
    peak = torch.cuda.max_memory_allocated()
    reserved = torch.cuda.max_memory_reserved()

    val_loss = None
    if val_tokens is not None:
        model.eval()
        with torch.no_grad(), autocast:
            vals = [model(x.to(dev), y.to(dev), attn, False).item()
                    for i, (x, y) in zip(range(a.eval_batches), batches(val_tokens, b, t, 0, False))]
        val_loss = sum(vals) / len(vals)

    timed = step_ms[min(3, max(0, len(step_ms) - 1)):][:20]
    technique = technique_label(a)
    doc = {
        "framework": "pytorch", "torch_version": torch.__version__,
        "technique": technique, "dataset": dataset,
        "config": {"preset": a.preset, **c, "batch_size": b, "lr": a.lr, "grad_clip": a.grad_clip,
                   "bf16": a.bf16, "flash_attn": a.flash_attn, "window_size": a.window_size,
                   "gradient_checkpointing": a.gradient_checkpointing, "command": " ".join(sys.argv)},
        "device": {"name": torch.cuda.get_device_name(), "total_bytes": torch.cuda.get_device_properties(0).total_memory},
        "metrics": {
            "parameters": n_params, "steps": total, "tokens_seen": total * b * t,
            "step_ms_mean": statistics.mean(timed), "step_ms_median": statistics.median(timed), "timed_steps": len(timed),
            "epoch_seconds": (train_seconds * steps_per_epoch / total) if steps_per_epoch else None,
            "tokens_per_second": total * b * t / train_seconds,
            "train_loss": statistics.mean(losses), "train_perplexity": math.exp(statistics.mean(losses)),
            "val_loss": val_loss, "val_perplexity": math.exp(val_loss) if val_loss is not None else None,
            "peak_memory_bytes": peak, "peak_reserved_bytes": reserved,
        },
        "loss_curve": losses,
    }
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, f"{dataset}_{technique}_b{b}_metrics.json")
    fd, tmp = tempfile.mkstemp(dir=a.out, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(doc, f, indent=2)
    os.replace(tmp, path)
    print(f"pytorch {a.preset} {technique} b{b}: step {doc['metrics']['step_ms_median']:.2f} ms (median of {len(timed)}), "
          f"peak {peak / 2**30:.3f} GiB allocated / {reserved / 2**30:.3f} GiB reserved, "
          f"train loss {doc['metrics']['train_loss']:.4f}" + (f", val ppl {math.exp(val_loss):.2f}" if val_loss else "") + f" -> {path}")


if __name__ == "__main__":
    main()
