using FsCheck;
using FsCheck.Xunit;
using Memopt.Kernels;
using Memopt.Tensors;
using Memopt.Tests.Harness;
using static Memopt.Tests.Harness.Bf16Check;
using static Memopt.Tests.Kernels.MatMulTests;

namespace Memopt.Tests.Kernels;

/// <summary>
/// A device whose groups have 256 threads, so the tiled GEMM's CUDA tiles run: the suite's device when it is CUDA
/// (MEMOPT_TEST_DEVICE=cuda on the GPU host), else a CPU accelerator with 8 warps of 32 threads per group
/// (<see cref="ComputeDevice.CreateCpu"/>; the suite's CPU device has 16-thread groups, on which only the 16×16 tile
/// can run). There each simulated thread is an OS thread and a barrier a rendezvous of 256 of them (~10 ms on 2 cores):
/// the tests keep to a few groups of a few K slices.
/// </summary>
public sealed class WideGroupDevice : IDisposable
{
    private readonly ComputeDevice? _owned;

    public ComputeDevice Device { get; }

    public WideGroupDevice()
    {
        if (TestDevice.Get().IsCuda)
        {
            Device = TestDevice.Get();
            return;
        }
        Device = _owned = ComputeDevice.CreateCpu(threadsPerWarp: 32, warpsPerGroup: 8);
    }

    public void Dispose() => _owned?.Dispose();
}

/// <summary>
/// The tiled (cooperative) SIMT GEMM beyond what MatMulTests checks on the 16×16 tile: the CUDA tiles (128×128,
/// 128×64, 256×32) on 256-thread groups, split-K and its workspace, the tile/split plan, and the PTX the CUDA
/// tiles compile to. Forward tolerance: MatMulTests' worst-case bound (length + 3)·u·(|alpha|·|A|·|B| + |C₀|), with
/// length the number of products summed per element (K times the summed batches). It also covers split-K: each split
/// sums its own range, then the partials are added in order, and every split holds at least one real term, so no
/// element's sum passes through more than K·batches roundings; zero-filled products add exact zeros.
/// </summary>
public class TiledGemmTests(WideGroupDevice wide) : IClassFixture<WideGroupDevice>
{
    private static readonly MatMul.SimtTile[] CudaTiles = [MatMul.SimtTile.T128x128, MatMul.SimtTile.T128x64, MatMul.SimtTile.T256x32];

    /// <summary>H100 launch facts (memopt info): 132 SMs, groups up to 1024 threads.</summary>
    private const int H100Sms = 132, H100Group = 1024;

