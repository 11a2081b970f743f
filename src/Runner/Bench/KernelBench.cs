using System.Diagnostics;
using System.Globalization;
using ILGPU.Runtime;
using Memopt.Autograd;
using Memopt.Autograd.Optim;
using Memopt.Kernels;
using Memopt.Model;
using Memopt.Runner.Commands;
using Memopt.Tensors;
using AdamWKernel = Memopt.Kernels.AdamW;
using AdamWOptimizer = Memopt.Autograd.Optim.AdamW;

namespace Memopt.Runner.Bench;

/// <summary>
/// `memopt bench kernels`: the kernels outside the GEMMs that a training step spends its time in, each against the
/// device's memory bandwidth, measured in the same run as a device-to-device copy (bytes read + bytes written over
/// the time; every case's GB/s is divided by it). Per case: the median and minimum of device-synchronized calls
/// (<see cref="BenchTimer"/>; attention: one forward and backward per sample through the tape, as in the model), the
/// bytes that must move (stated in each record's note: each input read once, each output written once, a +=
/// gradient read and written), the rate, and for attention the causal TFLOP/s.
/// Cases: attention naive vs flash, fp32 and bf16, at each --attention shape (bf16 flash on tensor cores is "flash_tc",
/// measured next to the SIMT flash kernels, "flash_simt"); LayerNorm forward and backward
/// (rows × d_model) and cross-entropy forward and backward (rows × vocabulary) at each --rows, fp32 and bf16; Adam over
/// the preset's parameter count as one tensor (with and without the bf16 shadow write) and as the optimizer runs it
/// (one launch per parameter tensor, fp32 and bf16 model).
/// </summary>
public sealed class KernelBench
{
    public static readonly string[] Families = ["attention", "layernorm", "cross_entropy", "adamw"];
    /// <summary>Preset attention shapes: tokens per case (B·T; rtx5090's batch 32 at T 256) and the sequence lengths.</summary>
    public const int AttentionTokens = 8192;
    public static readonly int[] AttentionSeqLens = [256, 1024];
    private const int IgnoreIndex = -100;

    public sealed record AttentionCase(string Label, int Batch, int Heads, int SeqLen, int HeadDim)
    {
        public int Width => Heads * HeadDim;
        /// <summary>Causal query–key pairs: B·H·T(T+1)/2.</summary>
        public double Pairs => (double)Batch * Heads * SeqLen * (SeqLen + 1) / 2;
    }

    private readonly BenchOptions _o;
    private double? _copyGbps;

    private KernelBench(BenchOptions o, ModelConfig config, IReadOnlySet<string> families, IReadOnlyList<AttentionCase> attention, IReadOnlyList<int> rows)
    {
        _o = o; Config = config; Selected = families; AttentionCases = attention; Rows = rows;
    }

    public ModelConfig Config { get; }
    public IReadOnlySet<string> Selected { get; }
    public IReadOnlyList<AttentionCase> AttentionCases { get; }
    public IReadOnlyList<int> Rows { get; }

