using FsCheck;
using FsCheck.Xunit;
using Memopt.Autograd;
using Memopt.Kernels;
using Memopt.Tensors;
using Memopt.Tests.Harness;

namespace Memopt.Tests.Kernels;

public class LayerNormTests
{
    // LayerNorm's float32 error is set by its conditioning κ = max over rows of rstd·max|x| (at least 1): x − μ is
    // computed to about an ulp of |x| and then multiplied by rstd, so every x̂ carries an absolute error of a few
    // ulps·κ (a row near-constant relative to its offset has κ in the hundreds). Tolerances are therefore stated in
    // units of κ; the worst seen over 1500 random cases (C = 1..70, spreads down to 1e-3) is given for each.
    // Forward, relative to max|y|: worst seen 3.1e-7·κ; 2e-6·κ is about 30 ulps·κ.
    private const double ForwardTolerance = 2e-6;
    // dweight, dbias (column sums of dy·x̂ and dy, relative to their largest entry): worst seen 2.0e-6·κ.
    private const double ParameterGradientTolerance = 2e-5;
    // dx = r·(g − mean(g) − x̂·mean(g·x̂)) with g = dy·w is a projection that cancels terms of size r·|g|; for C ≤ 2
    // (and near-degenerate rows) the true dx is only O(eps/σ²) of them, so its float32 error is measured against
    // the terms, max rstd · max|g|, not against dx itself: worst seen 1.2e-7·κ.
    private const double InputGradientTolerance = 2e-6;

    private static (float[], Shape)[] Inputs(Random rng, int rows, int cols, double? spread = null)
    {
        // x has a random offset and spread (LayerNorm must not care); weight around 1, bias around 0.
        double offset = rng.NextDouble() * 4 - 2, s = spread ?? 0.1 + rng.NextDouble() * 3;
        var x = GradCheck.RandomValues(rng, (long)rows * cols, s).Select(v => v + (float)offset).ToArray();
        var w = GradCheck.RandomValues(rng, cols, 0.5).Select(v => v + 1f).ToArray();
        var b = GradCheck.RandomValues(rng, cols, 0.5);
        return [(x, new Shape(rows, cols)), (w, new Shape(cols)), (b, new Shape(cols))];
    }

    private static double[] F64(float[] v) => v.Select(e => (double)e).ToArray();

    /// <summary>max over rows of rstd·max|x|, at least 1 (see the tolerances).</summary>
    private static double Conditioning(double[] x, int cols)
    {
        double kappa = 1;
        for (int start = 0; start < x.Length; start += cols)
        {
            double rstd = LayerNorm.Reference.Stats(x, start, cols).Rstd;
            for (int c = 0; c < cols; c++) kappa = Math.Max(kappa, rstd * Math.Abs(x[start + c]));
        }
        return kappa;
    }

