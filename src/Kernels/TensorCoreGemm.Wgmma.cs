using System.Reflection;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using Memopt.Tensors;

namespace Memopt.Kernels;

/// <summary>
/// The 64-deep narrow tile on Hopper's warpgroup MMA (`wgmma.mma_async`, sm_90a): the same 128×128 output tile, ring
/// of three 64-deep cp.async stages, split K, raster order and epilogues as <see cref="TensorCoreKernelK64"/>, but the
/// tensor cores read A and B straight from shared memory through matrix descriptors instead of each warp's ldmatrix
/// fragments. Two warpgroups per group, each one m64n128k16 per k16 step (rows 64·wg …+63, all 128 columns, 64 fp32
/// accumulators per thread as before).
///
/// Memory flow: the K-contiguous slices ([128 rows][64 k], 128-byte rows, 16-byte chunk c of row r at c ⊕ (r mod 8))
/// are already the "128-byte swizzle, K-major" layout the descriptors describe (8-row groups 1024 bytes apart; a k16
/// step is 32 bytes further). MN-contiguous slices are stored as two 64-row halves of [64 k-rows][128 bytes]
/// (<see cref="WgmmaMnOffset"/>), the "128-byte swizzle, MN-major" layout: 8-k-row groups 1024 bytes apart, halves
/// 8192 apart, a k16 step 2048 bytes further. Per slice: wait for its copies, make them visible to the tensor cores'
/// async proxy (fence.proxy.async), wait for this thread's previous wgmma group, barrier (so every warpgroup is done
/// reading the stage the next copies overwrite), four wgmma, commit, then the copies of slice i + 2.
///
/// ILGPU 1.5.3 writes `.target sm_90` (or lower) into its PTX and wgmma needs `sm_90a`: the kernel is compiled by
/// ILGPU's own backend, the target line of its PTX is rewritten, and the module loaded through ILGPU's
/// Accelerator.LoadKernel(CompiledKernel) (<see cref="LoadWgmma"/>). Only on compute capability 9.0, and only where the
/// module loads (<see cref="WgmmaAvailable"/>); everything else keeps the mma.sync kernels. The emulated twin
/// (<see cref="GemmEmulated"/>) emulates the mma.sync tile only: the wgmma kernel computes the same tile, slices and
/// float32 sums, its shared-memory layouts and descriptors are checked on the CPU, and the kernel itself against
/// float64 on an H100 (WgmmaGemmTests).
/// </summary>
public static partial class TensorCoreGemm
{
    /// <summary>Which tensor-core instruction the 64-deep bf16 tile uses.</summary>
    public enum MmaKind
    {
        /// <summary>wgmma where it runs (compute capability 9.0, the module loads) and K is long enough (<see cref="WgmmaMinSlices"/>), else mma.sync.</summary>
        Auto,
        /// <summary>`mma.sync.m16n8k16` with ldmatrix fragments (every CUDA device with bf16 tensor cores).</summary>
        MmaSync,
        /// <summary>`wgmma.mma_async.m64n128k16` from shared-memory descriptors (sm_90a) whatever K; falls back to mma.sync where unavailable.</summary>
        Wgmma,
    }

    private static readonly LaunchOverride<MmaKind> MmaOverride = new();

    /// <summary>Forces the tensor-core instruction of the 64-deep tile for this thread of execution until disposed (benchmarks and tests compare the two).</summary>
    public static IDisposable UseMma(MmaKind kind) => MmaOverride.Use(kind);

    /// <summary>
    /// Whether 64-deep bf16 GEMMs on this device may run on wgmma now: not forced to mma.sync, and available. Under
    /// <see cref="MmaKind.Auto"/> a launch also needs <see cref="WgmmaMinSlices"/> K slices per group (<see cref="InstructionFor"/>).
    /// </summary>
    public static bool WgmmaFor(ComputeDevice device) => MmaOverride.Value != MmaKind.MmaSync && WgmmaAvailable(device);

