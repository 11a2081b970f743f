using FsCheck;
using FsCheck.Xunit;
using ILGPU.Runtime;
using Memopt.Kernels;
using Memopt.Tensors;
using Memopt.Tests.Harness;

namespace Memopt.Tests.Kernels;

public class FlashAttentionTensorCoreTests
{
    // bf16 unit roundoff: 8 significant bits, a rounded value is within 2⁻⁸ of the exact one, relatively.
    private const double U = 1.0 / 256;
    // Forward, per element of y: the kernel rounds every probability to bf16 before P·V (|ΔP_ij| ≤ u·P_ij, so
    // |Δy_id| ≤ u·Σ_j P_ij·|v_jd|) and rounds y itself (≤ u·|y_id|); scores, exponentials, sums and the division are
    // fp32 (relative error ~1e-6: ex2.approx is within 2 ulp, the emulation uses exp). The bound is
    // u·(|y_id| + Σ_j P_ij·|v_jd|), times 1.01, plus 1e-5·max|v| for the fp32 part. Worst seen on the emulated twin: 0.63 of the bound
    // (T = 100, hd 64, W = 5); a mask off by one fails by orders of magnitude.
    private const double FwdSlack = 1.01, FwdAbsolute = 1e-5;
    // The log-sum-exp is fp32 (m·scale + ln l), measured against |L| + 1 as in FlashAttentionTests.
    private const double LseTolerance = 1e-5;
    // Backward, per element of d(qkv): P is recomputed in fp32 and rounded to bf16 for dV = Pᵀ·dy (|ΔdV_jd| ≤
    // u·Σ_i P_ij·|dy_id|); dS = P∘(dP − D) is fp32, rounded to bf16 for dK = s·dSᵀ·q and dQ = s·dS·k (|ΔdK_jd| ≤
    // u·s·Σ_i |dS_ij|·|q_id|, |ΔdQ_id| ≤ u·s·Σ_j |dS_ij|·|k_jd|); a bf16 d(qkv) rounds prior + gradient once (≤ u of it).
    // The reference reads D = Σ dy·y from the kernel's stored bf16 y, as the kernels do. The bound is the sum of those
    // terms times 1.01, plus 1e-4 of the largest weighted sum (all parts) for the fp32 arithmetic: D and dP are fp32 dot
    // products in different orders, so dP − D is ~1e-7 where it is exactly 0 (a window of 1: y = v). Worst seen on the
    // emulated twin: 0.73 of the bound (T = 130, hd 64, W = 5); reading D of the neighbouring column fails every case.
    private const double BwdSlack = 1.01, BwdAbsolute = 1e-4;

    /// <summary>Random bf16-exact qkv [B, T, 3·H·hd] in [−spread, spread).</summary>
    private static float[] RandomQkv(int batch, int t, int heads, int hd, int seed, double spread = 2) =>
        GradCheck.RandomValues(new Random(seed), (long)batch * t * 3 * heads * hd, spread).Select(BFloat16.Round).ToArray();

    private static double[] F64(float[] v) => v.Select(e => (double)e).ToArray();

    /// <summary>NaN in every element (0xFF bytes), as uninitialised GPU memory may hold: an output element the kernel does not write fails the check.</summary>
    private static Tensor Poisoned(Tensor t)
    {
        t.Raw.MemSet(0xFF);
        return t;
    }