    /// <summary>
    /// Forward, dweight and dbias through <see cref="GradCheck"/>; dx separately, as max|dx − finite differences|
    /// over max rstd·max|dy·w| (see <see cref="InputGradientTolerance"/>).
    /// </summary>
    private static void CheckLayerNorm((float[] Values, Shape Shape)[] inputs, int seed)
    {
        KernelPaths.ForEach(() =>
        {
            var dev = TestDevice.Get();
            int rows = (int)inputs[0].Shape.Rows, cols = inputs[0].Shape.Last;
            GradCheck.Reference reference = x => LayerNorm.Reference.Forward(x[0], x[1], x[2], cols);
            var x64 = F64(inputs[0].Values);
            double kappa = Conditioning(x64, cols);

            var r = GradCheck.Run(dev, inputs, [false, true, true], v => Ops.LayerNorm(v[0], v[1], v[2]), reference, seed);

            var dyValues = GradCheck.RandomValues(new Random(seed), inputs[0].Values.Length);
            double[] dx;
            using (var x = new Var(Tensor.FromHost(dev, inputs[0].Values, inputs[0].Shape, MemoryCategory.Data, "x"), requiresGrad: true))
            using (var w = new Var(Tensor.FromHost(dev, inputs[1].Values, inputs[1].Shape, MemoryCategory.Data, "w")))
            using (var b = new Var(Tensor.FromHost(dev, inputs[2].Values, inputs[2].Shape, MemoryCategory.Data, "b")))
            using (var tape = new Tape())
            using (var y = Ops.LayerNorm(x, w, b))
            using (var dy = Tensor.FromHost(dev, dyValues, y.Shape, MemoryCategory.Data, "dy"))
            {
                tape.Backward(y, dy);
                dx = F64(x.Grad!.ToFloatArray());
                x.Grad.Dispose();
            }
            var fd = GradCheck.FiniteDifference(reference, [x64, F64(inputs[1].Values), F64(inputs[2].Values)], 0, F64(dyValues), 1e-6);
            double maxRstd = Enumerable.Range(0, rows).Max(row => LayerNorm.Reference.Stats(x64, row * cols, cols).Rstd);
            double termScale = maxRstd * dyValues.Max(Math.Abs) * inputs[1].Values.Max(Math.Abs) + 1e-30;
            double dxError = dx.Select((g, i) => Math.Abs(g - fd[i])).Max() / termScale;

            Assert.True(r.ForwardError <= ForwardTolerance * kappa
                        && r.GradientErrors[1] <= ParameterGradientTolerance * kappa && r.GradientErrors[2] <= ParameterGradientTolerance * kappa
                        && dxError <= InputGradientTolerance * kappa,
                $"rows={rows} C={cols} κ={kappa:F1}: {r}; dx error {dxError:E2} of the terms");
        });
    }

    [Property(MaxTest = 40)]
    public void LayerNorm_matches_reference_and_finite_differences_for_C_1_to_70(PositiveInt rows, PositiveInt cols, int seed)
    {
        var rng = new Random(seed);
        CheckLayerNorm(Inputs(rng, rows.Get % 5 + 1, cols.Get % 70 + 1), seed);
    }

    [Property(MaxTest = 10)]
    public void LayerNorm_stays_accurate_on_nearly_constant_rows_with_an_offset(PositiveInt rows, PositiveInt cols, int seed)
    {
        // Spread 1e-3 around an offset up to 2: variance below eps, rstd near 1/√eps, κ in the hundreds.
        var rng = new Random(seed);
        CheckLayerNorm(Inputs(rng, rows.Get % 3 + 1, cols.Get % 70 + 1, spread: 1e-3), seed);
    }

    [Theory]
    [InlineData(77, 3)]    // 77 rows: three chunks of 32 in the column-sum pass, the last one partial
    [InlineData(3, 1000)]  // C far beyond the group size: many elements per thread in every reduction
    [InlineData(1, 1)]     // variance 0: x̂ = 0, y = bias, dx = 0
    [InlineData(4, 2)]     // two columns: dx is nearly zero (see InputGradientTolerance)
    [InlineData(9, 256)]   // the model's C: a warp per row, 64 quads, two per lane on CUDA
    [InlineData(2, 4)]     // one quad per row: most lanes of the warp have nothing to add
    public void LayerNorm_matches_at_chunk_and_row_boundaries(int rows, int cols)
    {
        var rng = new Random(rows * 1000 + cols);
        CheckLayerNorm(Inputs(rng, rows, cols), rows + cols);
    }

