using FsCheck;
using FsCheck.Xunit;
using Memopt.Autograd;
using Memopt.Kernels;
using Memopt.Tensors;
using Memopt.Tests.Harness;

namespace Memopt.Tests.Kernels;

public class EmbeddingTests
{
    // Forward is a copy (exact). The table gradient sums dy over repeated ids: at most B·T ≤ 35 float32 additions of
    // values in [-1, 1], error ≤ ~35·6e-8 ≈ 2e-6 relative to the sum in the worst case; finite differences of a
    // linear map add ~1e-10. 1e-5 covers that with margin, while a missed or misplaced row is an O(1) error.
    private const double Tolerance = 1e-5;

    [Property(MaxTest = 30)]
    public void Embedding_matches_reference_and_finite_differences(PositiveInt b, PositiveInt t, PositiveInt vocab, PositiveInt cols, int seed)
    {
        int nb = b.Get % 5 + 1, nt = t.Get % 7 + 1, v = vocab.Get % 11 + 1, c = cols.Get % 9 + 1;
        var rng = new Random(seed);
        // Few ids from a small vocabulary: repeats are the common case, as in real text.
        var ids = Enumerable.Range(0, nb * nt).Select(_ => rng.Next(v)).ToArray();
        var dev = TestDevice.Get();
        var idShape = new Shape(nb, nt);
        var r = GradCheck.Run(dev,
            [(ids.Select(i => (float)i).ToArray(), idShape), (GradCheck.RandomValues(rng, (long)v * c), new Shape(v, c))], [false, true],
            vars =>
            {
                // GradCheck uploads every input as float32; the op wants the ids as int32.
                using var idVar = new Var(Tensor.FromHost(dev, ids, idShape, MemoryCategory.Data, "ids"));
                return Ops.Embedding(idVar, vars[1], checkIds: true);
            },
            x => Embedding.Reference.Forward(x[0].Select(i => (int)i).ToArray(), x[1], c), seed);
        Assert.True(r.ForwardError <= Tolerance && r.GradientErrors[1] <= Tolerance, $"B={nb} T={nt} V={v} C={c}: {r}");
    }

    [Fact]
    public void Repeated_ids_accumulate_their_gradients()
    {
        var dev = TestDevice.Get();
        const int n = 37, c = 3, vocab = 4;
        using var ids = new Var(Tensor.FromHost(dev, Enumerable.Repeat(2, n).ToArray(), new Shape(n), MemoryCategory.Data, "ids"));
        using var table = new Var(Tensor.FromHost(dev, GradCheck.RandomValues(new Random(1), vocab * c), new Shape(vocab, c), MemoryCategory.Data, "table"), requiresGrad: true);
        using var tape = new Tape();
        using var y = Ops.Embedding(ids, table);
        Assert.Equal(new Shape(n, c), y.Shape);
        using var seed = Tensor.FromHost(dev, Enumerable.Repeat(0.5f, n * c).ToArray(), y.Shape, MemoryCategory.Data, "seed");
        tape.Backward(y, seed);
        var g = table.Grad!.ToFloatArray();
        for (int row = 0; row < vocab; row++)
            for (int col = 0; col < c; col++)
                Assert.Equal(row == 2 ? 0.5f * n : 0f, g[row * c + col]);
        table.Grad.Dispose();
    }

    [Fact]
    public void Out_of_range_ids_are_reported_by_the_check_and_read_zeros_without_it()
    {
        var dev = TestDevice.Get();
        using var ids = new Var(Tensor.FromHost(dev, [0, 5, 1, -1], new Shape(2, 2), MemoryCategory.Data, "ids"));
        using var table = new Var(Tensor.FromHost(dev, [1f, 2f, 3f, 4f], new Shape(2, 2), MemoryCategory.Data, "table"));
        var e = Assert.Throws<ShapeException>(() => Ops.Embedding(ids, table, checkIds: true));
        Assert.Contains("embedding", e.Message);
        Assert.Contains("id 5", e.Message);
        Assert.Contains("0..1", e.Message);
        using var y = Ops.Embedding(ids, table);
        Assert.Equal([1f, 2f, 0f, 0f, 3f, 4f, 0f, 0f], y.Value.ToFloatArray());
    }

    /// <summary>
    /// The four-per-access lookup (C a multiple of 4, both tensors quad-aligned) gives the scalar kernel's values bit for
    /// bit in every dtype pairing the model uses, out-of-range ids included; the output one element off alignment takes
    /// the scalar kernel.
    /// </summary>
    [Theory]
    [InlineData("f32", "bf16", "embedding.fwd_f32_to_bf16x4")]
    [InlineData("f32", "f32", "embedding.fwd_f32x4")]
    [InlineData("bf16", "bf16", "embedding.fwd_bf16x4")]
    public void Quad_lookup_matches_the_scalar_one_bit_for_bit(string tableType, string outputType, string kernel)
    {
        DType Of(string name) => name == "bf16" ? DType.BF16 : DType.F32;
        var dev = TestDevice.Get();
        const int vocab = 7, cols = 12, n = 9;
        var rng = new Random(5);
        int[] idValues = [.. Enumerable.Range(0, n).Select(i => i == 4 ? vocab + 3 : i == 6 ? -2 : rng.Next(vocab))];
        using var ids = Tensor.FromHost(dev, idValues, new Shape(n), MemoryCategory.Data, "ids");
        using var table = Tensor.FromHost(dev, GradCheck.RandomValues(rng, vocab * cols, 3), new Shape(vocab, cols), MemoryCategory.Data, "table", Of(tableType));
        float[] Run(int offset, int expectedQuadLaunches)
        {
            using var y = OffsetTensor.FromHost(dev, new float[n * cols], new Shape(n, cols), offset, Of(outputType), "y");
            using var launches = new LaunchCounter(dev);
            Embedding.Forward(ids, table, y);
            Assert.Equal(expectedQuadLaunches, launches[kernel]);
            return y.ToFloatArray();
        }
        Assert.Equal(Run(1, 0), Run(0, 1));
    }

    [Fact]
    public void Bad_dtypes_and_shapes_name_the_op_and_the_shapes()
    {
        var dev = TestDevice.Get();
        using var floatIds = new Var(Tensor.Zeros(dev, new Shape(2, 3), DType.F32, MemoryCategory.Data, "ids"));
        using var ids = new Var(Tensor.Zeros(dev, new Shape(2, 3), DType.I32, MemoryCategory.Data, "ids"));
        using var table = new Var(Tensor.Zeros(dev, new Shape(4, 8), DType.F32, MemoryCategory.Data, "table"));
        using var flatTable = new Var(Tensor.Zeros(dev, new Shape(32), DType.F32, MemoryCategory.Data, "flat"));
        long live = dev.Tracker.Live;
        var e = Assert.Throws<ShapeException>(() => Ops.Embedding(floatIds, table));
        Assert.Contains("embedding", e.Message);
        Assert.Contains("ids [2, 3] is float32", e.Message);
        e = Assert.Throws<ShapeException>(() => Ops.Embedding(ids, flatTable));
        Assert.Contains("table [32]", e.Message);
        Assert.Contains("ids [2, 3]", e.Message);
        Assert.Equal(live, dev.Tracker.Live);
    }
}
