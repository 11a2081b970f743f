using ILGPU;
using ILGPU.Runtime;
using Memopt.Tensors;

namespace Memopt.Kernels;

/// <summary>
/// The warp-level tensor-core instructions the kernels (<see cref="TensorCoreGemm"/>, bf16 and fp32 operands;
/// <see cref="FlashAttentionTensorCore"/>) issue through inline PTX, and their lane-by-lane emulation for the emulated
/// twins, written once from the PTX ISA's fragment layouts (g = lane/4, t = lane mod 4, h the bf16 half, low first;
/// the tf32 form is at <see cref="EmulateMmaTf32"/>):
///   mma.m16n8k16 A register r holds A[g + 8(r mod 2)][2t + 8(r/2) + h], B register r holds B[2t + 8r + h][g],
///   accumulator r holds D[g + 8(r/2)][2t + (r mod 2)];
///   ldmatrix.m8n8.x4: lanes 8j..8j+7 give the row addresses of matrix j; lane i receives in register j the elements
///   (row i/4, columns 2(i mod 4), +1) of matrix j, or with .trans the elements (rows 2(i mod 4), +1, column i/4).
/// The emulations read and write "register files" laid out as arrays: lane i's register r of a fragment that starts
/// at slot s is regs[base + i·stride + s + r].
/// </summary>
public static class WarpMma
{
    public const string Ldsm = "ldmatrix.sync.aligned.m8n8.x4.shared.b16 ";
    public const string LdsmTrans = "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 ";
    public const string Mma = "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 ";

    /// <summary>Row (within the 16×8 tile) of accumulator register <paramref name="r"/> of <paramref name="lane"/>.</summary>
    public static int AccumulatorRow(int lane, int r) => (lane >> 2) + 8 * (r >> 1);

    /// <summary>Column (within the 16×8 tile) of accumulator register <paramref name="r"/> of <paramref name="lane"/>.</summary>
    public static int AccumulatorCol(int lane, int r) => 2 * (lane & 3) + (r & 1);

    /// <summary>
    /// ldmatrix.sync.aligned.m8n8.x4(.trans).shared.b16 for one warp: <paramref name="rowAddress"/>[l] is the byte
    /// offset in <paramref name="smem"/> of the row lane l hands over; lane i's registers 0..3 are written to
    /// regs[regBase + i·regStride + j].
    /// </summary>
    public static void EmulateLdmatrix(ArrayView<ushort> smem, ArrayView<int> rowAddress, bool trans, ArrayView<uint> regs, long regBase, int regStride)
    {
        for (int i = 0; i < 32; i++)
        {
            for (int j = 0; j < 4; j++)
            {
                uint lo, hi;
                if (!trans)
                {
                    int w = rowAddress[8 * j + (i >> 2)] / 2 + 2 * (i & 3);
                    lo = smem[w];
                    hi = smem[w + 1];
                }
                else
                {
                    int src = 8 * j + 2 * (i & 3);
                    lo = smem[rowAddress[src] / 2 + (i >> 2)];
                    hi = smem[rowAddress[src + 1] / 2 + (i >> 2)];
                }
                regs[regBase + i * regStride + j] = lo | (hi << 16);
            }
        }
    }

    /// <summary>
    /// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 for one warp, D = A·B + D: lane i's A registers are
    /// regs[aBase + i·regStride + 0..3], its B registers regs[bBase + i·regStride + 0..1], its accumulators
    /// acc[cBase + i·accStride + 0..3].
    /// </summary>
    public static void EmulateMma(ArrayView<uint> regs, int regStride, long aBase, long bBase, ArrayView<float> acc, int accStride, long cBase)
    {
        for (int i = 0; i < 32; i++)
        {
            for (int r = 0; r < 4; r++)
            {
                int row = AccumulatorRow(i, r), col = AccumulatorCol(i, r);
                float sum = 0f;
                for (int kk = 0; kk < 16; kk++)
                {
                    int aLane = (row & 7) * 4 + ((kk & 7) >> 1), aReg = (row >> 3) + 2 * (kk >> 3);
                    int bLane = col * 4 + ((kk & 7) >> 1), bReg = kk >> 3;
                    uint aw = regs[aBase + aLane * regStride + aReg];
                    uint bw = regs[bBase + bLane * regStride + bReg];
                    float av = BFloat16.ToFloat((ushort)((kk & 1) == 0 ? aw : aw >> 16));
                    float bv = BFloat16.ToFloat((ushort)((kk & 1) == 0 ? bw : bw >> 16));
                    sum += av * bv;
                }
                acc[cBase + i * accStride + r] += sum;
            }
        }
    }

