using FsCheck;
using FsCheck.Xunit;
using Memopt.Autograd;
using Memopt.Kernels;
using Memopt.Tensors;
using Memopt.Tests.Harness;

namespace Memopt.Tests.Kernels;

public class HeadPermuteTests
{
    // Pure copies and (in backward) additions into zeroed buffers: exact in float32. The float64 central
    // differences of a linear map are exact up to ~1e-10. 1e-6 flags any misplaced element (error O(1)).
    private const double CopyTolerance = 1e-6;

    private static (int B, int T, int H, int Hd) Dims(PositiveInt b, PositiveInt t, PositiveInt h, PositiveInt hd) =>
        (b.Get % 3 + 1, t.Get % 7 + 1, h.Get % 4 + 1, hd.Get % 5 + 1);

    [Property(MaxTest = 30)]
    public void Select_heads_matches_reference_and_finite_differences(PositiveInt b, PositiveInt t, PositiveInt h, PositiveInt hd, PositiveInt which, int seed)
    {
        var (nb, nt, nh, nd) = Dims(b, t, h, hd);
        int part = which.Get % 3;
        var shape = new Shape(nb, nt, 3 * nh * nd);
        var rng = new Random(seed);
        var r = GradCheck.Run(TestDevice.Get(), [(GradCheck.RandomValues(rng, shape.Numel), shape)], [true],
            v => Ops.SelectHeads(v[0], nh, part),
            x => HeadPermute.Reference.Select(x[0], nb, nt, nh, part), seed);
        Assert.True(r.ForwardError <= CopyTolerance && r.GradientErrors[0] <= CopyTolerance, $"B={nb} T={nt} H={nh} hd={nd} part {part}: {r}");
    }

    [Property(MaxTest = 30)]
    public void Merge_heads_matches_reference_and_finite_differences(PositiveInt b, PositiveInt t, PositiveInt h, PositiveInt hd, int seed)
    {
        var (nb, nt, nh, nd) = Dims(b, t, h, hd);
        var shape = new Shape(nb, nh, nt, nd);
        var rng = new Random(seed);
        var r = GradCheck.Run(TestDevice.Get(), [(GradCheck.RandomValues(rng, shape.Numel), shape)], [true],
            v => Ops.MergeHeads(v[0]),
            x => HeadPermute.Reference.Merge(x[0], nb, nh, nt, nd), seed);
        Assert.True(r.ForwardError <= CopyTolerance && r.GradientErrors[0] <= CopyTolerance, $"B={nb} T={nt} H={nh} hd={nd}: {r}");
    }

    [Property(MaxTest = 15)]
    public void Split_heads_gradients_of_q_k_and_v_all_land_in_the_qkv_gradient(PositiveInt b, PositiveInt t, PositiveInt h, PositiveInt hd, int seed)
    {
        var (nb, nt, nh, nd) = Dims(b, t, h, hd);
        var shape = new Shape(nb, nt, 3 * nh * nd);
        var rng = new Random(seed);
        // f(qkv) = q + 2k + 3v: each part's gradient has its own weight, so a part scattered to the wrong place shows.
        var r = GradCheck.Run(TestDevice.Get(), [(GradCheck.RandomValues(rng, shape.Numel), shape)], [true],
            v =>
            {
                var (q, k, val) = Ops.SplitHeads(v[0], nh);
                using (q) using (k) using (val)
                using (var k2 = Ops.Scale(k, 2f))
                using (var v3 = Ops.Scale(val, 3f))
                using (var qk = Ops.Add(q, k2))
                    return Ops.Add(qk, v3);
            },
            x =>
            {
                var q = HeadPermute.Reference.Select(x[0], nb, nt, nh, 0);
                var k = HeadPermute.Reference.Select(x[0], nb, nt, nh, 1);
                var v = HeadPermute.Reference.Select(x[0], nb, nt, nh, 2);
                return q.Select((qi, i) => qi + 2 * k[i] + 3 * v[i]).ToArray();
            }, seed);
        Assert.True(r.ForwardError <= CopyTolerance && r.GradientErrors[0] <= CopyTolerance, r.ToString());
    }

    [Fact]
    public void Merging_a_selected_part_gives_back_its_columns_of_qkv()
    {
        var dev = TestDevice.Get();
        const int b = 2, t = 5, heads = 3, hd = 4, c = heads * hd;
        var values = Enumerable.Range(0, b * t * 3 * c).Select(i => (float)i).ToArray();
        using var qkv = new Var(Tensor.FromHost(dev, values, new Shape(b, t, 3 * c), MemoryCategory.Data, "qkv"));
        for (int part = 0; part < 3; part++)
        {
            using var sel = Ops.SelectHeads(qkv, heads, part);
            Assert.Equal(new Shape(b, heads, t, hd), sel.Shape);
            using var merged = Ops.MergeHeads(sel);
            var got = merged.Value.ToFloatArray();
            for (int row = 0; row < b * t; row++)
                for (int col = 0; col < c; col++)
                    Assert.Equal(values[row * 3 * c + part * c + col], got[row * c + col]);
        }
    }

    [Fact]
    public void Bad_shapes_name_the_op_and_the_shape()
    {
        var dev = TestDevice.Get();
        using var qkv = new Var(Tensor.Zeros(dev, new Shape(2, 3, 10), DType.F32, MemoryCategory.Data, "qkv"));
        using var flat = new Var(Tensor.Zeros(dev, new Shape(6, 12), DType.F32, MemoryCategory.Data, "flat"));
        long live = dev.Tracker.Live;
        var e = Assert.Throws<ShapeException>(() => Ops.SplitHeads(qkv, 2));
        Assert.Contains("select_heads", e.Message);
        Assert.Contains("[2, 3, 10]", e.Message);
        e = Assert.Throws<ShapeException>(() => Ops.SelectHeads(flat, 2, 0));
        Assert.Contains("[6, 12]", e.Message);
        using var ok = new Var(Tensor.Zeros(dev, new Shape(1, 2, 12), DType.F32, MemoryCategory.Data, "ok"));
        live = dev.Tracker.Live;
        e = Assert.Throws<ShapeException>(() => Ops.SelectHeads(ok, 2, 3));
        Assert.Contains("which = 3", e.Message);
        e = Assert.Throws<ShapeException>(() => Ops.MergeHeads(ok));
        Assert.Contains("merge_heads", e.Message);
        Assert.Contains("[1, 2, 12]", e.Message);
        Assert.Equal(live, dev.Tracker.Live);
    }
}