    /// <summary>
    /// Runs <paramref name="forward"/> (the emulated twin, or FlashAttention.Forward) on a bf16 qkv and checks y and L
    /// elementwise against the float64 reference with the bound above; returns the worst error as a fraction of the bound.
    /// </summary>
    private static double CheckForward(int batch, int heads, int t, int hd, int? window, int seed, Action<Tensor, int, int?, Tensor, Tensor> forward,
        double spread = 2)
    {
        var dev = TestDevice.Get();
        int c = heads * hd;
        var x = RandomQkv(batch, t, heads, hd, seed, spread);
        using var qkv = Tensor.FromHost(dev, x, new Shape(batch, t, 3 * c), MemoryCategory.Data, "qkv", DType.BF16);
        using var y = Poisoned(Tensor.Empty(dev, new Shape(batch, t, c), DType.BF16, MemoryCategory.Data, "y"));
        using var lse = Poisoned(Tensor.Empty(dev, new Shape(batch, heads, t), DType.F32, MemoryCategory.Data, "lse"));
        forward(qkv, heads, window, y, lse);

        var exact = F64(x);
        var (wantY, wantLse) = FlashAttention.Reference.Forward(exact, batch, t, heads, window);
        // Σ_j P_ij·|v_jd|: the reference's forward with |v| in place of v.
        var absV = (double[])exact.Clone();
        for (long i = 0; i < absV.Length; i++)
            if (i % (3 * c) >= 2 * c) absV[i] = Math.Abs(absV[i]);
        var (weightedAbsV, _) = FlashAttention.Reference.Forward(absV, batch, t, heads, window);
        double maxV = absV.Where((_, i) => i % (3 * c) >= 2 * c).DefaultIfEmpty(0).Max();

        var gotY = y.ToFloatArray();
        double worst = 0;
        string what = $"B={batch} H={heads} T={t} hd={hd} W={window}";
        for (int i = 0; i < gotY.Length; i++)
        {
            double bound = FwdSlack * U * (Math.Abs(wantY[i]) + weightedAbsV[i]) + FwdAbsolute * maxV;
            double error = Math.Abs(gotY[i] - wantY[i]);
            Assert.True(error <= bound, $"{what}: y[{i}] = {gotY[i]}, want {wantY[i]} ± {bound:G3}");
            worst = Math.Max(worst, error / bound);
        }
        var gotLse = lse.ToFloatArray();
        double lseScale = wantLse.Max(Math.Abs) + 1;
        for (int i = 0; i < gotLse.Length; i++)
            Assert.True(Math.Abs(gotLse[i] - wantLse[i]) <= LseTolerance * lseScale, $"{what}: lse[{i}] = {gotLse[i]}, want {wantLse[i]}");
        return worst;
    }

    private static void Emulated(Tensor qkv, int heads, int? window, Tensor y, Tensor lse) => FlashAttentionTensorCore.ForwardEmulated(qkv, heads, window, y, lse);

    /// <summary>
    /// Forward then backward (both through <paramref name="emulated"/>'s path) on bf16 qkv and dy with a prior in
    /// d(qkv) (so += is checked), every element of the three gradient parts against float64 with the bound above.
    /// </summary>
    private static double CheckBackward(int batch, int heads, int t, int hd, int? window, int seed, DType gradType, bool emulated)
    {
        var dev = TestDevice.Get();
        int c = heads * hd;
        var shape = new Shape(batch, t, 3 * c);
        var yShape = new Shape(batch, t, c);
        var rng = new Random(seed + 1);
        var x = RandomQkv(batch, t, heads, hd, seed);
        var dy = GradCheck.RandomValues(rng, yShape.Numel).Select(BFloat16.Round).ToArray();
        var prior = GradCheck.RandomValues(rng, shape.Numel, 0.1);
        if (gradType == DType.BF16) prior = prior.Select(BFloat16.Round).ToArray();
        using var qkv = Tensor.FromHost(dev, x, shape, MemoryCategory.Data, "qkv", DType.BF16);
        using var y = Poisoned(Tensor.Empty(dev, yShape, DType.BF16, MemoryCategory.Data, "y"));
        using var lse = Poisoned(Tensor.Empty(dev, new Shape(batch, heads, t), DType.F32, MemoryCategory.Data, "lse"));
        using var dyT = Tensor.FromHost(dev, dy, yShape, MemoryCategory.Data, "dy", DType.BF16);
        using var dqkv = Tensor.FromHost(dev, prior, shape, MemoryCategory.Data, "dqkv", gradType);
        if (emulated)
        {
            FlashAttentionTensorCore.ForwardEmulated(qkv, heads, window, y, lse);
            FlashAttentionTensorCore.BackwardEmulated(qkv, y, lse, dyT, heads, window, dqkv);
        }
        else
        {
            Assert.Equal("tensor cores", FlashAttentionTensorCore.PathFor(qkv, heads, dyT, dqkv));
            FlashAttention.Forward(qkv, heads, window, y, lse);
            FlashAttention.Backward(qkv, y, lse, dyT, heads, window, dqkv);
        }

        var exact = F64(x);
        var storedY = F64(y.ToFloatArray());
        var want = FlashAttention.Reference.Backward(exact, F64(dy), batch, t, heads, window, storedY);
        var bound = WeightedAbsGradients(exact, F64(dy), storedY, batch, t, heads, window);
        var after = dqkv.ToFloatArray();
        string what = $"B={batch} H={heads} T={t} hd={hd} W={window} d(qkv) {gradType.Name()}";
        double worst = 0, scale = bound.Max();
        for (long i = 0; i < after.Length; i++)
        {
            double tol = BwdSlack * (U * bound[i] + (gradType == DType.BF16 ? U * Math.Abs(after[i]) : 0)) + BwdAbsolute * scale;
            double error = Math.Abs(after[i] - prior[i] - want[i]);
            Assert.True(error <= tol, $"{what}: d{"qkv"[(int)(i % (3 * c) / c)]}[{i}] = {after[i] - prior[i]}, want {want[i]} ± {tol:G3}");
            worst = Math.Max(worst, error / tol);
        }
        return worst;
    }

