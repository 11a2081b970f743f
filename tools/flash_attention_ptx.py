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


class Block:
    def __init__(self):
        self.lines = []

    def add(self, *instructions):
        self.lines.append(" ".join(instructions))


def cs_const(name, doc, block):
    body = " +\n        ".join('"' + line + '\\n\\t"' for line in block.lines[:-1])
    last = '"' + block.lines[-1] + '"'
    text = (body + " +\n        " + last) if body else last
    return f"    /// <summary>{doc}</summary>\n    private const string {name} =\n        {text};\n"


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
            b.add(f"{LDSM} {regs('fab', 0)}, [t+{pair * pair_bytes}];")
            b.add(mma(regs("fas", 8 * pair), regs("faq", 4 * k), "{fab0,fab1}"))
            b.add(mma(regs("fas", 8 * pair + 4), regs("faq", 4 * k), "{fab2,fab3}"))
    b.add("}")
    return b


def fwd_mask():
    b = Block()
    b.add("{ .reg .s32 d; .reg .pred p;")
    for ni in range(8):
        for r in range(4):
            imm = 8 * (r >> 1) - 8 * ni - (r & 1)
            x = f"fas{4 * ni + r}"
            b.add(f"add.s32 d, %0, {imm};", "setp.lt.u32 p, d, %1;", f"selp.f32 {x}, {x}, {NEG_INF}, p;")
    b.add("}")
    return b


def fwd_softmax(hd):
    row = [[4 * ni + r for ni in range(8) for r in (0, 1)], [4 * ni + r for ni in range(8) for r in (2, 3)]]
    b = Block()
    b.add("{ .reg .f32 x0, x1, y, a0, a1, n0, n1;")
    for h in (0, 1):
        v = row[h]
        b.add(f"max.f32 x{h}, fas{v[0]}, fas{v[1]};", *[f"max.f32 x{h}, x{h}, fas{i};" for i in v[2:]])
        b.add(f"{SHFL} y, x{h}, 1, 31, 0xffffffff;", f"max.f32 x{h}, x{h}, y;", f"{SHFL} y, x{h}, 2, 31, 0xffffffff;", f"max.f32 x{h}, x{h}, y;")
        b.add(f"max.f32 x{h}, x{h}, fam{h};", f"mul.f32 n{h}, x{h}, %0;", f"mul.f32 a{h}, fam{h}, %0;", f"sub.f32 a{h}, a{h}, n{h};",
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


def fwd_pv(hd):
    step = 16 * hd * 2
    pairs = hd // 16
    b = Block()
    b.add("{ " + " ".join(f".reg .u32 t{i};" for i in range(pairs)))
    b.add(*[f"add.u32 t{i}, fav{i}, %0;" for i in range(pairs)])
    for kk in range(4):
        b.add(*p_fragment("fap", lambda i: f"fas{i}", kk))
        for pair in range(pairs):
            b.add(f"{LDSMT} {regs('fab', 0)}, [t{pair}+{kk * step}];")
            b.add(mma(regs("fao", 8 * pair), "{fap0,fap1,fap2,fap3}", "{fab0,fab1}"))
            b.add(mma(regs("fao", 8 * pair + 4), "{fap0,fap1,fap2,fap3}", "{fab2,fab3}"))
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


def main():
    out = []
    out.append("// Generated by tools/flash_attention_ptx.py: do not edit by hand; change the script and run it again.\n")
    out.append("namespace Memopt.Kernels;\n")
    out.append("public static partial class FlashAttentionTensorCore\n{\n")
    out.append(cs_const("FwdMask", "Scores outside the visible band (0 ≤ row − key &lt; W; %0 = this lane's row − key of fas0, %1 = W) become −∞.", fwd_mask()))
    for hd in (32, 64):
        out.append(cs_const(f"FwdDeclare{hd}", f"hd {hd}: shared memory, named registers, this lane's K/V ldmatrix addresses in stage 0 (%0.. offsets from the base), O = 0, m = −1e30, l = 0.", fwd_declare(hd)))
        out.append(cs_const(f"FwdLoadQ{hd}", f"hd {hd}: this warp's Q A-fragments (faq) from the Q tile (%k: lane offset of k16 step k).", fwd_load_q(hd)))
        out.append(cs_const(f"FwdScores{hd}", f"hd {hd}: S = Q·Kᵀ for the key tile in stage %0 (fas, 16 rows × 64 keys per warp).", fwd_scores(hd)))
        out.append(cs_const(f"FwdSoftmax{hd}", f"hd {hd}: online softmax on S (%0 = scale·log2 e): new row max, P = 2^(s·%0 − m·%0) in fas, l and O rescaled.", fwd_softmax(hd)))
        out.append(cs_const(f"FwdPv{hd}", f"hd {hd}: O += P·V, P rounded to bf16 A-fragments from fas, V by ldmatrix.trans from stage %0.", fwd_pv(hd)))
        out.append(cs_const(f"FwdFinish{hd}", f"hd {hd}: l summed over the row's 4 lanes, y = O/l stored as bf16 pairs at %0 (row g) and %0 + %1 (row g + 8) where %2, %3 ≠ 0.", fwd_finish(hd)))
    out.append("}\n")
    path = os.path.join("src", "Kernels", "FlashAttentionTensorCore.Ptx.cs")
    with open(path, "w") as f:
        f.write("\n".join(out))


if __name__ == "__main__":
    main()