    [Property(MaxTest = 8)]
    public void Cuda_tiles_match_float64_for_every_transpose_layout_split_and_dtype_on_256_thread_groups(
        PositiveInt tileIndex, PositiveInt m, PositiveInt n, PositiveInt k, bool transA, bool transB, PositiveInt layout,
        PositiveInt splits, bool accumulate, PositiveInt dtypes, PositiveInt cPad, int seed)
    {
        var tile = CudaTiles[tileIndex.Get % CudaTiles.Length];
        int tm = MatMul.TileMOf(tile), tn = MatMul.TileNOf(tile);
        // At most two tiles each way (a whole one and an edge), K across 1–3 slices of 8 with partial tails.
        int[] ms = [1, 3, tm - 1, tm, tm + 5], ns = [1, 2, tn - 3, tn, tn + 1], ks = [1, 5, 8, 9, 20];
        int M = ms[m.Get % ms.Length], N = ns[n.Get % ns.Length], K = ks[k.Get % ks.Length];
        // 0: one matrix; 1: two batched products; 2: a batched A times a broadcast B; 3: two products summed into one C.
        int mode = layout.Get % 4;
        int batch = mode == 0 ? 1 : 2;
        int S = splits.Get % 3 + 1;
        bool aBf16 = (dtypes.Get & 1) != 0, bBf16 = (dtypes.Get & 2) != 0;
        // C's rows start cPad floats in and are N + cPad apart: 16-byte aligned (float4 stores) only when cPad is 0 or 4.
        int pad = cPad.Get % 5;

        var rng = new Random(seed);
        var aShape = new Shape(mode == 0 ? 1 : batch, transA ? K : M, transA ? M : K);
        var bShape = new Shape(mode is 1 or 3 ? batch : 1, transB ? N : K, transB ? K : N);
        int outBatches = mode == 3 ? 1 : batch;
        int ldc = N + pad;
        long cBatch = mode == 3 ? 0 : (long)M * ldc;
        var a = RoundToBf16(GradCheck.RandomValues(rng, aShape.Numel));
        var b = RoundToBf16(GradCheck.RandomValues(rng, bShape.Numel));
        var c0 = GradCheck.RandomValues(rng, pad + (long)outBatches * M * ldc);
        float alpha = accumulate ? 0.75f : 1f;

        var dev = wide.Device;
        using var at = Tensor.FromHost(dev, a, aShape, MemoryCategory.Data, "a", aBf16 ? DType.BF16 : DType.F32);
        using var bt = Tensor.FromHost(dev, b, bShape, MemoryCategory.Data, "b", bBf16 ? DType.BF16 : DType.F32);
        using var ct = Tensor.FromHost(dev, c0, new Shape(c0.Length), MemoryCategory.Data, "c");
        long aBatch = mode == 0 ? 0 : (long)aShape[1] * aShape[2], bBatch = mode is 1 or 3 ? (long)bShape[1] * bShape[2] : 0;
        var aOp = new MatrixOperand(at, 0, aShape[2], aBatch, transA);
        var bOp = new MatrixOperand(bt, 0, bShape[2], bBatch, transB);
        var cOp = new MatrixOperand(ct, pad, ldc, cBatch);
        using (Launch.UsePath(KernelPath.Cooperative))
        using (MatMul.UseSimtPlan(tile, S))
        {
            Assert.Equal(tile, MatMul.PlanFor(dev, M, N, K, batch, mode == 3)!.Value.Tile);
            MatMul.Gemm(aOp, bOp, cOp, M, N, K, batch, alpha, accumulate);
        }

        double[] want = D(c0), bound = Abs(c0);
        MatMul.Reference.Gemm(D(a), 0, aShape[2], aBatch, transA, D(b), 0, bShape[2], bBatch, transB, want, pad, ldc, cBatch, M, N, K, batch, alpha, accumulate);
        MatMul.Reference.Gemm(Abs(a), 0, aShape[2], aBatch, transA, Abs(b), 0, bShape[2], bBatch, transB, bound, pad, ldc, cBatch, M, N, K, batch, alpha, accumulate);
        AssertWithinRounding(ct.ToFloatArray(), want, bound, K * (mode == 3 ? batch : 1),
            $"{tile} split {S}: A {aShape}{(transA ? "ᵀ" : "")} {(aBf16 ? "bf16" : "f32")}, B {bShape}{(transB ? "ᵀ" : "")} {(bBf16 ? "bf16" : "f32")}, " +
            $"M={M} N={N} K={K} batch={batch} mode={mode} C pad {pad} (elements outside the product must keep their values)");
    }