    /// <summary>
    /// Float64, per element of d(qkv): s·Σ_j |dS_ij|·|k_jd| (q part), s·Σ_i |dS_ij|·|q_id| (k part), Σ_i P_ij·|dy_id|
    /// (v part), with dS = P∘(dP − D) and D = Σ dy·storedY as in <see cref="FlashAttention.Reference.Backward"/>.
    /// </summary>
    private static double[] WeightedAbsGradients(double[] qkv, double[] dy, double[] storedY, int batch, int t, int heads, int? window)
    {
        int c = qkv.Length / (batch * t) / 3, hd = c / heads, w = window ?? t;
        double scale = 1.0 / Math.Sqrt(hd);
        var (_, lse) = FlashAttention.Reference.Forward(qkv, batch, t, heads, window);
        var bound = new double[qkv.Length];
        long Row(int b, int i) => (long)(b * t + i) * 3 * c;
        for (int b = 0; b < batch; b++)
            for (int h = 0; h < heads; h++)
                for (int i = 0; i < t; i++)
                {
                    long qi = Row(b, i) + h * hd, gi = (long)(b * t + i) * c + h * hd;
                    double rowDot = 0;
                    for (int d = 0; d < hd; d++) rowDot += dy[gi + d] * storedY[gi + d];
                    for (int j = Math.Max(0, i - w + 1); j <= i; j++)
                    {
                        long kj = Row(b, j) + c + h * hd, vj = kj + c;
                        double s = 0, dp = 0;
                        for (int d = 0; d < hd; d++)
                        {
                            s += qkv[qi + d] * qkv[kj + d];
                            dp += dy[gi + d] * qkv[vj + d];
                        }
                        double p = Math.Exp(scale * s - lse[(b * heads + h) * t + i]), ds = Math.Abs(p * (dp - rowDot));
                        for (int d = 0; d < hd; d++)
                        {
                            bound[qi + d] += scale * ds * Math.Abs(qkv[kj + d]);
                            bound[kj + d] += scale * ds * Math.Abs(qkv[qi + d]);
                            bound[vj + d] += p * Math.Abs(dy[gi + d]);
                        }
                    }
                }
        return bound;
    }

    [Theory]
    [InlineData(1, 1, 1, 32, null, false)]
    [InlineData(1, 1, 17, 64, null, true)]
    [InlineData(2, 3, 100, 32, null, false)]  // two key tiles, the second cut by T; batch and heads
    [InlineData(1, 2, 100, 64, null, true)]
    [InlineData(1, 1, 130, 64, null, false)]  // three tiles: key tile 0 is seen by three query tiles
    [InlineData(1, 2, 100, 32, 1, true)]
    [InlineData(1, 1, 130, 64, 5, false)]     // the window cuts the diagonal tile and the next one; queries 68–127 see no key of tile 0
    [InlineData(1, 1, 100, 32, 5, true)]
    [InlineData(2, 1, 130, 32, 64, true)]     // exactly a tile: key tile 0 is seen by query tiles 0 and 1 only
    [InlineData(1, 1, 130, 64, 70, false)]
    public void Emulated_backward_matches_float64(int batch, int heads, int t, int hd, int? window, bool bf16Grads) =>
        CheckBackward(batch, heads, t, hd, window, t * 13 + hd, bf16Grads ? DType.BF16 : DType.F32, emulated: true);

    [Property(MaxTest = 4)]
    public void Emulated_backward_matches_float64_on_random_shapes(PositiveInt b, PositiveInt h, PositiveInt tPick, bool hd64, PositiveInt windowPick, bool bf16Grads, int seed)
    {
        int t = 1 + tPick.Get % 140;
        int? window = (windowPick.Get % 4) switch { 0 => null, 1 => 1, 2 => 1 + windowPick.Get % t, _ => t + 2 };
        CheckBackward(b.Get % 2 + 1, h.Get % 2 + 1, t, hd64 ? 64 : 32, window, seed, bf16Grads ? DType.BF16 : DType.F32, emulated: true);
    }