    /// <summary>
    /// Byte offset of 16-byte chunk <paramref name="chunk"/> (rows 8·chunk …+7) of k-row <paramref name="krow"/> in the
    /// wgmma kernel's MN-contiguous 64-deep slice of 128 rows: half chunk/8 (8192 bytes each), k-row krow (128 bytes),
    /// chunk XORed with krow mod 8 inside its 128-byte row (the hardware's 128-byte swizzle).
    /// </summary>
    public static int WgmmaMnOffset(int krow, int chunk) => (chunk >> 3) * 8192 + krow * 128 + (((chunk & 7) ^ (krow & 7)) << 4);

    /// <summary>
    /// The constant bits of a wgmma shared-memory matrix descriptor (the start address is added in the kernel):
    /// leading and stride byte offsets in 16-byte units at bits 16 and 32, 128-byte swizzle (1) at bit 62.
    /// K-major: leading offset unused (1), stride 1024 (8 rows of 128 bytes). MN-major: leading offset 8192 (the next
    /// 64 rows), stride 1024 (the next 8 k-rows), as CUTLASS's canonical MN-major layout reads them; the H100 agrees
    /// (the opposite reading failed 10 of the 16 CUDA tests, docs/runs/h100-wgmma/call1).
    /// </summary>
    public static ulong WgmmaDescriptor(bool kMajor) => kMajor ? Descriptor(16, 1024) : Descriptor(8192, 1024);

    private static ulong Descriptor(int leadingBytes, int strideBytes) =>
        ((ulong)(leadingBytes >> 4) << 16) | ((ulong)(strideBytes >> 4) << 32) | (1UL << 62);

    /// <summary>
    /// A warpgroup's descriptor for stage 0, k16 step 0, less the ring's base address (the kernel adds base/16):
    /// <paramref name="bits"/> (<see cref="WgmmaDescriptor"/>) plus the operand's offset in the stage, in 16-byte
    /// units. Warpgroup wg's A rows start 64 rows (8192 bytes) into A's slice in either layout; B, read whole by both
    /// warpgroups, is the slice after A's (<paramref name="sliceOffset"/>).
    /// </summary>
    public static ulong WgmmaOperandDescriptor(ulong bits, int sliceOffset, int warpgroup) => bits + (ulong)((sliceOffset + warpgroup * 8192) >> 4);

    /// <summary>What a k16 step adds to a descriptor (16-byte units): 32 bytes along a K-major row, 16 k-rows (2048 bytes) of an MN-major slice (the PTX of <see cref="WgmmaSliceKK"/> etc. adds these).</summary>
    public static int WgmmaKStepUnits(bool kMajor) => kMajor ? 2 : 128;

    /// <summary>
    /// The CPU's model of what the tensor cores read: the shared-memory byte address of element (mn, k), k &lt; 16, of
    /// the operand a wgmma reads through <paramref name="desc"/> (16-bit elements, 128-byte swizzle), per the PTX ISA's
    /// canonical layouts. K-major: 8-row groups the stride offset apart, rows 128 bytes apart, k contiguous. MN-major:
    /// 64-row blocks the leading offset apart, 8-k-row groups the stride offset apart, k-rows 128 bytes apart, mn
    /// contiguous. Then the swizzle: address bits 4–6 XOR bits 7–9. Tests read the kernel's slices through it.
    /// </summary>
    public static int WgmmaElementAddress(ulong desc, bool kMajor, int mn, int k)
    {
        int start = (int)(desc & 0x3FFF) << 4, leading = (int)((desc >> 16) & 0x3FFF) << 4, stride = (int)((desc >> 32) & 0x3FFF) << 4;
        int plain = kMajor
            ? start + (mn >> 3) * stride + (mn & 7) * 128 + k * 2
            : start + (mn >> 6) * leading + (k >> 3) * stride + (k & 7) * 128 + (mn & 63) * 2;
        return plain ^ (((plain >> 7) & 7) << 4);
    }

    /// <summary>Dynamic shared memory of the wgmma kernel: three 32 KB stages and 1024 for aligning the base to the swizzle's 1024-byte pattern.</summary>
    private const int WgmmaDynamicBytes = Ring64Stages * Ring64StageBytes + 1024;

    private static readonly string[] WgmmaKeys = Enumerable.Range(0, 16).Select(i => $"tc_gemm_wgmma.{i}").ToArray();

    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<ComputeDevice, object> WgmmaProbe = new();