    [Fact]
    public void Saved_statistics_are_the_row_mean_and_rstd_and_nothing_normalized_is_kept()
    {
        var dev = TestDevice.Get();
        const int rows = 6, cols = 13;
        var rng = new Random(5);
        var inputs = Inputs(rng, rows, cols);
        using var x = new Var(Tensor.FromHost(dev, inputs[0].Item1, inputs[0].Item2, MemoryCategory.Data, "x"), requiresGrad: true);
        using var w = new Var(Tensor.FromHost(dev, inputs[1].Item1, inputs[1].Item2, MemoryCategory.Data, "w"), requiresGrad: true);
        using var b = new Var(Tensor.FromHost(dev, inputs[2].Item1, inputs[2].Item2, MemoryCategory.Data, "b"), requiresGrad: true);
        long savedBefore = dev.Tracker.LiveOf(MemoryCategory.SavedForBackward);
        using var tape = new Tape();
        using var y = Ops.LayerNorm(x, w, b);
        // x and w are test data (not retagged); the op's own saved memory is mean and rstd: 2·rows floats.
        Assert.Equal(2L * rows * sizeof(float), dev.Tracker.LiveOf(MemoryCategory.SavedForBackward) - savedBefore);
        var node = Assert.Single(tape.Nodes);
        var mean = node.Saved[2].ToFloatArray();
        var rstd = node.Saved[3].ToFloatArray();
        var x64 = inputs[0].Item1.Select(v => (double)v).ToArray();
        for (int row = 0; row < rows; row++)
        {
            var (mu, rs) = LayerNorm.Reference.Stats(x64, row * cols, cols);
            Assert.True(Math.Abs(mean[row] - mu) <= 1e-6 * (1 + Math.Abs(mu)), $"row {row}: mean {mean[row]} vs {mu}");
            Assert.True(Math.Abs(rstd[row] - rs) <= 1e-5 * rs, $"row {row}: rstd {rstd[row]} vs {rs}");
        }
        using var seed = Tensor.FromHost(dev, GradCheck.RandomValues(rng, rows * cols), y.Shape, MemoryCategory.Data, "seed");
        tape.Backward(y, seed);
        Assert.Equal(savedBefore, dev.Tracker.LiveOf(MemoryCategory.SavedForBackward));
        foreach (var v in new[] { x, w, b }) v.Grad?.Dispose();
    }

    [Fact]
    public void Weight_and_bias_gradients_are_identical_run_to_run()
    {
        KernelPaths.ForEach(() =>
        {
            var dev = TestDevice.Get();
            const int rows = 100, cols = 7;
            var rng = new Random(11);
            var inputs = Inputs(rng, rows, cols);
            var dyValues = GradCheck.RandomValues(rng, rows * cols);
            float[][] Once()
            {
                using var x = Tensor.FromHost(dev, inputs[0].Item1, inputs[0].Item2, MemoryCategory.Data, "x");
                using var w = Tensor.FromHost(dev, inputs[1].Item1, inputs[1].Item2, MemoryCategory.Data, "w");
                using var b = Tensor.FromHost(dev, inputs[2].Item1, inputs[2].Item2, MemoryCategory.Data, "b");
                using var y = Tensor.Empty(dev, x.Shape, DType.F32, MemoryCategory.Data, "y");
                using var mean = Tensor.Empty(dev, LayerNorm.StatsShape(x.Shape), DType.F32, MemoryCategory.Data, "mean");
                using var rstd = Tensor.Empty(dev, LayerNorm.StatsShape(x.Shape), DType.F32, MemoryCategory.Data, "rstd");
                using var dy = Tensor.FromHost(dev, dyValues, x.Shape, MemoryCategory.Data, "dy");
                using var dw = Tensor.Zeros(dev, w.Shape, DType.F32, MemoryCategory.Data, "dw");
                using var db = Tensor.Zeros(dev, w.Shape, DType.F32, MemoryCategory.Data, "db");
                LayerNorm.Forward(x, w, b, y, mean, rstd);
                LayerNorm.Backward(x, w, mean, rstd, dy, null, dw, db);
                return [dw.ToFloatArray(), db.ToFloatArray()];
            }
            var first = Once();
            var second = Once();
            Assert.Equal(first[0], second[0]);
            Assert.Equal(first[1], second[1]);
            // And db is the plain column sum of dy.
            for (int c = 0; c < cols; c++)
            {
                double want = 0;
                for (int r = 0; r < rows; r++) want += dyValues[r * cols + c];
                Assert.True(Math.Abs(first[1][c] - want) <= 1e-5 * rows, $"db[{c}] = {first[1][c]}, want {want}");
            }
        });
    }