    [Theory]
    [InlineData(1, 1, 1, 32)]    // a single row: one tile, 63 rows past T
    [InlineData(1, 1, 17, 64)]
    [InlineData(2, 3, 100, 32)]  // two query tiles, the second cut by T; batch and heads
    [InlineData(1, 2, 100, 64)]
    [InlineData(1, 1, 130, 64)]  // three query tiles
    public void Emulated_forward_matches_float64_causal(int batch, int heads, int t, int hd) =>
        CheckForward(batch, heads, t, hd, null, t * 31 + hd, Emulated);

    [Theory]
    [InlineData(1, 2, 100, 32, 1)]   // each row sees only itself
    [InlineData(1, 1, 100, 64, 5)]   // a narrow band: the window edge cuts the diagonal tile and the one before, where rows 68–99 see no key
    [InlineData(1, 1, 100, 32, 5)]
    [InlineData(2, 1, 130, 32, 64)]  // exactly a tile: the first key tile of the last query tile is skipped
    [InlineData(1, 1, 130, 64, 70)]
    [InlineData(1, 1, 17, 32, 20)]   // a window beyond T is plain causal
    public void Emulated_forward_matches_float64_with_a_window(int batch, int heads, int t, int hd, int window) =>
        CheckForward(batch, heads, t, hd, window, t * 7 + window, Emulated);

    [Property(MaxTest = 6)]
    public void Emulated_forward_matches_float64_on_random_shapes(PositiveInt b, PositiveInt h, PositiveInt tPick, bool hd64, PositiveInt windowPick, int seed)
    {
        int t = 1 + tPick.Get % 150;
        int? window = (windowPick.Get % 4) switch { 0 => null, 1 => 1, 2 => 1 + windowPick.Get % t, _ => t + 2 };
        CheckForward(b.Get % 2 + 1, h.Get % 2 + 1, t, hd64 ? 64 : 32, window, seed, Emulated);
    }

    [Fact]
    public void Emulated_forward_keeps_huge_scores_finite()
    {
        // Inputs of ±8 at hd 32: scaled scores reach hundreds, far past where exp overflows without the max subtracted.
        CheckForward(1, 1, 70, 32, null, 3, Emulated, spread: 8);
    }

    /// <summary>
    /// The real kernel wherever the suite runs on CUDA with bf16 tensor cores (MEMOPT_TEST_DEVICE=cuda): y and L against
    /// float64 for causal and windowed shapes at both head dims; elsewhere FlashAttention.Forward must take the SIMT
    /// path and say why.
    /// </summary>
    [Theory]
    [InlineData(2, 3, 100, 32, null)]
    [InlineData(1, 2, 130, 64, null)]
    [InlineData(1, 1, 256, 32, null)]    // rtx5090's T
    [InlineData(1, 2, 1024, 64, null)]   // the GPT-2-small-like preset's T (16 query tiles)
    [InlineData(2, 2, 200, 64, 5)]      // rows 68–127 see no key of the first key tile they visit
    [InlineData(1, 3, 200, 32, 5)]
    [InlineData(1, 1, 300, 32, 64)]
    [InlineData(1, 1, 17, 64, 1)]
    public void Forward_runs_on_tensor_cores_on_cuda_and_matches_float64(int batch, int heads, int t, int hd, int? window)
    {
        var dev = TestDevice.Get();
        using var probe = Tensor.Zeros(dev, new Shape(1, 1, 3 * hd), DType.BF16, MemoryCategory.Data, "probe");
        string path = FlashAttentionTensorCore.PathFor(probe, 1);
        if (FlashAttentionTensorCore.WhyNot(probe, 1) is string why)
        {
            Assert.False(dev.IsCuda && why.Contains("CUDA"), why);
            Assert.StartsWith("simt", path);
            return;
        }
        Assert.Equal("tensor cores", path);
        CheckForward(batch, heads, t, hd, window, t + hd, FlashAttention.Forward);
    }