    public static KernelBench Prepare(BenchOptions o)
    {
        var families = o.Kernels.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(f => Families.Contains(f, StringComparer.OrdinalIgnoreCase) ? f.ToLowerInvariant()
                : throw new UserError($"--kernels: '{f}' is not one of {string.Join(", ", Families)}")).ToHashSet();
        if (o.CopyMib <= 0) throw new UserError($"--copy-mib {o.CopyMib}: must be > 0");
        var rows = StepBench.ParsePositive("--rows", o.Rows);
        var config = BenchTrainArgs.Config(o);
        var attention = o.Attention.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).SelectMany(ParseAttention).ToList();
        return new KernelBench(o, config, families, attention, rows);
    }

    private static IEnumerable<AttentionCase> ParseAttention(string token)
    {
        if (ModelConfig.Presets.TryGetValue(token, out var p))
            return AttentionSeqLens.Select(t => new AttentionCase($"{token.ToLowerInvariant()}.T{t}", AttentionTokens / t, p.Heads, t, p.HeadDim));
        var dims = token.Split('x');
        if (dims.Length != 4 || !dims.All(d => int.TryParse(d, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) && v > 0))
            throw new UserError($"--attention: '{token}' is not a preset ({string.Join(", ", ModelConfig.Presets.Keys)}) or BxHxTxHD with positive sizes");
        var v = dims.Select(d => int.Parse(d, CultureInfo.InvariantCulture)).ToArray();
        if (v[3] > FlashAttention.MaxHeadDim) throw new UserError($"--attention: '{token}': head dim {v[3]} is larger than flash attention's {FlashAttention.MaxHeadDim}");
        return [new AttentionCase($"b{v[0]}h{v[1]}T{v[2]}hd{v[3]}", v[0], v[1], v[2], v[3])];
    }

    public List<BenchRecord> Run(ComputeDevice device)
    {
        Console.WriteLine($"kernels: {string.Join(", ", Selected)}; model {_o.Preset} ({Config}); GB/s of the bytes that must move, % of the copy's");
        Console.WriteLine($"{"case",-44} {"impl",-10} {"dtype",-5} {"ms",9} {"min ms",9} {"GB/s",8} {"of copy",7} {"TFLOP/s",8} {"peak",11}");
        var records = new List<BenchRecord>();
        void Add(IEnumerable<BenchRecord> made) { foreach (var r in made) { records.Add(r); Print(r); } }
        Add(Guard("copy", "device", DType.F32, () => [Copy(device)]));
        _copyGbps = records[0].Gbps;
        var dtypes = new[] { DType.F32, DType.BF16 };
        if (Selected.Contains("attention"))
            foreach (var c in AttentionCases)
                foreach (var dtype in dtypes)
                {
                    foreach (bool flash in new[] { false, true })
                        Add(Guard($"attention.{c.Label}", flash ? "flash" : "naive", dtype, () => Attention(device, c, dtype, flash)));
                    // Where bf16 flash attention runs on tensor cores ("flash_tc"), the SIMT kernels too, to compare.
                    if (dtype == DType.BF16 && FlashAttentionTensorCore.SupportsHeadDim(c.HeadDim) && TensorCoreGemm.WhyNotOn(device) is null)
                        Add(Guard($"attention.{c.Label}", "flash_simt", dtype, () =>
                        {
                            using (FlashAttentionTensorCore.Use(FlashAttentionTensorCore.Mode.Off)) return Attention(device, c, dtype, true).ToArray();
                        }));
                }
        if (Selected.Contains("layernorm"))
            foreach (int r in Rows)
                foreach (var dtype in dtypes)
                    Add(Guard($"layernorm.r{r}", "memopt", dtype, () => LayerNormCases(device, r, dtype)));
        if (Selected.Contains("cross_entropy"))
            foreach (int r in Rows)
                foreach (var dtype in dtypes)
                    Add(Guard($"cross_entropy.r{r}", "memopt", dtype, () => CrossEntropyCases(device, r, dtype)));
        if (Selected.Contains("adamw"))
            Add(Guard("adamw", "memopt", DType.F32, () => AdamWCases(device)));
        return records;
    }

    /// <summary>Runs one case; out of memory or a failure becomes a record that says so, and the run goes on.</summary>
    private BenchRecord[] Guard(string name, string impl, DType dtype, Func<IEnumerable<BenchRecord>> run)
    {
        try
        {
            return run().ToArray();
        }
        catch (OutOfDeviceMemoryException e)
        {
            return [Failed(name, impl, dtype, $"OOM: {e.Message}")];
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            return [Failed(name, impl, dtype, $"FAIL: {e.GetType().Name}: {e.Message}")];
        }
    }

    private static BenchRecord Failed(string name, string impl, DType dtype, string note) =>
        new("kernels", name, impl, Short(dtype), Short(dtype), 0, 0, 0, 0, false, false, double.NaN, double.NaN, 0, double.NaN, null, note);

    private BenchRecord Record(string name, string impl, DType dtype, int m, int n, int batch, (double Median, double Min, int Samples) t,
        double bytes, string note, double? flop = null, long? peak = null)
    {
        double gbps = bytes / (t.Median * 1e-3) / 1e9;
        return new BenchRecord("kernels", name, impl, Short(dtype), Short(dtype), m, n, 0, batch, false, false, t.Median, t.Min, t.Samples,
            flop is double f ? f / (t.Median * 1e-3) / 1e12 : double.NaN, null, note)
        {
            Bytes = bytes, Gbps = gbps, BandwidthRatio = _copyGbps is double c ? gbps / c : null, PeakBytes = peak,
        };
    }

    /// <summary>The dtype as the JSON records name it (bench_gemm.py's names).</summary>
    private static string Short(DType dtype) => dtype == DType.BF16 ? "bf16" : "f32";

    private static void Print(BenchRecord r)
    {
        if (double.IsNaN(r.Ms))
        {
            Console.WriteLine($"{r.Name,-44} {r.Impl,-10} {r.InputType,-5} {r.Note}");
            return;
        }
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{r.Name,-44} {r.Impl,-10} {r.InputType,-5} {r.Ms,9:F3} {r.MsMin,9:F3} {r.Gbps,8:F0} {r.BandwidthRatio,7:P0} {(double.IsNaN(r.Tflops) ? "" : r.Tflops.ToString("F1", CultureInfo.InvariantCulture)),8} {(r.PeakBytes is long p ? ByteSize.Format(p) : ""),11}"));
    }

    private (double, double, int) Time(ComputeDevice device, Action call)
    {
        var (median, min, samples, _) = BenchTimer.Time(device, call, _o.Repeats);
        return (median, min, samples);
    }

    /// <summary>The bandwidth reference: one device-to-device copy (cuMemcpyDtoD on CUDA), bytes read + written.</summary>
    private BenchRecord Copy(ComputeDevice device)
    {
        long bytes = (long)_o.CopyMib << 20;
        using var src = Tensor.Zeros(device, new Shape(checked((int)(bytes / 4))), DType.F32, MemoryCategory.Data, "bench.copy_src");
        using var dst = Tensor.Empty(device, new Shape(checked((int)(bytes / 4))), DType.F32, MemoryCategory.Data, "bench.copy_dst");
        var t = Time(device, () => src.Raw.CopyTo(dst.Raw));
        double gbps = 2.0 * bytes / (t.Item1 * 1e-3) / 1e9;
        return new BenchRecord("kernels", $"copy.d2d.{_o.CopyMib}MiB", "device", "f32", "f32", 0, 0, 0, 0, false, false, t.Item1, t.Item2, t.Item3,
            double.NaN, null, $"bytes = 2 × {_o.CopyMib} MiB (read + write): the memory bandwidth reference")
        { Bytes = 2.0 * bytes, Gbps = gbps, BandwidthRatio = 1 };
    }

    private static float[] RandomValues(long n, int seed, float scale)
    {
        var rng = new Random(seed);
        var v = new float[n];
        for (long i = 0; i < n; i++) v[i] = (rng.NextSingle() * 2 - 1) * scale;
        return v;
    }

    /// <summary>
    /// Attention forward and backward through the tape, as the model runs it: naive (split heads, S = Q·Kᵀ, causal
    /// softmax, P·V, merge heads) or flash (qkv → y directly). FLOPs count the causal pairs once: forward 4·hd per pair
    /// (QKᵀ and PV), backward 8·hd (dP, dV, dQ, dK; flash's recompute of S not counted), so naive and flash compare.
    /// </summary>
    private IEnumerable<BenchRecord> Attention(ComputeDevice device, AttentionCase c, DType dtype, bool flash)
    {
        int b = c.Batch, t = c.SeqLen, w = c.Width;
        var qkvShape = new Shape(b, t, 3 * w);
        var yShape = new Shape(b, t, w);
        using var qkvT = Tensor.FromHost(device, RandomValues(qkvShape.Numel, _o.Seed, 1f), qkvShape, MemoryCategory.Data, "bench.qkv", dtype);
        using var dy = Tensor.FromHost(device, RandomValues(yShape.Numel, _o.Seed + 1, 1f), yShape, MemoryCategory.Data, "bench.dy", dtype);
        var forwardMs = new List<double>();
        var backwardMs = new List<double>();
        long peak = 0;
        for (int rep = -1; rep < _o.Repeats; rep++) // rep −1: warm-up (kernel compilation)
        {
            using var qkv = new Var(qkvT.Share(), requiresGrad: true);
            device.Synchronize();
            long before = device.Tracker.Live;
            device.Tracker.ResetPeaks();
            var clock = Stopwatch.StartNew();
            using (var tape = new Tape())
            {
                Var y;
                if (flash) y = Ops.FlashAttention(qkv, c.Heads, null);
                else
                    using (var perHead = NaiveAttention.Forward(qkv, c.Heads, null, 0f, ForwardContext.Evaluation, 0))
                        y = Ops.MergeHeads(perHead);
                device.Synchronize();
                double f = clock.Elapsed.TotalMilliseconds;
                clock.Restart();
                using (y) tape.Backward(y, dy);
                device.Synchronize();
                if (rep >= 0) { forwardMs.Add(f); backwardMs.Add(clock.Elapsed.TotalMilliseconds); }
            }
            peak = Math.Max(peak, device.Tracker.Peak - before);
            qkv.Grad?.Dispose();
        }
        int s = dtype.SizeOf();
        double io = (double)b * t * w * s, stats = 4.0 * b * c.Heads * t;
        string shape = $"B {b}, H {c.Heads}, T {t}, hd {c.HeadDim}";
        string impl = !flash ? "naive" : FlashAttentionTensorCore.PathFor(qkvT, c.Heads) switch
        {
            "tensor cores" => "flash_tc",
            _ when dtype == DType.BF16 && FlashAttentionTensorCore.SupportsHeadDim(c.HeadDim) && TensorCoreGemm.WhyNotOn(device) is null => "flash_simt",
            _ => "flash",
        };
        yield return Record($"attention.{c.Label}.forward", impl, dtype, t, c.HeadDim, b, Stats(forwardMs),
            io * 4 + stats, $"{shape}; bytes: qkv read, y written (+ fp32 row statistics); FLOPs: 4·hd per causal pair",
            4.0 * c.HeadDim * c.Pairs, peak);
        yield return Record($"attention.{c.Label}.backward", impl, dtype, t, c.HeadDim, b, Stats(backwardMs),
            io * 8 + 2 * stats, $"{shape}; bytes: qkv, y, dy read, d(qkv) written (+ fp32 row statistics); FLOPs: 8·hd per causal pair (no recompute); peak tracked over forward and backward",
            8.0 * c.HeadDim * c.Pairs, peak);
    }

    private static (double, double, int) Stats(List<double> ms)
    {
        var sorted = ms.OrderBy(x => x).ToArray();
        return (sorted[sorted.Length / 2], sorted[0], sorted.Length);
    }

    /// <summary>LayerNorm over rows × d_model with float32 weight and bias (as in the model under either precision).</summary>
    private IEnumerable<BenchRecord> LayerNormCases(ComputeDevice device, int rows, DType dtype)
    {
        int c = Config.DModel;
        var shape = new Shape(rows, c);
        using var x = Tensor.FromHost(device, RandomValues(shape.Numel, _o.Seed, 2f), shape, MemoryCategory.Data, "bench.x", dtype);
        using var weight = Tensor.FromHost(device, RandomValues(c, _o.Seed + 1, 1f), new Shape(c), MemoryCategory.Data, "bench.w");
        using var bias = Tensor.FromHost(device, RandomValues(c, _o.Seed + 2, 1f), new Shape(c), MemoryCategory.Data, "bench.b");
        using var y = Tensor.Empty(device, shape, dtype, MemoryCategory.Data, "bench.y");
        using var mean = Tensor.Empty(device, LayerNorm.StatsShape(shape), DType.F32, MemoryCategory.Data, "bench.mean");
        using var rstd = Tensor.Empty(device, LayerNorm.StatsShape(shape), DType.F32, MemoryCategory.Data, "bench.rstd");
        var forward = Time(device, () => LayerNorm.Forward(x, weight, bias, y, mean, rstd));
        using var dy = Tensor.FromHost(device, RandomValues(shape.Numel, _o.Seed + 3, 1f), shape, MemoryCategory.Data, "bench.dy", dtype);
        using var dx = Tensor.Zeros(device, shape, dtype, MemoryCategory.Data, "bench.dx");
        using var dw = Tensor.Zeros(device, new Shape(c), DType.F32, MemoryCategory.Data, "bench.dw");
        using var db = Tensor.Zeros(device, new Shape(c), DType.F32, MemoryCategory.Data, "bench.db");
        var backward = Time(device, () => LayerNorm.Backward(x, weight, mean, rstd, dy, dx, dw, db));
        double tile = (double)rows * c * dtype.SizeOf();
        yield return Record($"layernorm.r{rows}.forward", "memopt", dtype, rows, c, 1, forward, 2 * tile + 8.0 * rows + 8.0 * c,
            $"{rows} × {c}; bytes: x read, y written, mean and rstd written (fp32), weight and bias read (fp32)");
        yield return Record($"layernorm.r{rows}.backward", "memopt", dtype, rows, c, 1, backward, 4 * tile + 8.0 * rows + 20.0 * c,
            $"{rows} × {c}; bytes: x and dy read, dx read and written (+=), mean and rstd read, weight read, dweight and dbias read and written");
    }

    /// <summary>
    /// Cross-entropy at the LM head: rows × vocabulary logits, mean over the rows. The logits are zeros (the kernels do
    /// the same work for any values, and a host fill of 1.6 G random values per case would dominate the run).
    /// </summary>
    private IEnumerable<BenchRecord> CrossEntropyCases(ComputeDevice device, int rows, DType dtype)
    {
        int vocab = Config.VocabSize;
        var shape = new Shape(rows, vocab);
        var rng = new Random(_o.Seed);
        using var logits = Tensor.Zeros(device, shape, dtype, MemoryCategory.Data, "bench.logits");
        using var targets = Tensor.FromHost(device, Enumerable.Range(0, rows).Select(_ => rng.Next(vocab)).ToArray(), new Shape(rows), MemoryCategory.Data, "bench.targets");
        using var rowLse = Tensor.Empty(device, new Shape(rows), DType.F32, MemoryCategory.Data, "bench.lse");
        using var loss = Tensor.Empty(device, new Shape(1), DType.F32, MemoryCategory.Data, "bench.loss");
        int count = 0;
        var forward = Time(device, () => count = CrossEntropy.Forward(logits, targets, IgnoreIndex, 0f, rowLse, loss));
        using var dloss = Tensor.FromHost(device, [1f], new Shape(1), MemoryCategory.Data, "bench.dloss");
        using var dlogits = Tensor.Zeros(device, shape, dtype, MemoryCategory.Data, "bench.dlogits");
        var backward = Time(device, () => CrossEntropy.Backward(logits, targets, rowLse, dloss, count, IgnoreIndex, 0f, dlogits));
        double tile = (double)rows * vocab * dtype.SizeOf();
        yield return Record($"cross_entropy.r{rows}.forward", "memopt", dtype, rows, vocab, 1, forward, tile + 12.0 * rows,
            $"{rows} × {vocab}; bytes: logits read, targets read, row log-sum-exp and loss written; includes the status read-back (one synchronization)");
        yield return Record($"cross_entropy.r{rows}.backward", "memopt", dtype, rows, vocab, 1, backward, 3 * tile + 8.0 * rows,
            $"{rows} × {vocab}; bytes: logits read, dlogits read and written (+=), targets and row log-sum-exp read");
    }

    /// <summary>Adam (torch.optim.Adam's defaults, no weight decay) over the preset's parameters.</summary>
    private IEnumerable<BenchRecord> AdamWCases(ComputeDevice device)
    {
        int n = checked((int)Config.ParameterCount());
        var coefficients = AdamWKernel.Coefficients.For(1, 1e-3f, 0.9f, 0.999f, 1e-8f, 0f, decoupled: false);
        var records = new List<BenchRecord>();
        using (var p = Tensor.Zeros(device, new Shape(n), DType.F32, MemoryCategory.Data, "bench.p"))
        using (var g = Tensor.Zeros(device, new Shape(n), DType.F32, MemoryCategory.Data, "bench.g"))
        using (var m = Tensor.Zeros(device, new Shape(n), DType.F32, MemoryCategory.Data, "bench.m"))
        using (var v = Tensor.Zeros(device, new Shape(n), DType.F32, MemoryCategory.Data, "bench.v"))
        {
            var flat = Time(device, () => AdamWKernel.Update(p, g, m, v, coefficients));
            records.Add(Record($"adamw.flat.p{n}", "memopt", DType.F32, 0, 0, 1, flat, 28.0 * n,
                $"{n} parameters ({_o.Preset}) as one tensor, one launch; bytes: 28 per parameter (p, grad, m, v read; p, m, v written)"));
            using var shadow = Tensor.Empty(device, new Shape(n), DType.BF16, MemoryCategory.Data, "bench.p_bf16");
            var withShadow = Time(device, () => AdamWKernel.Update(p, g, m, v, coefficients, shadow));
            records.Add(Record($"adamw.flat_bf16_shadow.p{n}", "memopt", DType.F32, 0, 0, 1, withShadow, 30.0 * n,
                $"{n} parameters as one tensor, with the bf16 shadow write of mixed precision; bytes: 30 per parameter"));
        }
        foreach (var precision in new[] { Precision.Fp32, Precision.Bf16 })
        {
            using var model = new TransformerLM(device, Config, 1, precision);
            using var optimizer = new AdamWOptimizer(model.Parameters, AdamWOptions.Adam());
            var step = Time(device, () => optimizer.Step(1e-3f));
            long shadows = model.Parameters.Sum(q => q.Bf16Copy?.Numel ?? 0);
            string label = precision == Precision.Bf16 ? "bf16" : "fp32";
            records.Add(Record($"adamw.optimizer_{label}.p{model.ParameterCount}", "memopt", DType.F32, 0, 0, model.Parameters.Count, step,
                28.0 * model.ParameterCount + 2.0 * shadows,
                $"AdamW.Step over the {label} model's {model.Parameters.Count} parameter tensors (one launch each, as in training); bytes: 28 per parameter + 2 per bf16 shadow element"));
        }
        return records;
    }
}
