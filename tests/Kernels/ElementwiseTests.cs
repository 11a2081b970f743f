using FsCheck;
using FsCheck.Xunit;
using Memopt.Autograd;
using Memopt.Kernels;
using Memopt.Tensors;
using Memopt.Tests.Harness;

namespace Memopt.Tests.Kernels;

public class ElementwiseTests
{
    // Tolerances: a single float32 add/multiply is exact to half an ulp (~6e-8 relative); the finite differences in
    // float64 with h = 1e-6 are exact for linear functions up to ~1e-10. 1e-6 leaves room for neither to flake.
    private const double LinearTolerance = 1e-6;
    // GELU uses a float32 erf with ~1.2e-7 absolute error plus exp: allow 1e-5 of the tensor's scale.
    private const double GeluTolerance = 1e-5;

    private static Shape ShapeOf(int rows, int cols) => new(rows, cols);

    [Property(MaxTest = 25)]
    public void Add_matches_reference_and_finite_differences(PositiveInt rows, PositiveInt cols, int seed)
    {
        var shape = ShapeOf(rows.Get % 9 + 1, cols.Get % 33 + 1);
        var rng = new Random(seed);
        var r = GradCheck.Run(TestDevice.Get(),
            [(GradCheck.RandomValues(rng, shape.Numel), shape), (GradCheck.RandomValues(rng, shape.Numel), shape)], [true, true],
            v => Ops.Add(v[0], v[1]), x => Elementwise.Reference.Add(x[0], x[1]), seed);
        Assert.True(r.ForwardError <= LinearTolerance && r.GradientErrors.All(e => e <= LinearTolerance), r.ToString());
    }

    [Property(MaxTest = 25)]
    public void Scale_matches_reference_and_finite_differences(PositiveInt n, NormalFloat s, int seed)
    {
        var shape = new Shape(n.Get % 300 + 1);
        float factor = (float)Math.Clamp(s.Get, -10, 10);
        var rng = new Random(seed);
        var r = GradCheck.Run(TestDevice.Get(), [(GradCheck.RandomValues(rng, shape.Numel), shape)], [true],
            v => Ops.Scale(v[0], factor), x => Elementwise.Reference.Scale(x[0], factor), seed);
        Assert.True(r.ForwardError <= LinearTolerance && r.GradientErrors[0] <= LinearTolerance, r.ToString());
    }

    [Property(MaxTest = 25)]
    public void Gelu_matches_reference_and_finite_differences(PositiveInt n, int seed)
    {
        var shape = new Shape(n.Get % 500 + 1);
        var rng = new Random(seed);
        var r = GradCheck.Run(TestDevice.Get(), [(GradCheck.RandomValues(rng, shape.Numel, scale: 6), shape)], [true],
            v => Ops.Gelu(v[0]), x => Gelu.Reference.Forward(x[0]), seed);
        Assert.True(r.ForwardError <= GeluTolerance && r.GradientErrors[0] <= GeluTolerance, r.ToString());
    }

    /// <summary>
    /// The four-per-access GELU kernels (aligned bf16 or float32 tensors) and the scalar ones (the same values one
    /// element off alignment) give the same bits, forward and the accumulating backward.
    /// </summary>
    [Theory]
    [InlineData("f32")]
    [InlineData("bf16")]
    public void Gelu_quad_kernels_match_the_scalar_ones_bit_for_bit(string dtypeName)
    {
        var dtype = dtypeName == "bf16" ? DType.BF16 : DType.F32;
        const int n = 1028; // 257 quads
        var dev = TestDevice.Get();
        var rng = new Random(7);
        float[] x = GradCheck.RandomValues(rng, n, scale: 6), dy = GradCheck.RandomValues(rng, n), dx = GradCheck.RandomValues(rng, n);
        // The values from element `offset` of their tensors: 0 is aligned (quad kernels), 1 is not (scalar kernels).
        float[] Run(int offset)
        {
            Tensor Make(float[] v) => OffsetTensor.FromHost(dev, v, new Shape(n), offset, dtype);
            using var xv = Make(x);
            using var dyv = Make(dy);
            using var dxv = Make(dx);
            using var yv = Make(new float[n]);
            Gelu.Forward(xv, yv);
            Gelu.Backward(xv, dyv, dxv);
            return [.. yv.ToFloatArray(), .. dxv.ToFloatArray()];
        }
        Assert.Equal(Run(0), Run(1));
    }

    /// <summary>
    /// The four-per-access add, scale and add-into kernels (aligned bf16 or float32 tensors) and the scalar ones (the
    /// same values one element off alignment) give the same bits, with a host scale and with a device one.
    /// </summary>
    [Theory]
    [InlineData("f32")]
    [InlineData("bf16")]
    public void Add_scale_and_add_into_quad_kernels_match_the_scalar_ones_bit_for_bit(string dtypeName)
    {
        var dtype = dtypeName == "bf16" ? DType.BF16 : DType.F32;
        const int n = 1028; // 257 quads
        const float s = 0.37f;
        var dev = TestDevice.Get();
        var rng = new Random(11);
        float[] a = GradCheck.RandomValues(rng, n), b = GradCheck.RandomValues(rng, n), acc = GradCheck.RandomValues(rng, n);
        using var deviceScale = Tensor.FromHost(dev, [-1.9f], new Shape(1), MemoryCategory.Data, "s", DType.F32);
        // The values from element `offset` of their tensors: 0 is aligned (quad kernels), 1 is not (scalar kernels).
        float[] Run(int offset)
        {
            Tensor Make(float[] v) => OffsetTensor.FromHost(dev, v, new Shape(n), offset, dtype);
            using var av = Make(a);
            using var bv = Make(b);
            using var sum = Make(new float[n]);
            using var scaled = Make(new float[n]);
            using var hostAcc = Make(acc);
            using var devAcc = Make(acc);
            // Every tensor must fit for the quad kernels to run; at offset 1 none does.
            foreach (var t in new[] { av, bv, sum, scaled, hostAcc, devAcc })
                Assert.Equal(offset == 0, dtype == DType.BF16 ? Bf16Quads.Fits(t) : F32Quads.Fits(t));
            Elementwise.Add(av, bv, sum);
            Elementwise.Scale(av, s, scaled);
            Elementwise.AddInto(av, hostAcc, s);
            Elementwise.AddInto(bv, devAcc, deviceScale);
            return [.. sum.ToFloatArray(), .. scaled.ToFloatArray(), .. hostAcc.ToFloatArray(), .. devAcc.ToFloatArray()];
        }
        Assert.Equal(Run(0), Run(1));
    }

