#!/usr/bin/env python3
"""Writes src/Kernels/FlashAttentionTensorCore.Ptx.cs: the inline PTX of the tensor-core flash attention kernels.

CudaAsm.Emit needs each assembly text as a compile-time constant, so the unrolled instruction sequences (one per head
dim) are generated here rather than typed. Run from the repository root: python3 tools/flash_attention_ptx.py
The register names and layouts are documented in FlashAttentionTensorCore.cs.
"""
import os

NEG_INF = "0fFF800000"
NEG_BIG = "0fF149F2CA"  # -1e30: the running max of a row that has seen nothing yet
ZERO = "0f00000000"
LDSM = "ldmatrix.sync.aligned.m8n8.x4.shared.b16"
LDSMT = "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16"
MMA = "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"
SHFL = "shfl.sync.bfly.b32"


def regs(name, first, count=4):
    return "{" + ",".join(f"{name}{first + i}" for i in range(count)) + "}"


def mma(c, a, b):
    return f"{MMA} {c}, {a}, {b}, {c};"


def mma_pair(block, load, a, c0, c1):
    """One ldmatrix.x4 into fab/fbb-style temporaries, then the two n8 blocks it holds: C0 += A·B[0:2], C1 += A·B[2:4]."""
    temp = load.split("{")[1].split("0,")[0]
    block.add(load)
    block.add(mma(c0, a, "{" + f"{temp}0,{temp}1" + "}"))
    block.add(mma(c1, a, "{" + f"{temp}2,{temp}3" + "}"))


class Block:
    def __init__(self):
        self.lines = []

    def add(self, *instructions):
        self.lines.append(" ".join(instructions))


def cs_text(lines, last_newline=False):
    parts = ['"' + line + '\\n\\t"' for line in lines[:-1]]
    parts.append('"' + lines[-1] + ('\\n\\t"' if last_newline else '"'))
    return " +\n        ".join(parts)


def cs_const(name, doc, block, prefix=None):
    text = cs_text(block.lines)
    if prefix is not None:
        text = prefix + " +\n        " + text
    return f"    /// <summary>{doc}</summary>\n    private const string {name} =\n        {text};\n"


def cs_pair(name, doc, make):
    """The hd 32 and hd 64 variants of a block; the lines they start with are one shared constant."""
    b32, b64 = make(32), make(64)
    common = 0
    while common < min(len(b32.lines), len(b64.lines)) - 1 and b32.lines[common] == b64.lines[common]:
        common += 1
    out = []
    prefix = None
    if common >= 2:
        out.append(f"    /// <summary>The lines {name}32 and {name}64 start with.</summary>\n    private const string {name}Start =\n        {cs_text(b32.lines[:common], True)};\n")
        prefix = f"{name}Start"
        b32.lines, b64.lines = b32.lines[common:], b64.lines[common:]
    out.append(cs_const(f"{name}32", f"hd 32: {doc}", b32, prefix))
    out.append(cs_const(f"{name}64", f"hd 64: {doc}", b64, prefix))
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Forward