    /// <summary>
    /// The fused bias on the CUDA tiles: the float4 epilogue (C float32 with 16-byte aligned rows), the scalar one
    /// (misaligned rows, or a bf16 C), edge tiles on both sides, and split-K, where only the split sum may add it (added
    /// in every partial it would count S times). A Linear layer's layout: batched A, B broadcast over the batch.
    /// </summary>
    [Property(MaxTest = 6)]
    public void Cuda_tiles_add_the_bias_once_in_the_epilogue_and_in_the_split_k_sum(
        PositiveInt tileIndex, PositiveInt m, PositiveInt k, bool transA, bool transB, PositiveInt splits,
        PositiveInt cKind, bool biasBf16, bool accumulate, int seed)
    {
        var tile = CudaTiles[tileIndex.Get % CudaTiles.Length];
        int tm = MatMul.TileMOf(tile), tn = MatMul.TileNOf(tile);
        // Two tiles at most (a 256-thread barrier is ~10 ms here): a whole interior tile, a second N tile holding one
        // column (the bias indexed past the first tile), or a second M tile with N ending mid-float4.
        (int, int)[] shapes = [(tm, tn), (3, tn + 1), (tm + 5, tn - 3)];
        var (M, N) = shapes[m.Get % shapes.Length];
        int[] ks = [5, 20];
        int K = ks[k.Get % ks.Length], S = splits.Get % 3 + 1;
        const int batch = 2;
        // C: 0 float32 with aligned rows (float4 stores where N allows), 1 float32 with rows 1 float off, 2 bf16.
        int kind = cKind.Get % 3;
        bool cBf16 = kind == 2;
        int pad = kind == 1 ? 1 : 0, ldc = N + pad;
        var rng = new Random(seed);
        var aShape = new Shape(batch, transA ? K : M, transA ? M : K);
        var bShape = new Shape(transB ? N : K, transB ? K : N);
        var a = RoundToBf16(GradCheck.RandomValues(rng, aShape.Numel));
        var b = RoundToBf16(GradCheck.RandomValues(rng, bShape.Numel));
        var c0 = RoundToBf16(GradCheck.RandomValues(rng, pad + (long)batch * M * ldc));
        var bias = RoundToBf16(GradCheck.RandomValues(rng, N, 4.0));
        float alpha = accumulate ? 0.75f : 1f;

        var dev = wide.Device;
        using var at = Tensor.FromHost(dev, a, aShape, MemoryCategory.Data, "a");
        using var bt = Tensor.FromHost(dev, b, bShape, MemoryCategory.Data, "b");
        using var ct = Tensor.FromHost(dev, c0, new Shape(c0.Length), MemoryCategory.Data, "c", cBf16 ? DType.BF16 : DType.F32);
        using var biasT = Tensor.FromHost(dev, bias, new Shape(N), MemoryCategory.Data, "bias", biasBf16 ? DType.BF16 : DType.F32);
        long aBatch = (long)aShape[1] * aShape[2], cBatch = (long)M * ldc;
        using (Launch.UsePath(KernelPath.Cooperative))
        using (MatMul.UseSimtPlan(tile, S))
            MatMul.Gemm(new MatrixOperand(at, 0, aShape[2], aBatch, transA), MatrixOperand.Dense(bt, transB), new MatrixOperand(ct, pad, ldc, cBatch),
                M, N, K, batch, alpha, accumulate, biasT);

        double[] want = D(c0), bound = Abs(c0);
        MatMul.Reference.Gemm(D(a), 0, aShape[2], aBatch, transA, D(b), 0, bShape[1], 0, transB, want, pad, ldc, cBatch, M, N, K, batch, alpha, accumulate, D(bias));
        MatMul.Reference.Gemm(Abs(a), 0, aShape[2], aBatch, transA, Abs(b), 0, bShape[1], 0, transB, bound, pad, ldc, cBatch, M, N, K, batch, alpha, accumulate, Abs(bias));
        AssertWithinRounding(ct.ToFloatArray(), want, bound, K,
            $"{tile} split {S}: M={M} N={N} K={K} A{(transA ? "ᵀ" : "")} B{(transB ? "ᵀ" : "")} C {(cBf16 ? "bf16" : $"f32 pad {pad}")} " +
            $"bias {(biasBf16 ? "bf16" : "f32")} accumulate {accumulate}", cBf16);
    }

    /// <summary>Split-K on the suite's device (the 16×16 tile on the CPU, the CUDA tiles on the GPU): any split count, summed batches included, is within the bound and bitwise repeatable.</summary>
    [Property(MaxTest = 20)]
    public void Split_k_matches_float64_and_is_deterministic(PositiveInt m, PositiveInt n, PositiveInt k, PositiveInt batch, PositiveInt splits, bool sum, bool accumulate, int seed)
    {
        int[] sizes = [1, 2, 7, 16, 17, 33];
        int M = sizes[m.Get % sizes.Length], N = sizes[n.Get % sizes.Length], K = 1 + k.Get % 90, B = batch.Get % 3 + 1, S = splits.Get % 7 + 1;
        var rng = new Random(seed);
        float[] a = GradCheck.RandomValues(rng, (long)B * K * M), b = GradCheck.RandomValues(rng, (long)B * K * N);
        float[] c0 = GradCheck.RandomValues(rng, (long)(sum ? 1 : B) * M * N);
        var dev = TestDevice.Get();
        using var at = Tensor.FromHost(dev, a, new Shape(B, K, M), MemoryCategory.Data, "a");
        using var bt = Tensor.FromHost(dev, b, new Shape(B, K, N), MemoryCategory.Data, "b");
        using var ct = Tensor.FromHost(dev, c0, new Shape(c0.Length), MemoryCategory.Data, "c");
        long cBatch = sum ? 0 : (long)M * N;
        float[] Run()
        {
            ct.CopyFrom(c0);
            using (Launch.UsePath(KernelPath.Cooperative))
            using (MatMul.UseSimtPlan(splits: S))
            {
                var plan = MatMul.PlanFor(dev, M, N, K, B, sum)!.Value;
                long slices = (long)plan.KTiles * (sum ? B : 1);
                Assert.True(plan.Splits == (slices + plan.SlicesPerSplit - 1) / plan.SlicesPerSplit && (S == 1 || slices == 1 || plan.Splits > 1), plan.ToString());
                MatMul.Gemm(new MatrixOperand(at, 0, M, (long)K * M, true), new MatrixOperand(bt, 0, N, (long)K * N), new MatrixOperand(ct, 0, N, cBatch),
                    M, N, K, B, 0.5f, accumulate);
            }
            return ct.ToFloatArray();
        }
        var got = Run();
        Assert.Equal(got, Run());

        double[] want = D(c0), bound = Abs(c0);
        MatMul.Reference.Gemm(D(a), 0, M, (long)K * M, true, D(b), 0, N, (long)K * N, false, want, 0, N, cBatch, M, N, K, B, 0.5, accumulate);
        MatMul.Reference.Gemm(Abs(a), 0, M, (long)K * M, true, Abs(b), 0, N, (long)K * N, false, bound, 0, N, cBatch, M, N, K, B, 0.5, accumulate);
        AssertWithinRounding(got, want, bound, K * (sum ? B : 1), $"{S} splits, M={M} N={N} K={K} batch={B} sum={sum}");
    }