    /// <summary>
    /// Whether this device runs the wgmma kernel: compute capability 9.0, the deep tiles' dynamic shared memory, and the
    /// driver taking the sm_90a module (loaded once per device). The load allocates nothing; the deep-tile probe it
    /// depends on allocates its three small tensors if no GEMM has run it yet (<see cref="DeepAvailable"/>). Results
    /// are not probed here: the CUDA tests check every transpose against float64.
    /// </summary>
    public static bool WgmmaAvailable(ComputeDevice device)
    {
        if (device.Accelerator is not CudaAccelerator cuda || cuda.Architecture.Major != 9 || cuda.Architecture.Minor != 0) return false;
        var result = WgmmaProbe.GetValue(device, d =>
        {
            try
            {
                if (!DeepAvailable(d)) return "the deep tiles (dynamic shared memory over 48 KB) do not run here";
                const int layout = AVectorBit | BVectorBit;
                d.Kernel(WgmmaKeys[layout], acc => LoadWgmma(acc, layout));
                return (object)true;
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                return e.Message;
            }
        });
        return result is true;
    }

    /// <summary>Why the wgmma kernel does not run on this device (null when it does or was not probed).</summary>
    public static string? WgmmaUnavailableBecause(ComputeDevice device) => WgmmaProbe.TryGetValue(device, out var r) ? r as string : null;

    /// <summary>
    /// Whether this launch of the 64-deep tile runs on wgmma: forced (<see cref="MmaKind.Wgmma"/>), or under
    /// <see cref="MmaKind.Auto"/> when each group walks at least <see cref="WgmmaMinSlices"/> K slices. Measured on the
    /// H100 (docs/performance.md, call 2): from K = 512 on, wgmma is as fast or faster (4096³ +40–60 %, the fused
    /// head's dx and dW 11–12 %); at K = 256 (four slices, the pipeline never fills) it ranged from 12 % faster (fc2's
    /// grad-input) to 15 % slower (the unfused LM head's logits, 25,152 tiles), so those stay on mma.sync.
    /// </summary>
    private static bool LaunchWgmmaNow(ComputeDevice device, Tile tile, int passes, int slicesPerSplit) =>
        tile == Tile.NarrowK64 && passes == 0 && WgmmaFor(device)
        && (MmaOverride.Value == MmaKind.Wgmma || slicesPerSplit >= WgmmaMinSlices);

    /// <summary>
    /// The instruction <see cref="TryGemm"/> would run this bf16 GEMM on here and now (<see cref="MmaKind.Wgmma"/> or
    /// <see cref="MmaKind.MmaSync"/>): its plan's tile and K slices per group, the override, availability. For reports
    /// (`bench gemm`) and tests.
    /// </summary>
    public static MmaKind InstructionFor(MatrixOperand a, MatrixOperand b, MatrixOperand c, int m, int n, int k, int batch = 1)
    {
        var device = a.Tensor.Device;
        var plan = PlanOf(m, n, k, batch, c.BatchStride == 0 && batch > 1, LayoutOf(a, b, batch), DeepTilesFor(device), device.Multiprocessors, TileOverride.Value);
        return device.IsCuda && LaunchWgmmaNow(device, plan.Tile, 0, plan.SlicesPerSplit) ? MmaKind.Wgmma : MmaKind.MmaSync;
    }

    /// <summary>The fewest 64-deep K slices per group for which <see cref="MmaKind.Auto"/> picks wgmma.</summary>
    public const int WgmmaMinSlices = 8;

    private static void LaunchWgmma(ComputeDevice device, int layout, int blocks,
        ArrayView<ushort> a, ArrayView<ushort> b, ArrayView<float> cF, ArrayView<ushort> cH, FloatView bias, TcParams p)
    {
        p.DescA = WgmmaDescriptor((layout & ATransposedBit) == 0);
        p.DescB = WgmmaDescriptor((layout & BTransposedBit) != 0);
        var launch = device.Kernel(WgmmaKeys[layout], acc => LoadWgmma(acc, layout));
        launch(new KernelConfig(new Index1D(blocks), new Index1D(Threads), SharedMemoryConfig.RequestDynamic<byte>(WgmmaDynamicBytes)), a, b, cF, cH, bias, p);
    }

