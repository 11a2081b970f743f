using System.Diagnostics;
using Memopt.Autograd;
using Memopt.Kernels;
using Memopt.Model;
using Memopt.Tensors;
using Memopt.Tests.Harness;

namespace Memopt.Tests.Kernels;

/// <summary>
/// GPU timings of flash against naive attention, skipped unless MEMOPT_FLASH_BENCH names an output file (run on the GPU
/// host with MEMOPT_TEST_DEVICE=cuda, e.g. `MEMOPT_FLASH_BENCH=$OUT/bench.txt dotnet Memopt.Tests.dll -class
/// Memopt.Tests.Kernels.FlashAttentionBenchmarks`). Device-synchronized medians (attention: 10 repeats after 2
/// warm-ups; model: 5 after 1).
/// Attention alone (B = 8, H = 8, T 256/1024, hd 32/64, with and without a window of T/4, fp32 and bf16 qkv, through
/// the tape) and the kernels alone; then whole-model forward + backward of the rtx5090 and medium presets.
/// Until `memopt bench` exists (issue 9) this is where the numbers in the flash attention report come from.
/// </summary>
public class FlashAttentionBenchmarks
{
    public static bool Enabled => Environment.GetEnvironmentVariable("MEMOPT_FLASH_BENCH") is not null;

    private static double Median(List<double> v) { v.Sort(); return v[v.Count / 2]; }

    [Fact(Skip = "set MEMOPT_FLASH_BENCH=<output file> to run", SkipUnless = nameof(Enabled))]
    public void Attention()
    {
        var outPath = Environment.GetEnvironmentVariable("MEMOPT_FLASH_BENCH")!;
        var dev = TestDevice.Get();
        var log = new List<string> { $"device {dev.Name} cuda={dev.IsCuda} sms={dev.Multiprocessors}" };
        void Log(string s) { log.Add(s); File.WriteAllLines(outPath, log); }
        foreach (int t in new[] { 256, 1024 })
        foreach (int hd in new[] { 32, 64 })
        foreach (int? window in new int?[] { null, t / 4 })
        {
            const int b = 8, heads = 8;
            var shape = new Shape(b, t, 3 * heads * hd);
            var x = GradCheck.RandomValues(new Random(1), shape.Numel, 2);
            var dyv = GradCheck.RandomValues(new Random(2), b * t * heads * hd);
            foreach (var mode in new[] { "naive", "flash", "flash-bf16" })
            {
                var dtype = mode == "flash-bf16" ? DType.BF16 : DType.F32;
                using var qkvT = Tensor.FromHost(dev, x, shape, MemoryCategory.Data, "qkv", dtype);
                using var seed = Tensor.FromHost(dev, dyv, new Shape(b, t, heads * hd), MemoryCategory.Data, "dy");
                var fwd = new List<double>(); var both = new List<double>();
                for (int rep = 0; rep < 12; rep++)
                {
                    using var qkv = new Var(qkvT.Share(), requiresGrad: true);
                    dev.Synchronize();
                    var sw = Stopwatch.StartNew();
                    using (var tape = new Tape())
                    {
                        Var y;
                        if (mode == "naive")
                            using (var per = NaiveAttention.Forward(qkv, heads, window, 0f, ForwardContext.Evaluation, 0)) y = Ops.MergeHeads(per);
                        else y = Ops.FlashAttention(qkv, heads, window);
                        dev.Synchronize();
                        double f = sw.Elapsed.TotalMilliseconds;
                        using (y) tape.Backward(y, seed);
                        dev.Synchronize();
                        if (rep >= 2) { fwd.Add(f); both.Add(sw.Elapsed.TotalMilliseconds); }
                    }
                    qkv.Grad?.Dispose();
                }
                Log($"B={b} H={heads} T={t} hd={hd} W={window?.ToString() ?? "-"} {mode,-10}: forward {Median(fwd),8:F3} ms, forward+backward {Median(both),8:F3} ms");
            }
        }
        // Kernel-only timings (no autograd): flash fp32 forward and backward.
        foreach (int t in new[] { 256, 1024 })
        foreach (int hd in new[] { 32, 64 })
        {
            const int b = 8, heads = 8;
            var shape = new Shape(b, t, 3 * heads * hd);
            using var qkv = Tensor.FromHost(dev, GradCheck.RandomValues(new Random(1), shape.Numel, 2), shape, MemoryCategory.Data, "qkv");
            using var y = Tensor.Empty(dev, new Shape(b, t, heads * hd), DType.F32, MemoryCategory.Data, "y");
            using var lse = Tensor.Empty(dev, new Shape(b, heads, t), DType.F32, MemoryCategory.Data, "lse");
            using var dy = Tensor.FromHost(dev, GradCheck.RandomValues(new Random(2), y.Numel), y.Shape, MemoryCategory.Data, "dy");
            using var dq = Tensor.Zeros(dev, shape, DType.F32, MemoryCategory.Data, "dqkv");
            var f = new List<double>(); var g = new List<double>();
            for (int rep = 0; rep < 12; rep++)
            {
                dev.Synchronize(); var sw = Stopwatch.StartNew();
                FlashAttention.Forward(qkv, heads, null, y, lse); dev.Synchronize();
                double a = sw.Elapsed.TotalMilliseconds; sw.Restart();
                FlashAttention.Backward(qkv, y, lse, dy, heads, null, dq); dev.Synchronize();
                if (rep >= 2) { f.Add(a); g.Add(sw.Elapsed.TotalMilliseconds); }
            }
            double flops = 4.0 * b * heads * t * (t + 1) / 2.0 * hd;
            Log($"kernel-only T={t} hd={hd}: fwd {Median(f):F3} ms ({flops / Median(f) / 1e9:F2} TFLOP/s causal), bwd {Median(g):F3} ms ({2.5 * flops / Median(g) / 1e9:F2} TFLOP/s)");
        }
    }