    [Fact]
    public void Plan_picks_the_tile_by_output_shape_and_splits_tall_k_products_to_fill_the_gpu()
    {
        var square = MatMul.Plan(4096, 4096, 4096, 1, false, H100Sms, H100Group)!.Value;
        Assert.Equal((MatMul.SimtTile.T128x128, 1), (square.Tile, square.Splits));
        // Attention with 32- and 64-wide heads (T = 256, batch B·H): the tile as wide as the head.
        Assert.Equal(MatMul.SimtTile.T256x32, MatMul.Plan(256, 32, 256, 256, false, H100Sms, H100Group)!.Value.Tile);
        Assert.Equal(MatMul.SimtTile.T128x64, MatMul.Plan(256, 64, 256, 256, false, H100Sms, H100Group)!.Value.Tile);
        // Weight gradients (M, N ≤ 1024, K = B·T): split until the groups cover the SMs.
        foreach (var (m, n) in new[] { (768, 256), (256, 256), (1024, 256), (256, 1024) })
        {
            var plan = MatMul.Plan(m, n, 8192, 1, false, H100Sms, H100Group)!.Value;
            // One 128×128 group per SM (255 registers, no spills): the splits bring the groups to about one wave.
            Assert.True(plan.Splits > 1 && plan.Groups >= H100Sms * 9 / 10 && plan.Groups <= H100Sms && plan.Splits <= 64, $"{m}×{n}×8192: {plan}, {plan.Groups} groups");
            Assert.Equal(new Shape(plan.Splits, 1, m, n), MatMul.SplitKWorkspace(m, n, 8192, 1, false, true, H100Sms, H100Group));
            // No split is empty and every slice belongs to one.
            Assert.True((plan.Splits - 1) * plan.SlicesPerSplit < plan.KTiles && plan.Splits * plan.SlicesPerSplit >= plan.KTiles, plan.ToString());
        }
        // Batches summed into one weight gradient split across batch boundaries too.
        var summed = MatMul.Plan(256, 256, 256, 64, true, H100Sms, H100Group)!.Value;
        Assert.True(summed.Splits > 1 && (summed.Splits - 1) * summed.SlicesPerSplit < 64 * summed.KTiles, summed.ToString());
        // Outputs that fill the GPU are never split (no workspace), nor is anything on the portable path.
        Assert.Null(MatMul.SplitKWorkspace(4096, 4096, 4096, 1, false, true, H100Sms, H100Group));
        Assert.Null(MatMul.SplitKWorkspace(768, 256, 8192, 1, false, false, H100Sms, H100Group));
        // Group sizes: 16-thread CPU groups get the 16×16 tile, smaller ones the portable twin.
        Assert.Equal(MatMul.SimtTile.T16x16, MatMul.Plan(100, 100, 100, 1, false, 1, 16)!.Value.Tile);
        Assert.Null(MatMul.Plan(100, 100, 100, 1, false, 1, 8));
    }