    private static MethodInfo WgmmaMethod(int layout)
    {
        Type Flag(int bit) => (layout & bit) != 0 ? typeof(Yes) : typeof(No);
        return typeof(TensorCoreGemm).GetMethod(nameof(TensorCoreKernelWgmma), BindingFlags.NonPublic | BindingFlags.Static)!
            .MakeGenericMethod(Flag(ATransposedBit), Flag(BTransposedBit), Flag(AVectorBit), Flag(BVectorBit));
    }

    /// <summary>The wgmma kernel's PTX for an operand layout as the CUDA path loads it (target sm_90a), for ptxas -v; compiles anywhere.</summary>
    public static string CompileWgmmaPtx(ComputeDevice device, int layout) => WgmmaPtx(WarpMma.CompilePtx(device, WgmmaMethod(layout)));

    /// <summary>ILGPU's PTX of the wgmma kernel with its target raised to sm_90a (the PTX ISA's arch-specific Hopper features).</summary>
    public static string WgmmaPtx(string ptx)
    {
        var lines = ptx.Split('\n');
        int target = Array.FindIndex(lines, l => l.TrimStart().StartsWith(".target ", StringComparison.Ordinal));
        if (target < 0) throw new InvalidOperationException("tc_gemm wgmma: ILGPU's PTX has no .target line to raise to sm_90a");
        lines[target] = ".target sm_90a";
        return string.Join('\n', lines);
    }

    private static Action<KernelConfig, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, ArrayView<ushort>, FloatView, TcParams> LoadWgmma(
        Accelerator acc, int layout)
    {
        if (acc is not CudaAccelerator cuda) throw new InvalidOperationException("tc_gemm wgmma: not a CUDA accelerator");
        var entry = EntryPointDescription.FromExplicitlyGroupedKernel(WgmmaMethod(layout));
        var compiled = (PTXCompiledKernel)cuda.Backend.Compile(entry, default);
        var field = typeof(PTXCompiledKernel).GetField("<PTXAssembly>k__BackingField", BindingFlags.NonPublic | BindingFlags.Instance)
            ?? throw new InvalidOperationException("tc_gemm wgmma: this ILGPU's PTXCompiledKernel keeps its PTX elsewhere (expected ILGPU 1.5.3)");
        field.SetValue(compiled, WgmmaPtx(compiled.PTXAssembly));
        var kernel = acc.LoadKernel(compiled);
        if (kernel is not CudaKernel cudaKernel) throw new InvalidOperationException($"tc_gemm wgmma: {kernel.GetType().Name} is not a CUDA kernel");
        SetMaxDynamicSharedMemory(cudaKernel, WgmmaDynamicBytes);
        var launch = kernel.CreateLauncherDelegate<Action<AcceleratorStream, KernelConfig, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, ArrayView<ushort>, FloatView, TcParams>>();
        WgmmaKernels.GetOrCreateValue(acc)[layout] = cudaKernel;
        return (config, a, b, cF, cH, bias, p) => launch(acc.DefaultStream, config, a, b, cF, cH, bias, p);
    }

    /// <summary>The loaded wgmma modules per accelerator and layout (weakly keyed: a disposed device's go with it).</summary>
    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<Accelerator, System.Collections.Concurrent.ConcurrentDictionary<int, CudaKernel>> WgmmaKernels = new();

    /// <summary>What the driver made of the wgmma kernel for a layout (null until it was loaded or off CUDA).</summary>
    public static KernelResources? WgmmaResources(ComputeDevice device, int layout) =>
        WgmmaKernels.TryGetValue(device.Accelerator, out var loaded) && loaded.TryGetValue(layout, out var k) ? KernelResources.Of(device, k, Threads, WgmmaDynamicBytes) : null;