    [Fact(Skip = "set MEMOPT_FLASH_BENCH=<output file> to run", SkipUnless = nameof(Enabled))]
    public void Model_step()
    {
        var outPath = Environment.GetEnvironmentVariable("MEMOPT_FLASH_BENCH")! + ".model.txt";
        var dev = TestDevice.Get();
        var tracker = dev.Tracker;
        var log = new List<string>();
        void Log(string s) { log.Add(s); File.WriteAllLines(outPath, log); }
        foreach (var (preset, batch, windows) in new (string, int, int?[])[] { ("rtx5090", 32, [null, 64, 128]), ("medium", 8, [null, 256]) })
        {
            var config = ModelConfig.Preset(preset);
            using var model = new TransformerLM(dev, config, seed: 1);
            int t = config.SeqLen;
            var rng = new Random(3);
            using var ids = Tensor.FromHost(dev, Enumerable.Range(0, batch * t).Select(_ => rng.Next(config.VocabSize)).ToArray(), new Shape(batch, t), MemoryCategory.Data, "ids");
            using var targets = Tensor.FromHost(dev, Enumerable.Range(0, batch * t).Select(_ => rng.Next(config.VocabSize)).ToArray(), new Shape(batch, t), MemoryCategory.Data, "targets");
            foreach (var window in windows)
            foreach (var flash in new[] { false, true })
            {
                var times = new List<double>();
                long peak = 0, scores = 0;
                float lossValue = 0;
                for (int rep = 0; rep < 6; rep++)
                {
                    dev.Synchronize();
                    tracker.ResetPeaks();
                    var sw = Stopwatch.StartNew();
                    using (var tape = new Tape())
                    {
                        using var loss = model.Loss(ids, targets, new AttentionSettings(window, flash), new ForwardContext(true, 1, rep));
                        tape.Backward(loss);
                        lossValue = loss.Value.ToFloatArray()[0];
                    }
                    dev.Synchronize();
                    if (rep >= 1) times.Add(sw.Elapsed.TotalMilliseconds);
                    peak = tracker.Peak;
                    scores = tracker.AtPeak().ByCategory[MemoryCategory.AttentionScores];
                    foreach (var p in model.Parameters) p.ZeroGrad();
                }
                Log($"{preset} B={batch} W={window?.ToString() ?? "-"} {(flash ? "flash" : "naive")}: fwd+bwd median {Median(times):F1} ms, tracked peak {peak / 1048576.0:F1} MiB (attention scores at peak {scores / 1048576.0:F1} MiB), loss {lossValue:F4}");
            }
        }
    }
}