    /// <summary>
    /// The float4 epilogue (C float32, rows 16-byte aligned) next to the scalar one: a whole-width N and one that ends
    /// mid-float4, an edge row tile, an offset C inside a bigger buffer, accumulate with alpha, on the 128×64 tile.
    /// </summary>
    [Theory]
    [InlineData(64, 4, 68)]   // float4 stores everywhere (offset and ld multiples of 4)
    [InlineData(66, 4, 72)]   // float4 stores but the last columns' partial float4
    [InlineData(64, 3, 67)]   // scalar stores (misaligned rows)
    public void Float4_and_scalar_epilogues_store_edges_offsets_and_accumulate(int n, int offset, int ldc)
    {
        const int M = 133, K = 9;
        var rng = new Random(n * 31 + offset);
        float[] a = GradCheck.RandomValues(rng, (long)M * K), b = GradCheck.RandomValues(rng, (long)K * n);
        float[] c0 = GradCheck.RandomValues(rng, offset + (long)M * ldc + 5);
        var dev = wide.Device;
        using var at = Tensor.FromHost(dev, a, new Shape(M, K), MemoryCategory.Data, "a");
        using var bt = Tensor.FromHost(dev, b, new Shape(K, n), MemoryCategory.Data, "b");
        using var ct = Tensor.FromHost(dev, c0, new Shape(c0.Length), MemoryCategory.Data, "c");
        using (Launch.UsePath(KernelPath.Cooperative))
        using (MatMul.UseSimtPlan(MatMul.SimtTile.T128x64, 1))
            MatMul.Gemm(MatrixOperand.Dense(at), MatrixOperand.Dense(bt), new MatrixOperand(ct, offset, ldc, 0), M, n, K, 1, 0.5f, accumulate: true);
        double[] want = D(c0), bound = Abs(c0);
        MatMul.Reference.Gemm(D(a), 0, K, 0, false, D(b), 0, n, 0, false, want, offset, ldc, 0, M, n, K, 1, 0.5, accumulate: true);
        MatMul.Reference.Gemm(Abs(a), 0, K, 0, false, Abs(b), 0, n, 0, false, bound, offset, ldc, 0, M, n, K, 1, 0.5, accumulate: true);
        AssertWithinRounding(ct.ToFloatArray(), want, bound, K, $"N={n}, C offset {offset}, ld {ldc}");
    }

    [Fact]
    public void Split_k_workspace_is_rented_as_workspace_and_freed_by_the_call()
    {
        var dev = wide.Device;
        using var a = Tensor.Zeros(dev, new Shape(24, 20), DType.F32, MemoryCategory.Data, "a");
        using var b = Tensor.Zeros(dev, new Shape(24, 10), DType.F32, MemoryCategory.Data, "b");
        using var c = Tensor.Zeros(dev, new Shape(20, 10), DType.F32, MemoryCategory.Data, "c");
        long before = dev.Tracker.Live;
        dev.Tracker.RecordTimeline = true;
        try
        {
            using (Launch.UsePath(KernelPath.Cooperative))
            using (MatMul.UseSimtPlan(MatMul.SimtTile.T128x64, 3))
                MatMul.Gemm(MatrixOperand.Dense(a, true), MatrixOperand.Dense(b), MatrixOperand.Dense(c), 20, 10, 24);
            var events = dev.Tracker.Timeline.Where(e => e.Op == "simt_gemm.split_k").ToList();
            // The [3 splits, 1 batch, 20, 10] float32 partials, allocated as workspace and freed before the call returns.
            Assert.Equal([MemoryEventKind.Allocate, MemoryEventKind.Free], events.Select(e => e.Kind));
            Assert.All(events, e => Assert.Equal((MemoryCategory.Workspace, 3L * 20 * 10 * 4), (e.Category, e.Bytes)));
            Assert.Equal(before, dev.Tracker.Live);
        }
        finally
        {
            dev.Tracker.RecordTimeline = false;
        }
    }

    [Fact]
    public void Cuda_tiles_compile_to_ptx_with_float4_shared_reads_launch_bounds_and_no_local_memory()
    {
        foreach (var tile in CudaTiles)
        {
            string ptx = MatMul.CompilePtx(TestDevice.Get(), tile);
            Assert.DoesNotContain(".local", ptx);
            Assert.Contains("ld.shared.v4.f32", ptx);
            Assert.Contains(".maxntid 256, 1, 1", ptx);
            Assert.Contains($".minnctapersm {MatMul.ResidentOf(tile)}", ptx);
        }
    }
}