    /// <summary>
    /// The wgmma kernel (see the class comment of this file): <see cref="TensorCoreKernelK64"/>'s ring and epilogue,
    /// the tensor cores fed by descriptors.
    /// </summary>
    private static void TensorCoreKernelWgmma<TATransposed, TBTransposed, TAVector, TBVector>(
        ArrayView<ushort> a, ArrayView<ushort> b, ArrayView<float> cF, ArrayView<ushort> cH, FloatView bias, TcParams p)
        where TATransposed : struct, IFlag
        where TBTransposed : struct, IFlag
        where TAVector : struct, IFlag
        where TBVector : struct, IFlag
    {
        int tid = Group.IdxX;
        bool aKc = !default(TATransposed).On, bKc = default(TBTransposed).On;
        bool aVec = default(TAVector).On, bVec = default(TBVector).On;

        TileOf(Grid.IdxX, p, out int m0, out int n0, out int split, out int outBatch);
        int lane = tid & 31, warp = tid >> 5, wg = warp >> 2;

        var dynamicShared = SharedMemory.GetDynamic<byte>();
        if (p.M < 0) dynamicShared[0] = 0; // keeps ILGPU's declaration of the dynamic view (never runs: M > 0)
        CudaAsm.Emit(DeclareWgmma, WgmmaOperandDescriptor(p.DescA, 0, wg), WgmmaOperandDescriptor(p.DescB, Ring64ASliceBytes, 0));
        CudaAsm.Emit(ZeroNarrow);

        int count = SlicesOf(p, split, out int first);
        var copies = Slice64Copies.For(p, tid, m0, n0, first, outBatch, aKc, bKc, wgmmaLayout: true);

        copies.FillRing(a, b, p, count, aKc, bKc, aVec, bVec);

        int computeStage = 0;
        for (int i = 0; i < count; i++)
        {
            // Slice i's copies are in; the tensor cores read through the async proxy, so the writes are fenced for it.
            // This thread's wgmma of slice i-1 are done before the barrier, so after it no warpgroup still reads the
            // stage the copies below overwrite.
            CudaAsm.Emit("cp.async.wait_group 1;\n\tfence.proxy.async.shared::cta;\n\twgmma.wait_group.sync.aligned 0;");
            Group.Barrier();
            long st16 = (computeStage * Ring64StageBytes) >> 4;
            if (aKc && bKc) CudaAsm.Emit(WgmmaSliceKK, st16);
            else if (aKc) CudaAsm.Emit(WgmmaSliceKM, st16);
            else if (bKc) CudaAsm.Emit(WgmmaSliceMK, st16);
            else CudaAsm.Emit(WgmmaSliceMM, st16);
            copies.Refill(a, b, p, i + Ring64Stages - 1 < count, aKc, bKc, aVec, bVec);
            computeStage = computeStage == Ring64Stages - 1 ? 0 : computeStage + 1;
        }
        CudaAsm.Emit("wgmma.wait_group.sync.aligned 0;");

        long cBase = p.COffset + outBatch * p.CBatch + split * p.SplitStride;
        int row = m0 + wg * 64 + (warp & 3) * 16 + (lane >> 2), col = n0 + 2 * (lane & 3);
        if (p.StagedStores != 0)
        {
            CudaAsm.Emit("cp.async.wait_group 0;");
            Group.Barrier();
            StoreWgmma<StagedStores>(cF, cH, bias, p, cBase, m0, n0, row, col);
            Group.Barrier();
            StoreStaged(cF, cH, p, cBase, m0, n0, tid);
        }
        else StoreWgmma<DirectStores>(cF, cH, bias, p, cBase, m0, n0, row, col);
    }