    /// <summary>The real backward wherever the suite runs on CUDA (MEMOPT_TEST_DEVICE=cuda); elsewhere nothing to do (the path test covers declining).</summary>
    [Theory]
    [InlineData(2, 3, 100, 32, null, false)]
    [InlineData(1, 2, 130, 64, null, true)]
    [InlineData(1, 1, 256, 32, null, true)]   // rtx5090's T
    [InlineData(1, 2, 1024, 64, null, true)]  // the GPT-2-small-like preset's T
    [InlineData(2, 2, 200, 64, 5, false)]
    [InlineData(1, 3, 200, 32, 5, true)]
    [InlineData(1, 1, 300, 32, 64, true)]
    [InlineData(1, 1, 17, 64, 1, false)]
    public void Backward_runs_on_tensor_cores_on_cuda_and_matches_float64(int batch, int heads, int t, int hd, int? window, bool bf16Grads)
    {
        var dev = TestDevice.Get();
        using var probe = Tensor.Zeros(dev, new Shape(1, 1, 3 * hd), DType.BF16, MemoryCategory.Data, "probe");
        if (FlashAttentionTensorCore.WhyNot(probe, 1) is string why)
        {
            Assert.False(dev.IsCuda && why.Contains("CUDA"), why);
            return;
        }
        CheckBackward(batch, heads, t, hd, window, t + 5 * hd, bf16Grads ? DType.BF16 : DType.F32, emulated: false);
    }

    [Fact]
    public void The_path_is_chosen_from_dtype_head_dim_and_device_and_can_be_forced()
    {
        var dev = TestDevice.Get();
        using var bf16 = Tensor.Zeros(dev, new Shape(1, 5, 3 * 2 * 32), DType.BF16, MemoryCategory.Data, "qkv");
        using var f32 = Tensor.Zeros(dev, new Shape(1, 5, 3 * 2 * 32), DType.F32, MemoryCategory.Data, "qkv");
        using var hd48 = Tensor.Zeros(dev, new Shape(1, 5, 3 * 2 * 48), DType.BF16, MemoryCategory.Data, "qkv");
        Assert.Contains("float32", FlashAttentionTensorCore.WhyNot(f32, 2));
        Assert.Contains("head dim 48", FlashAttentionTensorCore.WhyNot(hd48, 2));
        if (!dev.IsCuda) Assert.Contains("CUDA", FlashAttentionTensorCore.WhyNot(bf16, 2));
        using (Launch.UsePath(KernelPath.Portable))
            Assert.StartsWith("simt", FlashAttentionTensorCore.PathFor(bf16, 2));
        using (FlashAttentionTensorCore.Use(FlashAttentionTensorCore.Mode.Off))
            Assert.Equal("simt (tensor cores turned off)", FlashAttentionTensorCore.PathFor(bf16, 2));
        using (FlashAttentionTensorCore.Use(FlashAttentionTensorCore.Mode.Emulated))
        {
            Assert.Equal("emulated tensor cores", FlashAttentionTensorCore.PathFor(bf16, 2));
            Assert.StartsWith("simt", FlashAttentionTensorCore.PathFor(hd48, 2));
        }
    }

    [Fact]
    public void Forward_in_emulated_mode_runs_the_twin_and_the_simt_path_otherwise()
    {
        var dev = TestDevice.Get();
        const int batch = 1, heads = 2, t = 37, hd = 32;
        var x = RandomQkv(batch, t, heads, hd, 9);
        using var qkv = Tensor.FromHost(dev, x, new Shape(batch, t, 3 * heads * hd), MemoryCategory.Data, "qkv", DType.BF16);
        ushort[] Run(Action<Tensor, int, int?, Tensor, Tensor> forward)
        {
            using var y = Tensor.Empty(dev, new Shape(batch, t, heads * hd), DType.BF16, MemoryCategory.Data, "y");
            using var lse = Tensor.Empty(dev, new Shape(batch, heads, t), DType.F32, MemoryCategory.Data, "lse");
            forward(qkv, heads, 9, y, lse);
            return y.ToBf16Array();
        }
        var twin = Run(Emulated);
        using (FlashAttentionTensorCore.Use(FlashAttentionTensorCore.Mode.Emulated))
            Assert.Equal(twin, Run(FlashAttention.Forward));
        using (FlashAttentionTensorCore.Use(FlashAttentionTensorCore.Mode.Off))
            Assert.NotEqual(twin, Run(FlashAttention.Forward)); // the SIMT path keeps P in fp32: other roundings
    }