def fwd_declare(hd):
    ks = hd // 16
    tile = 64 * hd * 2
    smem = tile * 5  # Q, then two stages of (K, V)
    b = Block()
    b.add(f".shared .align 128 .b8 memopt_fa_smem[{smem}];")
    b.add(f".reg .b32 faq<{hd // 4}>;", ".reg .f32 fas<32>;", f".reg .f32 fao<{hd // 2}>;", ".reg .f32 fam<2>;", ".reg .f32 fal<2>;")
    b.add(".reg .b32 fab<4>;", ".reg .b32 fap<4>;", ".reg .u32 tcsb;", f".reg .u32 fak<{ks}>;", f".reg .u32 fav<{ks}>;")
    b.add("mov.u32 tcsb, memopt_fa_smem;")
    b.add(*[f"add.u32 fak{i}, tcsb, %{i};" for i in range(ks)])
    b.add(*[f"add.u32 fav{i}, tcsb, %{ks + i};" for i in range(ks)])
    for start in range(0, hd // 2, 8):
        b.add(*[f"mov.f32 fao{i}, {ZERO};" for i in range(start, start + 8)])
    b.add(f"mov.f32 fam0, {NEG_BIG};", f"mov.f32 fam1, {NEG_BIG};", f"mov.f32 fal0, {ZERO};", f"mov.f32 fal1, {ZERO};")
    return b


def fwd_load_q(hd):
    b = Block()
    b.add("{ .reg .u32 t;")
    for k in range(hd // 16):
        b.add(f"add.u32 t, tcsb, %{k};", f"{LDSM} {regs('faq', 4 * k)}, [t];")
    b.add("}")
    return b


def fwd_scores(hd):
    pair_bytes = 16 * hd * 2
    b = Block()
    b.add("{ .reg .u32 t;")
    for start in range(0, 32, 8):
        b.add(*[f"mov.f32 fas{i}, {ZERO};" for i in range(start, start + 8)])
    for k in range(hd // 16):
        b.add(f"add.u32 t, fak{k}, %0;")
        for pair in range(4):
            mma_pair(b, f"{LDSM} {regs('fab', 0)}, [t+{pair * pair_bytes}];", regs("faq", 4 * k), regs("fas", 8 * pair), regs("fas", 8 * pair + 4))
    b.add("}")
    return b


def mask(acc, fragments, offset):
    """Accumulators (n block ni, register r) whose %0 + offset(ni, r) is outside [0, %1) become −∞ (one unsigned compare)."""
    b = Block()
    b.add("{ .reg .s32 d; .reg .pred p;")
    for ni in range(fragments):
        b.add(*[f"add.s32 d, %0, {offset(ni, r)}; setp.lt.u32 p, d, %1; selp.f32 {acc}{4 * ni + r}, {acc}{4 * ni + r}, {NEG_INF}, p;" for r in range(4)])
    b.add("}")
    return b


def fwd_mask():
    # Row − key of (ni, r): rows g + 8(r/2), keys 8ni + 2t + (r mod 2).
    return mask("fas", 8, lambda ni, r: 8 * (r >> 1) - 8 * ni - (r & 1))


def fwd_softmax(hd):
    row = [[4 * ni + r for ni in range(8) for r in (0, 1)], [4 * ni + r for ni in range(8) for r in (2, 3)]]
    b = Block()
    b.add("{ .reg .f32 x0, x1, y, a0, a1, n0, n1;")
    for h in (0, 1):
        v = row[h]
        b.add(f"max.f32 x{h}, fas{v[0]}, fas{v[1]};", *[f"max.f32 x{h}, x{h}, fas{i};" for i in v[2:]])
        b.add(f"{SHFL} y, x{h}, 1, 31, 0xffffffff;", f"max.f32 x{h}, x{h}, y;", f"{SHFL} y, x{h}, 2, 31, 0xffffffff;", f"max.f32 x{h}, x{h}, y;")
        # The rescale factor 2^((m_old − m)·%0): a difference of maxima times the scale, never m_old·%0 − m·%0. ptxas
        # contracts a mul.f32 followed by a sub.f32 into one fma, whose result for a row that has seen only masked keys
        # (m_old = m = −1e30) is the rounding residual of −1e30·%0 (≈ +8e20 at hd 64), not 0: 2^x = ∞, and then
        # l = 0·∞ and O = 0·∞ are NaN. m_old − m is exact there (0) and ≤ 0 everywhere.
        b.add(f"max.f32 x{h}, x{h}, fam{h};", f"mul.f32 n{h}, x{h}, %0;", f"sub.f32 a{h}, fam{h}, x{h};", f"mul.f32 a{h}, a{h}, %0;",
              f"ex2.approx.ftz.f32 a{h}, a{h};", f"mov.f32 fam{h}, x{h};", f"neg.f32 n{h}, n{h};")
    for ni in range(8):
        b.add(*[f"fma.rn.f32 fas{4 * ni + r}, fas{4 * ni + r}, %0, n{r >> 1}; ex2.approx.ftz.f32 fas{4 * ni + r}, fas{4 * ni + r};" for r in range(4)])
    for h in (0, 1):
        b.add(f"mul.f32 fal{h}, fal{h}, a{h};", *[f"add.f32 fal{h}, fal{h}, fas{i};" for i in row[h]])
    for ni in range(hd // 8):
        b.add(*[f"mul.f32 fao{4 * ni + r}, fao{4 * ni + r}, a{r >> 1};" for r in range(4)])
    b.add("}")
    return b


def p_fragment(dst, src, kk):
    """The bf16 A fragment of k16 step kk (keys 16kk..16kk+15) from the m16n8 accumulators src[8kk .. 8kk+7]."""
    return [f"cvt.rn.bf16x2.f32 {dst}0, {src(8 * kk + 1)}, {src(8 * kk)};", f"cvt.rn.bf16x2.f32 {dst}1, {src(8 * kk + 3)}, {src(8 * kk + 2)};",
            f"cvt.rn.bf16x2.f32 {dst}2, {src(8 * kk + 5)}, {src(8 * kk + 4)};", f"cvt.rn.bf16x2.f32 {dst}3, {src(8 * kk + 7)}, {src(8 * kk + 6)};"]


def per_pair_addresses(base, pairs):
    """A block opening with t0.. = base0.. + %0: one ldmatrix.trans address per n pair, moved by the operand."""
    b = Block()
    b.add("{ " + " ".join(f".reg .u32 t{i};" for i in range(pairs)))
    b.add(*[f"add.u32 t{i}, {base}{i}, %0;" for i in range(pairs)])
    return b


def fwd_pv(hd):
    step = 16 * hd * 2
    pairs = hd // 16
    b = per_pair_addresses("fav", pairs)
    for kk in range(4):
        b.add(*p_fragment("fap", lambda i: f"fas{i}", kk))
        for pair in range(pairs):
            mma_pair(b, f"{LDSMT} {regs('fab', 0)}, [t{pair}+{kk * step}];", "{fap0,fap1,fap2,fap3}", regs("fao", 8 * pair), regs("fao", 8 * pair + 4))
    b.add("}")
    return b


def fwd_finish(hd):
    b = Block()
    b.add("{ .reg .f32 y, i0, i1; .reg .b32 w; .reg .u64 a1; .reg .pred p0, p1;")
    for h in (0, 1):
        b.add(f"{SHFL} y, fal{h}, 1, 31, 0xffffffff;", f"add.f32 fal{h}, fal{h}, y;", f"{SHFL} y, fal{h}, 2, 31, 0xffffffff;", f"add.f32 fal{h}, fal{h}, y;")
    b.add("rcp.rn.f32 i0, fal0;", "rcp.rn.f32 i1, fal1;", "setp.ne.s32 p0, %2, 0;", "setp.ne.s32 p1, %3, 0;", "add.u64 a1, %0, %1;")
    for ni in range(hd // 8):
        o = [f"fao{4 * ni + r}" for r in range(4)]
        b.add(f"mul.f32 {o[0]}, {o[0]}, i0;", f"mul.f32 {o[1]}, {o[1]}, i0;", f"cvt.rn.bf16x2.f32 w, {o[1]}, {o[0]};", f"@p0 st.global.b32 [%0+{16 * ni}], w;")
        b.add(f"mul.f32 {o[2]}, {o[2]}, i1;", f"mul.f32 {o[3]}, {o[3]}, i1;", f"cvt.rn.bf16x2.f32 w, {o[3]}, {o[2]};", f"@p1 st.global.b32 [a1+{16 * ni}], w;")
    b.add("}")
    return b


# ---------------------------------------------------------------------------------------------------------------------
# Backward: shared memory K | V | Q | dO (each [64][hd]) | dSᵀ [64][64] | −L·log2 e [64] | D [64] (fp32).

FBA = "{fba0,fba1,fba2,fba3}"


def bwd_layout(hd):
    tile = 64 * hd * 2
    ds = 4 * tile
    stats = ds + 64 * 64 * 2
    return tile, ds, stats, stats + 512


def dq_reg(hd, i):
    """dQ's accumulators reuse the S and dP registers (both free once dS is in shared memory)."""
    return f"fbs{i}" if i < 16 else f"fbd{i - 16}"


def bwd_declare(hd):
    ks = hd // 16
    tile, ds, stats, total = bwd_layout(hd)
    b = Block()
    b.add(f".shared .align 128 .b8 memopt_fb_smem[{total}];")
    b.add(".reg .f32 fbs<16>;", ".reg .f32 fbd<16>;", f".reg .f32 fbk<{hd // 2}>;", f".reg .f32 fbv<{hd // 2}>;", ".reg .b32 fba<4>;", ".reg .b32 fbb<4>;")
    b.add(".reg .u32 tcsb;", f".reg .u32 fbka<{ks}>;", f".reg .u32 fbqb<{ks}>;", f".reg .u32 fbqt<{ks}>;", f".reg .u32 fbkt<{ks}>;", ".reg .u32 fbsa;")
    b.add("mov.u32 tcsb, memopt_fb_smem;")
    for n, name in enumerate(["fbka", "fbqb"]):
        b.add(*[f"add.u32 {name}{i}, tcsb, %{n * ks + i};" for i in range(ks)])
    b.add(f"add.u32 fbsa, tcsb, %{2 * ks};")
    for name in ("fbk", "fbv"):
        for start in range(0, hd // 2, 8):
            b.add(*[f"mov.f32 {name}{i}, {ZERO};" for i in range(start, start + 8)])
    return b


def bwd_declare_trans(hd):
    ks = hd // 16
    b = Block()
    for n, name in enumerate(["fbqt", "fbkt"]):
        b.add(*[f"add.u32 {name}{i}, tcsb, %{n * ks + i};" for i in range(ks)])
    return b


def bwd_scores(hd):
    tile = 64 * hd * 2
    step = 16 * hd * 2
    b = Block()
    b.add("{ .reg .u32 t;")
    for name in ("fbs", "fbd"):
        for start in range(0, 16, 8):
            b.add(*[f"mov.f32 {name}{i}, {ZERO};" for i in range(start, start + 8)])
    for k in range(hd // 16):
        b.add(f"add.u32 t, fbqb{k}, %0;")
        for acc, a_off, b_off in (("fbs", 0, 0), ("fbd", tile, tile)):
            b.add(f"{LDSM} {regs('fba', 0)}, [fbka{k}+{a_off}];")
            for pair in range(2):
                mma_pair(b, f"{LDSM} {regs('fbb', 0)}, [t+{b_off + pair * step}];", FBA, regs(acc, 8 * pair), regs(acc, 8 * pair + 4))
    b.add("}")
    return b


def bwd_mask():
    # Query − key of (ni, r): keys g + 8(r/2), queries 8ni + 2t + (r mod 2).
    return mask("fbs", 4, lambda ni, r: 8 * ni + (r & 1) - 8 * (r >> 1))


def bwd_probs():
    b = Block()
    b.add("{ .reg .u32 t; .reg .f32 l0, l1, e0, e1, x;", "add.u32 t, tcsb, %1;")
    for ni in range(4):
        b.add(f"ld.shared.v2.f32 {{l0, l1}}, [t+{32 * ni}];", f"ld.shared.v2.f32 {{e0, e1}}, [t+{256 + 32 * ni}];")
        for r in range(4):
            s, d = f"fbs{4 * ni + r}", f"fbd{4 * ni + r}"
            b.add(f"fma.rn.f32 {s}, {s}, %0, l{r & 1};", f"ex2.approx.ftz.f32 {s}, {s};", f"sub.f32 x, {d}, e{r & 1};", f"mul.f32 {d}, {s}, x;")
    b.add("}")
    return b


def bwd_grads(hd):
    tile = 64 * hd * 2
    step = 16 * hd * 2
    pairs = hd // 16
    b = per_pair_addresses("fbqt", pairs)
    for kk in range(2):
        for src, acc, off in (("fbs", "fbv", tile), ("fbd", "fbk", 0)):
            b.add(*p_fragment("fba", lambda i, src=src: f"{src}{i}", kk))
            for pair in range(pairs):
                mma_pair(b, f"{LDSMT} {regs('fbb', 0)}, [t{pair}+{off + kk * step}];", FBA, regs(acc, 8 * pair), regs(acc, 8 * pair + 4))
    b.add("}")
    return b


def bwd_store_ds():
    b = Block()
    b.add("{ .reg .u32 a, x; .reg .b32 w;", "add.u32 a, tcsb, %0;")
    for ni in range(4):
        b.add(f"xor.b32 x, %1, {ni}; shl.b32 x, x, 4; add.u32 x, x, a;",
              f"cvt.rn.bf16x2.f32 w, fbd{4 * ni + 1}, fbd{4 * ni}; st.shared.b32 [x], w;",
              f"cvt.rn.bf16x2.f32 w, fbd{4 * ni + 3}, fbd{4 * ni + 2}; st.shared.b32 [x+1024], w;")
    b.add("}")
    return b


def bwd_dq(hd):
    step = 16 * hd * 2
    b = Block()
    for start in range(0, hd // 2, 8):
        b.add(*[f"mov.f32 {dq_reg(hd, i)}, {ZERO};" for i in range(start, start + 8)])
    for k in range(4):
        b.add(f"{LDSMT} {regs('fba', 0)}, [fbsa+{k * 16 * 128}];")
        for pair in range(hd // 16):
            c0 = "{" + ",".join(dq_reg(hd, 8 * pair + i) for i in range(4)) + "}"
            c1 = "{" + ",".join(dq_reg(hd, 8 * pair + 4 + i) for i in range(4)) + "}"
            mma_pair(b, f"{LDSMT} {regs('fbb', 0)}, [fbkt{pair}+{k * step}];", FBA, c0, c1)
    return b


def bwd_dq_add(hd):
    b = Block()
    b.add("{ .reg .f32 x; .reg .u64 a1; .reg .pred p0, p1;", "setp.ne.s32 p0, %2, 0; setp.ne.s32 p1, %3, 0; add.u64 a1, %0, %1;")
    for ni in range(hd // 8):
        b.add(*[f"mul.f32 x, {dq_reg(hd, 4 * ni + r)}, %4; @p{r >> 1} red.global.add.f32 [{'%0' if r < 2 else 'a1'}+{(8 * ni + (r & 1)) * 4}], x;" for r in range(4)])
    b.add("}")
    return b


def bwd_store(hd, bf16):
    b = Block()
    if bf16:
        b.add("{ .reg .b32 w; .reg .f32 x, y; .reg .u64 k1, v0, v1; .reg .pred p0, p1;")
    else:
        b.add("{ .reg .f32 x, y; .reg .u64 k1, v0, v1; .reg .pred p0, p1;")
    b.add("setp.ne.s32 p0, %3, 0; setp.ne.s32 p1, %4, 0; add.u64 k1, %0, %1; add.u64 v0, %0, %2; add.u64 v1, k1, %2;")
    for ni in range(hd // 8):
        for h in (0, 1):
            p = f"p{h}"
            k_at, v_at = ("%0", "v0") if h == 0 else ("k1", "v1")
            lo, hi = 4 * ni + 2 * h, 4 * ni + 2 * h + 1
            if bf16:
                off = 16 * ni
                for acc, at, scaled in (("fbk", k_at, True), ("fbv", v_at, False)):
                    add = (f"fma.rn.f32 x, {acc}{lo}, %5, x; fma.rn.f32 y, {acc}{hi}, %5, y;" if scaled
                           else f"add.f32 x, x, {acc}{lo}; add.f32 y, y, {acc}{hi};")
                    b.add(f"@{p} ld.global.b32 w, [{at}+{off}];", "shl.b32 x, w, 16; and.b32 y, w, 0xffff0000;", add,
                          f"cvt.rn.bf16x2.f32 w, y, x; @{p} st.global.b32 [{at}+{off}], w;")
            else:
                off = 32 * ni
                for acc, at, scaled in (("fbk", k_at, True), ("fbv", v_at, False)):
                    add = (f"fma.rn.f32 x, {acc}{lo}, %5, x; fma.rn.f32 y, {acc}{hi}, %5, y;" if scaled
                           else f"add.f32 x, x, {acc}{lo}; add.f32 y, y, {acc}{hi};")
                    b.add(f"@{p} ld.global.v2.f32 {{x, y}}, [{at}+{off}];", add, f"@{p} st.global.v2.f32 [{at}+{off}], {{x, y}};")
    b.add("}")
    return b


# Blocks that do not depend on the head dim: (constant, what it does, generator).
SINGLE = [
    ("FwdMask", "Scores outside the visible band (0 ≤ row − key &lt; W; %0 = this lane's row − key of fas0, %1 = W) become −∞.", fwd_mask),
    ("BwdMask", "Scores outside the visible band (0 ≤ query − key &lt; W; %0 = this lane's query − key of fbs0, %1 = W) become −∞.", bwd_mask),
    ("BwdProbs", "P = 2^(s·%0 − L·log2 e) in fbs and dS = P ∘ (dP − D) in fbd; %1 = this lane's offset of −L·log2 e in shared memory (D 256 bytes further).", bwd_probs),
    ("BwdStoreDs", "dSᵀ (fbd) rounded to bf16 into the shared dSᵀ tile: %0 = this lane's row offset (row g; g + 8 is 1024 bytes further), %1 = g XOR the half's first chunk.", bwd_store_ds),
]

# Blocks written per head dim (32 and 64), generated from hd.
PER_HEAD_DIM = [
    ("FwdDeclare", "shared memory, named registers, this lane's K/V ldmatrix addresses in stage 0 (%0.. offsets from the base), O = 0, m = −1e30, l = 0.", fwd_declare),
    ("FwdLoadQ", "this warp's Q A-fragments (faq) from the Q tile (%k: lane offset of k16 step k).", fwd_load_q),
    ("FwdScores", "S = Q·Kᵀ for the key tile in stage %0 (fas, 16 rows × 64 keys per warp).", fwd_scores),
    ("FwdSoftmax", "online softmax on S (%0 = scale·log2 e): new row max m, P = 2^(s·%0 − m·%0) in fas, l and O rescaled by 2^((m_old − m)·%0).", fwd_softmax),
    ("FwdPv", "O += P·V, P rounded to bf16 A-fragments from fas, V by ldmatrix.trans from stage %0.", fwd_pv),
    ("FwdFinish", "l summed over the row's 4 lanes, y = O/l stored as bf16 pairs at %0 (row g) and %0 + %1 (row g + 8) where %2, %3 ≠ 0.", fwd_finish),
    ("BwdDeclare", "shared memory, named registers, this lane's ldmatrix addresses (%0..: K as A and Q as B per k16 step, then dSᵀ as A.trans), dK = dV = 0.", bwd_declare),
    ("BwdDeclareTrans", "this lane's ldmatrix.trans addresses (%0..: Q as B per n pair, then K as B per n pair).", bwd_declare_trans),
    ("BwdScores", "Sᵀ = K·Qᵀ (fbs) and dPᵀ = V·dOᵀ (fbd) for this warp's 16 keys and the 32 queries of the half at row offset %0.", bwd_scores),
    ("BwdGrads", "dV += Pᵀ·dO and dK += dSᵀ·Q (P, dS rounded to bf16 A-fragments; dO and Q by ldmatrix.trans at row offset %0).", bwd_grads),
    ("BwdDq", "this warp's 16 query rows of dQ = dS·K (dS by ldmatrix.trans from the dSᵀ tile) into the S and dP registers.", bwd_dq),
    ("BwdDqAdd", "dq += %4·dQ by fp32 atomics at %0 (row g) and %0 + %1 (row g + 8) where %2, %3 ≠ 0.", bwd_dq_add),
    ("BwdStoreF32", "float32 d(qkv) += (%5·dK, dV): dK at %0 (row g), %0 + %1 (row g + 8), dV %2 bytes further, where %3, %4 ≠ 0.", lambda hd: bwd_store(hd, False)),
    ("BwdStoreBf16", "bfloat16 d(qkv) += (%5·dK, dV), each element rounded once; addresses as BwdStoreF32.", lambda hd: bwd_store(hd, True)),
]


def main():
    out = ["// Generated by tools/flash_attention_ptx.py: do not edit by hand; change the script and run it again.\n",
           "namespace Memopt.Kernels;\n", "public static partial class FlashAttentionTensorCore\n{\n"]
    for name, doc, make in SINGLE:
        out.append(cs_const(name, doc, make()))
    for name, doc, make in PER_HEAD_DIM:
        out += cs_pair(name, doc, make)
    out.append("}\n")
    path = os.path.join("src", "Kernels", "FlashAttentionTensorCore.Ptx.cs")
    with open(path, "w") as f:
        f.write("\n".join(out))


if __name__ == "__main__":
    main()