    /// <summary>
    /// The wgmma accumulators to C (or the staging tile): a warp's 16 rows (row, row + 8) and 128 columns, fragment j
    /// (registers tcc 4j..4j+3) at columns col + 8j, as m16n8's accumulator layout.
    /// </summary>
    private static void StoreWgmma<TSink>(ArrayView<float> cF, ArrayView<ushort> cH, FloatView bias, TcParams p, long cBase, int m0, int n0, int row, int col)
        where TSink : struct, IPairSink
    {
        ulong v;
        float b0, b1;
        BiasPair(bias, p, col + 0, out b0, out b1);
        CudaAsm.Emit("mov.b64 %0, {tcc0,tcc1};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row, col + 0, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc2,tcc3};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 8, col + 0, v, b0, b1);
        BiasPair(bias, p, col + 8, out b0, out b1);
        CudaAsm.Emit("mov.b64 %0, {tcc4,tcc5};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row, col + 8, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc6,tcc7};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 8, col + 8, v, b0, b1);
        BiasPair(bias, p, col + 16, out b0, out b1);
        CudaAsm.Emit("mov.b64 %0, {tcc8,tcc9};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row, col + 16, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc10,tcc11};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 8, col + 16, v, b0, b1);
        BiasPair(bias, p, col + 24, out b0, out b1);
        CudaAsm.Emit("mov.b64 %0, {tcc12,tcc13};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row, col + 24, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc14,tcc15};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 8, col + 24, v, b0, b1);
        BiasPair(bias, p, col + 32, out b0, out b1);
        CudaAsm.Emit("mov.b64 %0, {tcc16,tcc17};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row, col + 32, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc18,tcc19};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 8, col + 32, v, b0, b1);
        BiasPair(bias, p, col + 40, out b0, out b1);
        CudaAsm.Emit("mov.b64 %0, {tcc20,tcc21};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row, col + 40, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc22,tcc23};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 8, col + 40, v, b0, b1);
        BiasPair(bias, p, col + 48, out b0, out b1);
        CudaAsm.Emit("mov.b64 %0, {tcc24,tcc25};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row, col + 48, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc26,tcc27};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 8, col + 48, v, b0, b1);
        BiasPair(bias, p, col + 56, out b0, out b1);
        CudaAsm.Emit("mov.b64 %0, {tcc28,tcc29};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row, col + 56, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc30,tcc31};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 8, col + 56, v, b0, b1);
        BiasPair(bias, p, col + 64, out b0, out b1);
        CudaAsm.Emit("mov.b64 %0, {tcc32,tcc33};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row, col + 64, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc34,tcc35};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 8, col + 64, v, b0, b1);
        BiasPair(bias, p, col + 72, out b0, out b1);
        CudaAsm.Emit("mov.b64 %0, {tcc36,tcc37};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row, col + 72, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc38,tcc39};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 8, col + 72, v, b0, b1);
        BiasPair(bias, p, col + 80, out b0, out b1);
        CudaAsm.Emit("mov.b64 %0, {tcc40,tcc41};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row, col + 80, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc42,tcc43};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 8, col + 80, v, b0, b1);
        BiasPair(bias, p, col + 88, out b0, out b1);
        CudaAsm.Emit("mov.b64 %0, {tcc44,tcc45};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row, col + 88, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc46,tcc47};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 8, col + 88, v, b0, b1);
        BiasPair(bias, p, col + 96, out b0, out b1);
        CudaAsm.Emit("mov.b64 %0, {tcc48,tcc49};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row, col + 96, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc50,tcc51};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 8, col + 96, v, b0, b1);
        BiasPair(bias, p, col + 104, out b0, out b1);
        CudaAsm.Emit("mov.b64 %0, {tcc52,tcc53};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row, col + 104, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc54,tcc55};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 8, col + 104, v, b0, b1);
        BiasPair(bias, p, col + 112, out b0, out b1);
        CudaAsm.Emit("mov.b64 %0, {tcc56,tcc57};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row, col + 112, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc58,tcc59};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 8, col + 112, v, b0, b1);
        BiasPair(bias, p, col + 120, out b0, out b1);
        CudaAsm.Emit("mov.b64 %0, {tcc60,tcc61};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row, col + 120, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc62,tcc63};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 8, col + 120, v, b0, b1);
    }

    /// <summary>
    /// Named registers of the wgmma kernel: tcc0..63 the accumulators, tcsb the ring's shared-window address (rounded
    /// up to 1024, the swizzle pattern's period), wgda / wgdb this warpgroup's A and B descriptors for stage 0, k16 step
    /// 0 (%0 / %1: the constant bits plus the 16-byte units of the offset inside the stage), wgp a true predicate (scale-d:
    /// accumulate).
    /// </summary>
    private const string DeclareWgmma =
        ".reg .f32 tcc<64>;\n\t.reg .u32 tcsb;\n\t.reg .b64 wgda, wgdb;\n\t.reg .pred wgp;\n\t" +
        "mov.u32 tcsb, __dyn_shared_alloca;\n\tadd.u32 tcsb, tcsb, 1023;\n\tand.b32 tcsb, tcsb, -1024;\n\tsetp.eq.u32 wgp, tcsb, tcsb;\n\t" +
        "{ .reg .b64 t; cvt.u64.u32 t, tcsb; shr.u64 t, t, 4; add.s64 wgda, t, %0; add.s64 wgdb, t, %1; }";

    private const string WgmmaInsn = "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {tcc0,tcc1,tcc2,tcc3,tcc4,tcc5,tcc6,tcc7,tcc8,tcc9,tcc10,tcc11,tcc12,tcc13,tcc14,tcc15,tcc16,tcc17,tcc18,tcc19,tcc20,tcc21,tcc22,tcc23,tcc24,tcc25,tcc26,tcc27,tcc28,tcc29,tcc30,tcc31,tcc32,tcc33,tcc34,tcc35,tcc36,tcc37,tcc38,tcc39,tcc40,tcc41,tcc42,tcc43,tcc44,tcc45,tcc46,tcc47,tcc48,tcc49,tcc50,tcc51,tcc52,tcc53,tcc54,tcc55,tcc56,tcc57,tcc58,tcc59,tcc60,tcc61,tcc62,tcc63}, da, db, wgp, 1, 1, ";
    private const string WgmmaBegin = "wgmma.fence.sync.aligned;\n\t{ .reg .b64 da, db; add.s64 da, wgda, %0; add.s64 db, wgdb, %0;\n\t";
    private const string WgmmaEnd = "}\n\twgmma.commit_group.sync.aligned;";

    // One slice: four k16 steps. K-major operands move 32 bytes (2 units) per step, MN-major ones 16 k-rows (2048 bytes, 128 units);
    // the last two immediates are the transposes (0: K-major, 1: MN-major) of A and B.
    private const string WgmmaSliceKK = WgmmaBegin +
        WgmmaInsn + "0, 0;\n\tadd.s64 da, da, 2; add.s64 db, db, 2;\n\t" + WgmmaInsn + "0, 0;\n\tadd.s64 da, da, 2; add.s64 db, db, 2;\n\t" +
        WgmmaInsn + "0, 0;\n\tadd.s64 da, da, 2; add.s64 db, db, 2;\n\t" + WgmmaInsn + "0, 0;\n\t" + WgmmaEnd;
    private const string WgmmaSliceKM = WgmmaBegin +
        WgmmaInsn + "0, 1;\n\tadd.s64 da, da, 2; add.s64 db, db, 128;\n\t" + WgmmaInsn + "0, 1;\n\tadd.s64 da, da, 2; add.s64 db, db, 128;\n\t" +
        WgmmaInsn + "0, 1;\n\tadd.s64 da, da, 2; add.s64 db, db, 128;\n\t" + WgmmaInsn + "0, 1;\n\t" + WgmmaEnd;
    private const string WgmmaSliceMK = WgmmaBegin +
        WgmmaInsn + "1, 0;\n\tadd.s64 da, da, 128; add.s64 db, db, 2;\n\t" + WgmmaInsn + "1, 0;\n\tadd.s64 da, da, 128; add.s64 db, db, 2;\n\t" +
        WgmmaInsn + "1, 0;\n\tadd.s64 da, da, 128; add.s64 db, db, 2;\n\t" + WgmmaInsn + "1, 0;\n\t" + WgmmaEnd;
    private const string WgmmaSliceMM = WgmmaBegin +
        WgmmaInsn + "1, 1;\n\tadd.s64 da, da, 128; add.s64 db, db, 128;\n\t" + WgmmaInsn + "1, 1;\n\tadd.s64 da, da, 128; add.s64 db, db, 128;\n\t" +
        WgmmaInsn + "1, 1;\n\tadd.s64 da, da, 128; add.s64 db, db, 128;\n\t" + WgmmaInsn + "1, 1;\n\t" + WgmmaEnd;
}