    [Fact]
    public void Emulated_forward_rejects_what_the_kernels_do_not_cover()
    {
        var dev = TestDevice.Get();
        using var qkv = Tensor.Zeros(dev, new Shape(1, 4, 3 * 48), DType.BF16, MemoryCategory.Data, "qkv");
        using var y = Tensor.Empty(dev, new Shape(1, 4, 48), DType.BF16, MemoryCategory.Data, "y");
        using var lse = Tensor.Empty(dev, new Shape(1, 1, 4), DType.F32, MemoryCategory.Data, "lse");
        var e = Assert.Throws<ShapeException>(() => FlashAttentionTensorCore.ForwardEmulated(qkv, 1, null, y, lse));
        Assert.Equal("flash_attention_tc", e.Op);
        Assert.Contains("head dim 48", e.Message);
        Assert.Contains("[1, 4, 144]", e.Message);
        using var badY = Tensor.Empty(dev, new Shape(1, 4, 40), DType.BF16, MemoryCategory.Data, "y");
        Assert.Throws<ShapeException>(() => FlashAttentionTensorCore.ForwardEmulated(qkv, 1, null, badY, lse));
    }

    /// <summary>The kernels fold these steps into immediates: one lane address per k16 step (K) or per n pair (V, Q's rows by warp).</summary>
    [Fact]
    public void Lane_addresses_step_by_the_constants_the_kernels_fold_into_immediates()
    {
        foreach (int elems in new[] { 32, 64 })
        {
            int sixteenRows = 16 * elems * 2;
            for (int lane = 0; lane < 32; lane++)
                for (int i = 0; i < 4; i++)
                    for (int k = 0; k < elems / 16; k++)
                    {
                        Assert.Equal(FlashAttentionTensorCore.OperandB(lane, k, 0, elems) + i * sixteenRows, FlashAttentionTensorCore.OperandB(lane, k, i, elems));
                        Assert.Equal(FlashAttentionTensorCore.OperandA(lane, k, 0, elems) + i * sixteenRows, FlashAttentionTensorCore.OperandA(lane, k, i, elems));
                        Assert.Equal(FlashAttentionTensorCore.OperandBTrans(lane, 0, k, elems) + i * sixteenRows, FlashAttentionTensorCore.OperandBTrans(lane, i, k, elems));
                        Assert.Equal(FlashAttentionTensorCore.OperandATrans(lane, 0, k, elems) + i * sixteenRows, FlashAttentionTensorCore.OperandATrans(lane, i, k, elems));
                    }
        }
    }

    /// <summary>BwdStoreDs computes a lane's dSᵀ address as row base + ((g XOR 4·half XOR ni) « 4) (+1024 for row g + 8): the tile's swizzle.</summary>
    [Fact]
    public void The_ds_store_addresses_are_the_tile_swizzle()
    {
        for (int warp = 0; warp < 4; warp++)
            for (int lane = 0; lane < 32; lane++)
                for (int half = 0; half < 2; half++)
                    for (int ni = 0; ni < 4; ni++)
                        for (int upper = 0; upper < 2; upper++)
                        {
                            int g = lane >> 2, row = warp * 16 + g + 8 * upper, col = half * 32 + ni * 8 + 2 * (lane & 3);
                            int kernel = (warp * 16 + g) * 128 + 4 * (lane & 3) + (((g ^ (4 * half)) ^ ni) << 4) + 1024 * upper;
                            Assert.Equal(FlashAttentionTensorCore.TileOffset(row, col >> 3, 64) + 2 * (col & 7), kernel);
                        }
    }

    [Fact]
    public void Every_ldmatrix_phase_reads_eight_distinct_bank_groups_inside_the_tile()
    {
        foreach (int elems in new[] { 32, 64 })
            for (int ks = 0; ks < 4; ks++)
                for (int sub = 0; sub < 4; sub++)
                    for (int matrix = 0; matrix < 4; matrix++)
                        foreach (var address in new Func<int, int>[]
                                 {
                                     l => FlashAttentionTensorCore.OperandA(l, ks % (elems / 16), sub, elems),
                                     l => FlashAttentionTensorCore.OperandB(l, ks % (elems / 16), sub, elems),
                                     l => FlashAttentionTensorCore.OperandBTrans(l, ks, sub % (elems / 16), elems),
                                     l => FlashAttentionTensorCore.OperandATrans(l, ks, sub % (elems / 16), elems),
                                 })
                        {
                            var groups = new HashSet<int>();
                            for (int i = 0; i < 8; i++)
                            {
                                int a = address(8 * matrix + i);
                                Assert.InRange(a, 0, FlashAttentionTensorCore.TileBytes(elems) - 16);
                                Assert.Equal(0, a % 16);
                                groups.Add(a / 16 % 8);
                            }
                            Assert.Equal(8, groups.Count);
                        }
    }