    [Theory]
    [InlineData(100, 7)]   // scalar partials
    [InlineData(130, 12)]  // four-column partials; the last chunk's two rows after the four-row blocks
    [InlineData(1100, 8)]  // 35 chunks: some of the sum's lanes add five chunks, the others four
    public void Both_paths_give_bitwise_equal_weight_and_bias_gradients_from_the_same_statistics(int rows, int cols)
    {
        // The portable one-launch column sum walks the cooperative two-pass sum's chunks in the same order.
        var dev = TestDevice.Get();
        var rng = new Random(13);
        var inputs = Inputs(rng, rows, cols);
        using var x = Tensor.FromHost(dev, inputs[0].Item1, inputs[0].Item2, MemoryCategory.Data, "x");
        using var w = Tensor.FromHost(dev, inputs[1].Item1, inputs[1].Item2, MemoryCategory.Data, "w");
        using var b = Tensor.FromHost(dev, inputs[2].Item1, inputs[2].Item2, MemoryCategory.Data, "b");
        using var y = Tensor.Empty(dev, x.Shape, DType.F32, MemoryCategory.Data, "y");
        using var mean = Tensor.Empty(dev, LayerNorm.StatsShape(x.Shape), DType.F32, MemoryCategory.Data, "mean");
        using var rstd = Tensor.Empty(dev, LayerNorm.StatsShape(x.Shape), DType.F32, MemoryCategory.Data, "rstd");
        using var dy = Tensor.FromHost(dev, GradCheck.RandomValues(rng, rows * cols), x.Shape, MemoryCategory.Data, "dy");
        LayerNorm.Forward(x, w, b, y, mean, rstd);
        var results = KernelPaths.Both.Select(path =>
        {
            using var scope = Launch.UsePath(path);
            using var dw = Tensor.Zeros(dev, w.Shape, DType.F32, MemoryCategory.Data, "dw");
            using var db = Tensor.Zeros(dev, w.Shape, DType.F32, MemoryCategory.Data, "db");
            LayerNorm.Backward(x, w, mean, rstd, dy, null, dw, db);
            return (Dw: dw.ToFloatArray(), Db: db.ToFloatArray());
        }).ToArray();
        Assert.Equal(results[0].Dw, results[1].Dw);
        Assert.Equal(results[0].Db, results[1].Db);
    }