    /// <summary>A case FsCheck found: one value near −5, whose GELU (~1e-6) lost three digits to 1 + erf(x/√2) cancelling.</summary>
    [Fact]
    public void Gelu_of_one_value_far_below_zero_matches_the_reference() =>
        Gelu_matches_reference_and_finite_differences(PositiveInt.NewPositiveInt(1), 18);

    /// <summary>
    /// GELU in float32 against float64 over −8..8 relative to each value itself: erfc below 0 keeps the tail's relative
    /// precision, where 1 + erf(x/√2) cancelled. The tail's own conditioning is ~x² (its log-slope: the rounding of x/√2
    /// and of x² inside exp), so the error is held to 4e-7·(1 + x²), a few float32 ulps (worst seen 2.1e-7, near
    /// x = −0.86 where the erfc fit starts); 1 + erf gave 1e-3 at x ≈ −5.
    /// Its derivative Φ(x) + x·φ(x) cancels in the tail by its own form, so it is held to its terms' scale |Φ| + |x·φ|.
    /// </summary>
    [Fact]
    public void Gelu_keeps_its_relative_precision_in_the_negative_tail()
    {
        double worstValue = 0, worstDerivative = 0;
        for (double x = -8; x <= 8; x += 1e-3)
        {
            float xf = (float)x;
            double phi = xf < 0 ? 0.5 * KernelMath.ErfcDouble(-xf / Math.Sqrt(2)) : 0.5 * (1 + KernelMath.ErfDouble(xf / Math.Sqrt(2)));
            double slope = xf * Math.Exp(-0.5 * xf * xf) / Math.Sqrt(2 * Math.PI);
            double kappa = 1 + (double)xf * xf;
            if (xf != 0) worstValue = Math.Max(worstValue, Math.Abs(Gelu.Value(xf) - xf * phi) / Math.Abs(xf * phi) / kappa);
            worstDerivative = Math.Max(worstDerivative, Math.Abs(Gelu.Derivative(xf) - (phi + slope)) / (Math.Abs(phi) + Math.Abs(slope)) / kappa);
        }
        Assert.True(worstValue < 4e-7, $"GELU worst relative error {worstValue:E2}·(1 + x²)");
        Assert.True(worstDerivative < 4e-7, $"GELU' worst error {worstDerivative:E2}·(1 + x²) of its terms");
    }

    /// <summary>
    /// Float erfc against float64 over 0..6, relative to itself: the fit's 1.2e-7 and float32 rounding, plus z²·6e-8 from
    /// rounding z² inside exp; held to 6e-7·(1 + z²), worst seen 3.1e-7·(1 + z²).
    /// </summary>
    [Fact]
    public void Float_erfc_keeps_its_relative_precision_over_0_to_6()
    {
        double worst = 0;
        for (double z = 0; z <= 6; z += 1e-3)
        {
            double want = KernelMath.ErfcDouble((float)z);
            worst = Math.Max(worst, Math.Abs(KernelMath.Erfc((float)z) - want) / want / (1 + z * z));
        }
        Assert.True(worst < 6e-7, $"worst relative error {worst:E2}·(1 + z²)");
    }

    [Fact]
    public void Float64_erf_matches_known_values()
    {
        // erf(0.5), erf(1), erf(2), erf(3.5) to 15 digits (Abramowitz & Stegun table 7.1 / high-precision values).
        Assert.Equal(0.520499877813047, KernelMath.ErfDouble(0.5), 13);
        Assert.Equal(0.842700792949715, KernelMath.ErfDouble(1.0), 13);
        Assert.Equal(0.995322265018953, KernelMath.ErfDouble(2.0), 13);
        Assert.Equal(0.999999256901628, KernelMath.ErfDouble(3.5), 13);
        Assert.Equal(-KernelMath.ErfDouble(1.3), KernelMath.ErfDouble(-1.3), 15);
    }

    [Fact]
    public void Mismatched_shapes_name_the_op_and_both_shapes()
    {
        var dev = TestDevice.Get();
        using var a = Tensor.Zeros(dev, new Shape(2, 3), DType.F32, MemoryCategory.Data, "a");
        using var b = Tensor.Zeros(dev, new Shape(3, 2), DType.F32, MemoryCategory.Data, "b");
        using var y = Tensor.Zeros(dev, new Shape(2, 3), DType.F32, MemoryCategory.Data, "y");
        var e = Assert.Throws<ShapeException>(() => Elementwise.Add(a, b, y));
        Assert.Contains("add", e.Message);
        Assert.Contains("[2, 3]", e.Message);
        Assert.Contains("[3, 2]", e.Message);
    }
}