    [Fact]
    public void The_tile_schedule_visits_exactly_the_key_tiles_a_query_tile_sees()
    {
        foreach (int t in new[] { 1, 64, 100, 300 })
            foreach (int window in new[] { 1, 5, 63, 64, 65, 200, t })
            {
                int w = Math.Min(window, t), tiles = (t + 63) / 64;
                for (int qt = 0; qt < tiles; qt++)
                {
                    int q0 = qt * 64;
                    for (int kt = 0; kt < tiles; kt++)
                    {
                        int k0 = kt * 64;
                        bool anyVisible = false, anyMasked = false;
                        for (int i = q0; i < q0 + 64; i++)
                            for (int j = k0; j < k0 + 64; j++)
                            {
                                bool visible = j <= i && j > i - w;
                                anyVisible |= visible && i < t && j < t;
                                anyMasked |= !visible;
                            }
                        bool visited = kt >= FlashAttentionTensorCore.FirstKeyTile(q0, w) && kt <= qt;
                        Assert.True(!anyVisible || visited, $"T={t} W={w}: query tile {qt} skips key tile {kt}");
                        // The backward walks query tiles kt..LastQueryTile for key tile kt: the same pairs.
                        Assert.Equal(visited, qt >= kt && qt <= FlashAttentionTensorCore.LastQueryTile(k0, w, tiles));
                        if (visited && anyMasked) Assert.True(FlashAttentionTensorCore.NeedsMask(q0, k0, w), $"T={t} W={w}: ({qt}, {kt}) needs its mask");
                    }
                }
            }
    }

    /// <summary>
    /// A row whose first visited key tile is wholly masked keeps m = −1e30 through it. Its rescale factor must be
    /// 2^((m_old − m)·scale·log2 e) = 2^0 there: computed as m_old·s − m·s (a mul.f32 then a sub.f32), ptxas fuses the
    /// pair into an fma whose result is the rounding residual of −1e30·s (+8.0e20 at hd 64, −9.1e21 at hd 32), so the
    /// factor was ∞ at hd 64 and l = 0·∞, O = 0·∞ NaN (the H100 failures at W = 5; the CPU never fuses, so only the PTX
    /// text can show it here). The emulation uses the same difference of maxima.
    /// </summary>
    [Theory]
    [InlineData(32)]
    [InlineData(64)]
    public void The_online_softmax_rescales_by_a_difference_of_maxima_which_no_fma_contraction_changes(int hd)
    {
        string ptx = FlashAttentionTensorCore.CompilePtx(TestDevice.Get(), hd);
        for (int h = 0; h < 2; h++)
        {
            Assert.Contains($"sub.f32 a{h}, fam{h}, x{h}; mul.f32 a{h}, a{h}, ", ptx);
            Assert.DoesNotContain($"mul.f32 a{h}, fam{h}", ptx);
        }
    }

    [Theory]
    [InlineData(32, false)]
    [InlineData(64, false)]
    [InlineData(32, true)]
    [InlineData(64, true)]
    public void The_kernels_compile_to_ptx_with_their_inline_assembly(int hd, bool backward)
    {
        // ILGPU's PTX backend runs without a GPU: this checks that the kernels and their CudaAsm operands compile.
        string ptx = FlashAttentionTensorCore.CompilePtx(TestDevice.Get(), hd, backward);
        Assert.Contains("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32", ptx);
        Assert.Contains("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16", ptx);
        int smem = backward ? FlashAttentionTensorCore.BackwardSmemBytes(hd) : 5 * FlashAttentionTensorCore.TileBytes(hd);
        Assert.True(smem <= 48 * 1024, $"{smem} bytes of static shared memory");
        Assert.Contains($"memopt_f{(backward ? 'b' : 'a')}_smem[{smem}]", ptx);
        if (Environment.GetEnvironmentVariable("MEMOPT_PTX_DIR") is string dir) File.WriteAllText(Path.Combine(dir, $"flash_{(backward ? "bwd" : "fwd")}{hd}.ptx"), ptx);
    }
}