    /// <summary>
    /// Rows of a multiple of 4 columns in quad-aligned tensors take the warp-per-row forward and dx and the
    /// four-column parameter partials on the cooperative path; the others (and misaligned views) the group-per-row forms.
    /// </summary>
    [Theory]
    [InlineData("f32", 12, 0, true)]
    [InlineData("bf16", 12, 0, true)]
    [InlineData("f32", 13, 0, false)]
    [InlineData("bf16", 12, 1, false)]
    public void Quad_rows_take_the_warp_kernels_on_the_cooperative_path(string dtypeName, int cols, int offset, bool quads)
    {
        var dtype = dtypeName == "bf16" ? DType.BF16 : DType.F32;
        string suffix = dtypeName == "bf16" ? "_bf16x4" : "_f32x4";
        var dev = TestDevice.Get();
        const int rows = 5;
        var rng = new Random(cols);
        var inputs = Inputs(rng, rows, cols);
        Tensor Make(float[] v) => OffsetTensor.FromHost(dev, v, new Shape(rows, cols), offset, dtype);
        using var x = Make(inputs[0].Item1);
        using var dy = Make(GradCheck.RandomValues(rng, rows * cols));
        using var y = Make(new float[rows * cols]);
        using var dx = Make(new float[rows * cols]);
        using var w = Tensor.FromHost(dev, inputs[1].Item1, inputs[1].Item2, MemoryCategory.Data, "w");
        using var b = Tensor.FromHost(dev, inputs[2].Item1, inputs[2].Item2, MemoryCategory.Data, "b");
        using var mean = Tensor.Empty(dev, LayerNorm.StatsShape(x.Shape), DType.F32, MemoryCategory.Data, "mean");
        using var rstd = Tensor.Empty(dev, LayerNorm.StatsShape(x.Shape), DType.F32, MemoryCategory.Data, "rstd");
        using var dw = Tensor.Zeros(dev, w.Shape, DType.F32, MemoryCategory.Data, "dw");
        using var db = Tensor.Zeros(dev, w.Shape, DType.F32, MemoryCategory.Data, "db");
        using var scope = Launch.UsePath(KernelPath.Cooperative);
        using (var launches = new LaunchCounter(dev))
        {
            LayerNorm.Forward(x, w, b, y, mean, rstd);
            LayerNorm.Backward(x, w, mean, rstd, dy, dx, dw, db);
            foreach (var kernel in new[] { "layernorm.fwd", "layernorm.bwd_input", "layernorm.bwd_param_partials" })
            {
                Assert.Equal(quads ? 1 : 0, launches[kernel + suffix]);
                Assert.Equal(quads ? 0 : 1, launches[kernel]);
            }
        }
        // Whichever kernels ran, y is LayerNorm(x) to the storage's rounding.
        var want = LayerNorm.Reference.Forward(F64(x.ToFloatArray()), F64(inputs[1].Item1), F64(inputs[2].Item1), cols);
        var got = y.ToFloatArray();
        double scale = want.Max(Math.Abs), error = got.Select((v, i) => Math.Abs(v - want[i])).Max() / scale;
        Assert.True(error <= (dtype == DType.BF16 ? 1.0 / 256 : 1e-5), $"forward error {error:E2} of max|y|");
    }

    /// <summary>
    /// The residual add and the LayerNorm after it in one kernel (cooperative path, quad rows) give the sum, y and the
    /// statistics of the two ops bit for bit, in both dtypes; misaligned views run the two ops.
    /// </summary>
    [Theory]
    [InlineData("f32", 0, "layernorm.fwd_residual_f32x4")]
    [InlineData("bf16", 0, "layernorm.fwd_residual_bf16x4")]
    [InlineData("bf16", 1, "layernorm.fwd")]
    public void Residual_add_and_layernorm_in_one_kernel_match_the_two_ops_bit_for_bit(string dtypeName, int offset, string kernel)
    {
        var dtype = dtypeName == "bf16" ? DType.BF16 : DType.F32;
        var dev = TestDevice.Get();
        const int rows = 7, cols = 36;
        var rng = new Random(17);
        var inputs = Inputs(rng, rows, cols);
        var delta = GradCheck.RandomValues(rng, rows * cols, 2);
        using var scope = Launch.UsePath(KernelPath.Cooperative);
        using var w = Tensor.FromHost(dev, inputs[1].Item1, inputs[1].Item2, MemoryCategory.Data, "w");
        using var b = Tensor.FromHost(dev, inputs[2].Item1, inputs[2].Item2, MemoryCategory.Data, "b");
        float[][] Run(bool fused)
        {
            Tensor Make(float[] v) => OffsetTensor.FromHost(dev, v, new Shape(rows, cols), offset, dtype);
            using var x = Make(inputs[0].Item1);
            using var a = Make(delta);
            using var sum = Make(new float[rows * cols]);
            using var y = Make(new float[rows * cols]);
            using var mean = Tensor.Empty(dev, LayerNorm.StatsShape(x.Shape), DType.F32, MemoryCategory.Data, "mean");
            using var rstd = Tensor.Empty(dev, LayerNorm.StatsShape(x.Shape), DType.F32, MemoryCategory.Data, "rstd");
            using (var launches = new LaunchCounter(dev))
            {
                if (fused)
                {
                    LayerNorm.ForwardResidual(x, a, sum, w, b, y, mean, rstd);
                    Assert.Equal(1, launches[kernel]);
                }
                else
                {
                    Elementwise.Add(x, a, sum);
                    LayerNorm.Forward(sum, w, b, y, mean, rstd);
                }
            }
            return [sum.ToFloatArray(), y.ToFloatArray(), mean.ToFloatArray(), rstd.ToFloatArray()];
        }
        var one = Run(fused: true);
        var two = Run(fused: false);
        for (int i = 0; i < one.Length; i++) Assert.Equal(two[i], one[i]);
    }