    /// <summary>
    /// cvt.rna.tf32.f32: <paramref name="x"/> rounded to TF32 (10 mantissa bits; to nearest, ties away from zero), kept
    /// in an fp32 word whose low 13 bits are zero. Infinities and NaN pass through.
    /// </summary>
    public static float RoundTf32(float x)
    {
        uint bits = Interop.FloatAsInt(x);
        if ((bits & 0x7F800000u) == 0x7F800000u) return x;
        return Interop.IntAsFloat((bits + 0x1000u) & 0xFFFFE000u);
    }

    /// <summary>
    /// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 for one warp, D = A·B + D, on fp32 words (register layouts:
    /// A register r holds A[g + 8(r mod 2)][t + 4(r/2)], B register r holds B[t + 4r][g], accumulators as m16n8k16).
    /// <paramref name="passes"/> 1: the kernel's cvt.rna of every word, one product; 3: each word x split into
    /// big = rna(x) and small = rna(x − big), and three mma in the kernel's order: small·big, big·small, big·big.
    /// </summary>
    public static void EmulateMmaTf32(ArrayView<uint> regs, int regStride, long aBase, long bBase, ArrayView<float> acc, int accStride, long cBase, int passes)
    {
        for (int i = 0; i < 32; i++)
        {
            for (int r = 0; r < 4; r++)
            {
                int row = AccumulatorRow(i, r), col = AccumulatorCol(i, r);
                float smallBig = 0f, bigSmall = 0f, bigBig = 0f;
                for (int kk = 0; kk < 8; kk++)
                {
                    float a = Interop.IntAsFloat(regs[aBase + ((row & 7) * 4 + (kk & 3)) * regStride + (row >> 3) + 2 * (kk >> 2)]);
                    float b = Interop.IntAsFloat(regs[bBase + (col * 4 + (kk & 3)) * regStride + (kk >> 2)]);
                    float aBig = RoundTf32(a), bBig = RoundTf32(b);
                    bigBig += aBig * bBig;
                    if (passes == 3)
                    {
                        smallBig += RoundTf32(a - aBig) * bBig;
                        bigSmall += aBig * RoundTf32(b - bBig);
                    }
                }
                long c = cBase + i * accStride + r;
                if (passes == 3)
                {
                    acc[c] += smallBig;
                    acc[c] += bigSmall;
                }
                acc[c] += bigBig;
            }
        }
    }

    /// <summary>
    /// The launch of an emulated kernel that plays <paramref name="groups"/> groups: a few threads (one group per
    /// simulated multiprocessor on the CPU), each playing whole groups one after another with its own emulated shared
    /// memory and register file; <paramref name="workers"/> is how many such scratch sets the caller allocates.
    /// </summary>
    public static KernelConfig EmulatedLaunch(ComputeDevice device, long groups, out int workers)
    {
        int group = Launch.GroupSize(device, 16);
        long launchGroups = Math.Clamp((groups + group - 1) / group, 1, device.IsCuda ? 64 : Math.Max(1, device.Multiprocessors));
        var config = new KernelConfig((int)launchGroups, group);
        workers = config.GridDim.X * config.GroupDim.X;
        return config;
    }

    /// <summary>
    /// cp.async of one 16-byte chunk as the emulations perform it (the copy completes at once): its first
    /// <paramref name="valid"/> values from element <paramref name="elem"/> of <paramref name="x"/>, the rest zero, to
    /// byte <paramref name="byteOffset"/> of the emulated shared memory.
    /// </summary>
    public static void EmulateCopy(ArrayView<ushort> x, ArrayView<ushort> smem, int byteOffset, long elem, int valid)
    {
        int w = byteOffset >> 1;
        for (int j = 0; j < 8; j += 2)
        {
            uint pair = TensorCoreGemm.PackPair(x, elem, valid, j);
            smem[w + j] = (ushort)pair;
            smem[w + j + 1] = (ushort)(pair >> 16);
        }
    }

    /// <summary>
    /// The PTX ILGPU generates for an explicitly grouped kernel method, for inspection (ptxas -v, cuobjdump, tests that
    /// the inline assembly compiles): the device's own backend on CUDA, an sm_90 one elsewhere (no GPU needed).
    /// </summary>
    public static string CompilePtx(ComputeDevice device, System.Reflection.MethodInfo kernel)
    {
        var entry = ILGPU.Backends.EntryPoints.EntryPointDescription.FromExplicitlyGroupedKernel(kernel);
        if (device.Accelerator is ILGPU.Runtime.Cuda.CudaAccelerator cuda)
            return ((ILGPU.Backends.PTX.PTXCompiledKernel)cuda.Backend.Compile(entry, default)).PTXAssembly;
        using var backend = new ILGPU.Backends.PTX.PTXBackend(device.Context, ILGPU.Runtime.Cuda.CudaArchitecture.SM_90, ILGPU.Runtime.Cuda.CudaInstructionSet.ISA_88, null!);
        return ((ILGPU.Backends.PTX.PTXCompiledKernel)backend.Compile(entry, default)).PTXAssembly;
    }

}