    /// <summary>
    /// Ops.AddLayerNorm is Ops.Add then Ops.LayerNorm as the tape sees it: the same sum and y, and after backward the same
    /// gradients of both addends, the weight and the bias, bit for bit, on both paths.
    /// </summary>
    [Fact]
    public void AddLayerNorm_records_the_add_and_the_layernorm_it_replaces()
    {
        KernelPaths.ForEach(() =>
        {
            var dev = TestDevice.Get();
            const int rows = 6, cols = 20;
            var rng = new Random(23);
            var inputs = Inputs(rng, rows, cols);
            var delta = GradCheck.RandomValues(rng, rows * cols, 2);
            var dyValues = GradCheck.RandomValues(rng, rows * cols);
            float[][] Run(bool fused)
            {
                using var x = new Var(Tensor.FromHost(dev, inputs[0].Item1, inputs[0].Item2, MemoryCategory.Data, "x"), requiresGrad: true);
                using var a = new Var(Tensor.FromHost(dev, delta, inputs[0].Item2, MemoryCategory.Data, "a"), requiresGrad: true);
                using var w = new Var(Tensor.FromHost(dev, inputs[1].Item1, inputs[1].Item2, MemoryCategory.Data, "w"), requiresGrad: true);
                using var b = new Var(Tensor.FromHost(dev, inputs[2].Item1, inputs[2].Item2, MemoryCategory.Data, "b"), requiresGrad: true);
                using var tape = new Tape();
                Var sum, y;
                if (fused) (sum, y) = Ops.AddLayerNorm(x, a, w, b);
                else
                {
                    sum = Ops.Add(x, a);
                    y = Ops.LayerNorm(sum, w, b);
                }
                float[][] values = [sum.Value.ToFloatArray(), y.Value.ToFloatArray()];
                sum.Dispose();
                using (y)
                using (var dy = Tensor.FromHost(dev, dyValues, y.Shape, MemoryCategory.Data, "dy"))
                    tape.Backward(y, dy);
                float[][] grads = [.. new[] { x, a, w, b }.Select(v => v.Grad!.ToFloatArray())];
                foreach (var v in new[] { x, a, w, b }) v.Grad!.Dispose();
                return [.. values, .. grads];
            }
            var one = Run(fused: true);
            var two = Run(fused: false);
            for (int i = 0; i < one.Length; i++) Assert.Equal(two[i], one[i]);
        });
    }

    [Fact]
    public void Backward_accumulates_into_existing_gradients()
    {
        KernelPaths.ForEach(() =>
        {
            var dev = TestDevice.Get();
            var rng = new Random(3);
            var inputs = Inputs(rng, 4, 9);
            using var x = Tensor.FromHost(dev, inputs[0].Item1, inputs[0].Item2, MemoryCategory.Data, "x");
            using var w = Tensor.FromHost(dev, inputs[1].Item1, inputs[1].Item2, MemoryCategory.Data, "w");
            using var b = Tensor.FromHost(dev, inputs[2].Item1, inputs[2].Item2, MemoryCategory.Data, "b");
            using var y = Tensor.Empty(dev, x.Shape, DType.F32, MemoryCategory.Data, "y");
            using var mean = Tensor.Empty(dev, LayerNorm.StatsShape(x.Shape), DType.F32, MemoryCategory.Data, "mean");
            using var rstd = Tensor.Empty(dev, LayerNorm.StatsShape(x.Shape), DType.F32, MemoryCategory.Data, "rstd");
            using var dy = Tensor.FromHost(dev, GradCheck.RandomValues(rng, x.Numel), x.Shape, MemoryCategory.Data, "dy");
            using var dx = Tensor.Zeros(dev, x.Shape, DType.F32, MemoryCategory.Data, "dx");
            using var dw = Tensor.Zeros(dev, w.Shape, DType.F32, MemoryCategory.Data, "dw");
            using var db = Tensor.Zeros(dev, w.Shape, DType.F32, MemoryCategory.Data, "db");
            LayerNorm.Forward(x, w, b, y, mean, rstd);
            LayerNorm.Backward(x, w, mean, rstd, dy, dx, dw, db);
            var once = new[] { dx.ToFloatArray(), dw.ToFloatArray(), db.ToFloatArray() };
            LayerNorm.Backward(x, w, mean, rstd, dy, dx, dw, db);
            var twice = new[] { dx.ToFloatArray(), dw.ToFloatArray(), db.ToFloatArray() };
            for (int k = 0; k < 3; k++)
                for (int i = 0; i < once[k].Length; i++)
                    Assert.Equal(2 * once[k][i], twice[k][i], 1e-5f * (1 + Math.Abs(once[k][i])));
        });
    }

    [Fact]
    public void Wrong_weight_shape_names_the_op_and_the_shapes()
    {
        var dev = TestDevice.Get();
        using var x = new Var(Tensor.Zeros(dev, new Shape(2, 5), DType.F32, MemoryCategory.Data, "x"));
        using var w = new Var(Tensor.Zeros(dev, new Shape(4), DType.F32, MemoryCategory.Data, "w"));
        using var b = new Var(Tensor.Zeros(dev, new Shape(5), DType.F32, MemoryCategory.Data, "b"));
        long live = dev.Tracker.Live;
        var e = Assert.Throws<ShapeException>(() => Ops.LayerNorm(x, w, b));
        Assert.Contains("layernorm", e.Message);
        Assert.Contains("[4]", e.Message);
        Assert.Contains("[2, 5]", e.Message);
        Assert.Equal(live, dev.Tracker.Live); // nothing allocated before the check
    }

    [Fact]
    public void Wrong_dtype_bias_shape_and_eps_are_rejected()
    {
        var dev = TestDevice.Get();
        using var x = new Var(Tensor.Zeros(dev, new Shape(2, 5), DType.I32, MemoryCategory.Data, "x"));
        using var x32 = new Var(Tensor.Zeros(dev, new Shape(2, 5), DType.F32, MemoryCategory.Data, "x32"));
        using var w = new Var(Tensor.Zeros(dev, new Shape(5), DType.F32, MemoryCategory.Data, "w"));
        using var b = new Var(Tensor.Zeros(dev, new Shape(5, 1), DType.F32, MemoryCategory.Data, "b"));
        // bf16 is a storage format LayerNorm takes (mixed precision); an integer input is not.
        Assert.Contains("int32, expected float32 or bfloat16", Assert.Throws<ShapeException>(() => Ops.LayerNorm(x, w, w)).Message);
        var e = Assert.Throws<ShapeException>(() => Ops.LayerNorm(x32, w, b));
        Assert.Contains("bias [5, 1]", e.Message);
        e = Assert.Throws<ShapeException>(() => Ops.LayerNorm(x32, w, w, eps: 0f));
        Assert.Contains("eps = 0", e.Message);
        Assert.Contains("[2, 5]", e.Message);
    }
}
