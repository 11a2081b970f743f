using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using CommandLine;
using ILGPU;
using ILGPU.Runtime;
using Memopt.Kernels;
using Memopt.Tensors;

namespace Memopt.Runner.Commands;

[Verb("bench", HelpText = "Benchmarks, device-synchronized, warm-up, median of repeats. Suites: gemm, step, kernels.")]
public sealed class BenchOptions : DeviceOptions
{
    [Value(0, MetaName = "suite", Required = true, HelpText = "What to benchmark: gemm (GEMM kernels), step (a training step per technique), kernels (attention, LayerNorm, cross-entropy, AdamW against a device copy).")]
    public string Suite { get; set; } = "";

    [Option("sizes", Default = "square,model", HelpText = "gemm: comma list of 'square' (4096³ in the four transpose combinations), " +
        "'model' (the rtx5090 Linear layers' forward, grad-input and grad-weight GEMMs at --rows), 'attention' (the rtx5090 " +
        "attention's batched T×T×hd products, batch B·H at --rows) or MxNxK[:nn|nt|tn|tt][@batch].")]
    public string Sizes { get; set; } = "square,model";

    [Option("rows", Default = "8192,16384,32768", HelpText = "gemm, kernels: the B·T row counts of the 'model' GEMM shapes and of the LayerNorm and cross-entropy cases (rtx5090, T 256: batch 32, 64, 128).")]
    public string Rows { get; set; } = "8192,16384,32768";

    [Option("repeats", Default = 15, HelpText = "Timed samples per case (the median is reported); step: timed training steps per configuration.")]
    public int Repeats { get; set; } = 15;

    [Option("simt-max-gflop", Default = 1000.0, HelpText = "gemm: time the fp32 SIMT GEMM only up to this many GFLOP per call (the default takes every square and model case).")]
    public double SimtMaxGflop { get; set; } = 1000;

    [Option("simt-tiles", Default = "auto", HelpText = "gemm: SIMT GEMM tiles to time, comma list of auto, t128x128, t128x64, t256x32.")]
    public string SimtTiles { get; set; } = "auto";

    [Option("simt-splits", Default = 0, HelpText = "gemm: force this many K splits on the SIMT GEMM (0: its own choice).")]
    public int SimtSplits { get; set; }

    [Option("c-dtype", Default = "f32", HelpText = "gemm: dtype of the tensor-core GEMM's output, f32 or bf16.")]
    public string CDType { get; set; } = "f32";

    [Option("fp32-matmul", Default = "ieee", HelpText = "gemm: how the fp32 GEMMs run: ieee (the SIMT kernels), tf32 or 3xtf32 (the tensor-core kernel on fp32 operands).")]
    public string Fp32Matmul { get; set; } = "ieee";

    [Option("tc-stores", Default = "auto", HelpText = "gemm: the 64-deep tensor-core tile's output stores: auto (staged through shared memory into 16-byte stores wherever C is aligned and not accumulated) or direct (straight from the accumulator registers).")]
    public string TcStores { get; set; } = "auto";

    [Option("seed", Default = 1, HelpText = "Seed of the random inputs.")]
    public int Seed { get; set; } = 1;

    [Option("tc-mma", Default = "auto", HelpText = "gemm, step, kernels: the 64-deep bf16 tile's tensor-core instruction: auto (wgmma where it runs, compute capability 9.0, for GEMMs whose groups walk K >= 512; mma.sync otherwise), mma (mma.sync everywhere) or wgmma (wherever it runs, any K).")]
    public string TcMma { get; set; } = "auto";

    [Option("tiles", Default = "auto", HelpText = "gemm: tensor-core tiles to time, comma list of auto, narrow, wide, narrowdeep, widedeep, narrowk64.")]
    public string Tiles { get; set; } = "auto";

    [Option("ptx", HelpText = "gemm: also write the tensor-core kernel's PTX to PREFIX.TILE.ptx for each tile of --tiles, and the SIMT kernel's (fp32, nn) to PREFIX.simt.TILE.ptx (for ptxas -v / cuobjdump).")]
    public string? Ptx { get; set; }

    [Option("preset", Default = "rtx5090", HelpText = "step, kernels: the model preset (kernels: its d_model, vocabulary and parameters size the LayerNorm, cross-entropy and AdamW cases).")]
    public string Preset { get; set; } = "rtx5090";

    [Option("batch-sizes", Default = "32,64,128", HelpText = "step: batch sizes.")]
    public string BatchSizes { get; set; } = "32,64,128";

    [Option("techniques", HelpText = "step: comma list of techniques (default: baseline, bf16, bf16_flash, bf16_flash_window at T/4, checkpointing, combined; also window, or a label such as bf16_flash_window64).")]
    public string? Techniques { get; set; }

    [Option("warmup", Default = 3, HelpText = "step: untimed steps before the timed ones (kernel compilation, pool warm-up).")]
    public int Warmup { get; set; } = 3;

    [Option("profile", HelpText = "step: after the timed steps, one more step with every kernel launch synchronized and timed: per-kernel time by phase.")]
    public bool Profile { get; set; }

    [Option("top", Default = 25, HelpText = "step --profile: kernels listed per profile.")]
    public int Top { get; set; } = 25;

    [Option("random-tokens", HelpText = "step: train on uniformly random tokens over the model's vocabulary (as benchmarks/pytorch) instead of the corpus `memopt train` uses.")]
    public bool RandomTokens { get; set; }

    [Option("train-args", HelpText = "step, kernels: other train options in one quoted string (model overrides, --data, --cache-dir, --lr, ...), e.g. --train-args=\"--layers 2 --seq-len 128\".")]
    public string? TrainArgs { get; set; }

    [Option("kernels", Default = "attention,layernorm,cross_entropy,adamw", HelpText = "kernels: which families to time (a device-to-device copy is always timed first as the bandwidth reference).")]
    public string Kernels { get; set; } = "attention,layernorm,cross_entropy,adamw";

    [Option("attention", Default = "rtx5090,medium", HelpText = "kernels: attention shapes, comma list of presets (their heads and head dim at T 256 and 1024, B·T = 8192) or BxHxTxHD.")]
    public string Attention { get; set; } = "rtx5090,medium";

    [Option("copy-mib", Default = 1024, HelpText = "kernels: size of the device-to-device copy that measures the memory bandwidth, MiB.")]
    public int CopyMib { get; set; } = 1024;

    [Option("out", HelpText = "Write the results as JSON to this file.")]
    public string? Out { get; set; }
}

/// <summary>
/// One timed implementation of one case; the JSON record shared with benchmarks/pytorch (bench_gemm.py, bench_step.py).
/// gemm fills M, N, K and the transposes; step and kernels leave what does not apply at 0 / null and say the shape in
/// the name. A Note starting with "FAIL" makes the command exit 1.
/// </summary>
public sealed record BenchRecord(
    string Suite, string Name, string Impl, string InputType, string OutputType,
    int M, int N, int K, int Batch, bool TransA, bool TransB,
    double Ms, double MsMin, int Samples, double Tflops, double? MaxError, string? Note,
    string? Variant = null, double? HostUs = null)
{
    /// <summary>step: the technique's label (Techniques), the preset and the sequence length.</summary>
    public string? Technique { get; init; }
    public string? Preset { get; init; }
    public int? SeqLen { get; init; }
    /// <summary>step: batch × sequence length / median step time.</summary>
    public double? TokensPerS { get; init; }
    /// <summary>step: peak tracked bytes (memopt) or torch.cuda.max_memory_allocated; kernels: peak tracked bytes of the case's calls.</summary>
    public long? PeakBytes { get; init; }
    /// <summary>step: peak bytes the caching pool held (memopt) or torch.cuda.max_memory_reserved.</summary>
    public long? PeakReservedBytes { get; init; }
    /// <summary>step --profile: per-kernel times of one step.</summary>
    public Bench.StepProfile? Profile { get; init; }
    /// <summary>kernels: bytes that must move per call (stated per case in the note), the rate at the median time, and its ratio to the device-to-device copy's.</summary>
    public double? Bytes { get; init; }
    public double? Gbps { get; init; }
    public double? BandwidthRatio { get; init; }
}

/// <summary>
/// `memopt bench SUITE`: each suite checks the options (before the device opens, so bad input costs no device start)
/// and returns what turns a device into records; this class opens the device, runs it and writes the JSON.
/// </summary>
public static class BenchCommand
{
    private static readonly Dictionary<string, Func<BenchOptions, Func<ComputeDevice, List<BenchRecord>>>> Suites = new()
    {
        ["gemm"] = o => { GemmBench.Check(o); return device => GemmBench.Run(device, o); },
        ["step"] = o => Bench.StepBench.Prepare(o).Run,
        ["kernels"] = o => Bench.KernelBench.Prepare(o).Run,
    };

    public static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public static int Run(BenchOptions options)
    {
        if (!Suites.TryGetValue(options.Suite.ToLowerInvariant(), out var suite))
            throw new UserError($"bench '{options.Suite}': expected one of {string.Join(", ", Suites.Keys)}");
        if (options.Repeats <= 0) throw new UserError($"--repeats {options.Repeats}: must be > 0");
        var run = suite(options);
        var mmaKind = GemmBench.MmaOf(options);
        using var device = options.OpenDevice(profiling: options.Profile);
        var info = device.Info();
        Console.WriteLine($"memopt bench {options.Suite} on {info.Kind}: {info.Name} ({info.Multiprocessors} SMs), median of {options.Repeats} samples");
        using var mma = TensorCoreGemm.UseMma(mmaKind);
        var records = run(device);
        if (options.Out is not null)
        {
            var doc = new
            {
                tool = "memopt",
                suite = options.Suite,
                device = info.Name,
                compute_capability = info.ComputeCapability,
                ilgpu = info.IlgpuVersion,
                utc = DateTime.UtcNow.ToString("o", CultureInfo.InvariantCulture),
                results = records,
            };
            string? dir = Path.GetDirectoryName(Path.GetFullPath(options.Out));
            if (dir is not null) Directory.CreateDirectory(dir);
            File.WriteAllText(options.Out, JsonSerializer.Serialize(doc, Json));
            Console.WriteLine($"wrote {records.Count} records to {options.Out}");
        }
        return records.Any(r => r.Note is not null && r.Note.StartsWith("FAIL", StringComparison.Ordinal)) ? 1 : 0;
    }
}

/// <summary>Device-synchronized timing: a warm-up call, then samples of back-to-back calls, median and minimum per call.</summary>
public static class BenchTimer
{
    /// <param name="minSampleMs">Each sample runs enough back-to-back calls to last about this long (launch gaps amortized).</param>
    /// <returns>Median and minimum ms per call, the samples taken, and the host's µs per call spent issuing (launch overhead).</returns>
    public static (double Median, double Min, int Samples, double HostUs) Time(ComputeDevice device, Action run, int samples, double minSampleMs = 2)
    {
        run();
        device.Synchronize();
        var sw = Stopwatch.StartNew();
        run();
        device.Synchronize();
        double once = sw.Elapsed.TotalMilliseconds;
        int inner = Math.Max(1, (int)Math.Ceiling(minSampleMs / Math.Max(once, 1e-3)));
        if (once > 100) samples = Math.Min(samples, 5); // a slow baseline: five samples are enough for its median
        var times = new double[samples];
        var issue = new double[samples];
        for (int s = 0; s < samples; s++)
        {
            device.Synchronize();
            sw.Restart();
            for (int i = 0; i < inner; i++) run();
            issue[s] = sw.Elapsed.TotalMilliseconds * 1000 / inner;
            device.Synchronize();
            times[s] = sw.Elapsed.TotalMilliseconds / inner;
        }
        Array.Sort(times);
        Array.Sort(issue);
        return (times[samples / 2], times[0], samples, issue[samples / 2]);
    }
}

/// <summary>
/// GEMM: the bf16 tensor-core kernel (<see cref="TensorCoreGemm"/>, fp32 accumulation) against the fp32 SIMT GEMM
/// (<see cref="MatMul.Gemm"/>) on the same values, at 4096³, at the rtx5090 Linear layers' shapes and at its
/// attention's batched products. Inputs are random bf16 values (a hash of the element index, so any element can be
/// recomputed on the host); the SIMT GEMM gets them widened to fp32 exactly. Correctness: the output is poisoned with
/// NaN before each run, then 256 sampled elements of each output are compared with float64 dot products, the error
/// relative to Σ|a·b|. The SIMT GEMM is timed per tile of --simt-tiles (its plan, tile and K splits, is printed), and
/// the registers, spills and residency of every SIMT kernel instance used are printed at the end (CUDA).
/// </summary>
public static class GemmBench
{
    public sealed record GemmCase(string Name, int M, int N, int K, bool TransA, bool TransB, int Batch = 1);

    /// <summary>The rtx5090 preset's attention: T = 256, 8 heads of 32.</summary>
    private const int AttentionT = 256, AttentionHeads = 8, AttentionHeadDim = 32;

    /// <summary>The rtx5090 preset's Linear layers (in → out features).</summary>
    private static readonly (string Name, int In, int Out)[] Layers =
        [("qkv", 256, 768), ("proj", 256, 256), ("fc", 256, 1024), ("fc2", 1024, 256), ("lm_head", 256, 50257)];

    private const int Samples = 256;
    private const double UnitRoundoff = 1.0 / (1 << 24);

    public static IEnumerable<GemmCase> Cases(BenchOptions o)
    {
        foreach (string token in o.Sizes.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (token == "square")
            {
                foreach (var (ta, tb) in new[] { (false, false), (false, true), (true, false), (true, true) })
                    yield return new GemmCase($"square.{T(ta, tb)}", 4096, 4096, 4096, ta, tb);
            }
            else if (token == "model")
            {
                foreach (int rows in ParseRows(o.Rows))
                    foreach (var (name, fin, fout) in Layers)
                    {
                        // y = x·Wᵀ; dX = dY·W; dW = dYᵀ·X (x [rows, in], W [out, in], dY [rows, out]).
                        yield return new GemmCase($"{name}.forward.r{rows}", rows, fout, fin, false, true);
                        yield return new GemmCase($"{name}.grad_input.r{rows}", rows, fin, fout, false, false);
                        yield return new GemmCase($"{name}.grad_weight.r{rows}", fout, fin, rows, true, false);
                    }
            }
            else if (token == "attention")
            {
                foreach (int rows in ParseRows(o.Rows))
                {
                    // Per (sequence, head): S = Q·Kᵀ (and dP = dY·Vᵀ), Y = P·V (and dQ = dS·K), dV = Pᵀ·dY (and dK = dSᵀ·Q).
                    int batch = rows / AttentionT * AttentionHeads;
                    yield return new GemmCase($"attn.scores.r{rows}", AttentionT, AttentionT, AttentionHeadDim, false, true, batch);
                    yield return new GemmCase($"attn.pv.r{rows}", AttentionT, AttentionHeadDim, AttentionT, false, false, batch);
                    yield return new GemmCase($"attn.grad_v.r{rows}", AttentionT, AttentionHeadDim, AttentionT, true, false, batch);
                }
            }
            else yield return ParseCustom(token);
        }
    }

    private static string T(bool ta, bool tb) => $"{(ta ? 't' : 'n')}{(tb ? 't' : 'n')}";

    private static IEnumerable<int> ParseRows(string rows) =>
        rows.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(r =>
            int.TryParse(r, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) && v > 0 ? v : throw new UserError($"--rows: '{r}' is not a positive integer"));

    private static GemmCase ParseCustom(string token)
    {
        int batch = 1;
        string full = token;
        int at = token.IndexOf('@');
        if (at >= 0)
        {
            if (!int.TryParse(token[(at + 1)..], NumberStyles.Integer, CultureInfo.InvariantCulture, out batch) || batch <= 0)
                throw new UserError($"--sizes: '{full}': the batch after '@' must be a positive integer");
            token = token[..at];
        }
        string[] parts = token.Split(':');
        string[] dims = parts[0].Split('x');
        if (dims.Length != 3 || !dims.All(d => int.TryParse(d, NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) && v > 0))
            throw new UserError($"--sizes: '{full}' is not 'square', 'model', 'attention' or MxNxK[:nn|nt|tn|tt][@batch]");
        int[] v = dims.Select(d => int.Parse(d, CultureInfo.InvariantCulture)).ToArray();
        string t = parts.Length > 1 ? parts[1] : "nn";
        if (t is not ("nn" or "nt" or "tn" or "tt")) throw new UserError($"--sizes: '{token}': transposes must be nn, nt, tn or tt");
        return new GemmCase($"{v[0]}x{v[1]}x{v[2]}.{t}{(batch > 1 ? $"@{batch}" : "")}", v[0], v[1], v[2], t[0] == 't', t[1] == 't', batch);
    }

    /// <summary>Every gemm option parsed once, before the device opens (a UserError names the bad one).</summary>
    public static void Check(BenchOptions o)
    {
        _ = ParseCDType(o);
        _ = ParseSimtSplits(o);
        _ = ParseSimtTiles(o);
        _ = ParseTiles(o);
        _ = DirectStores(o);
        _ = Cases(o).ToList();
    }

    private static DType ParseCDType(BenchOptions o) => o.CDType.ToLowerInvariant() switch
    {
        "f32" or "float32" => DType.F32,
        "bf16" => DType.BF16,
        _ => throw new UserError($"--c-dtype '{o.CDType}': expected f32 or bf16"),
    };

    private static Fp32Matmul ParseFp32Matmul(BenchOptions o)
    {
        try { return Fp32MatmulNames.Parse(o.Fp32Matmul); }
        catch (ArgumentException e) { throw new UserError(e.Message, e); }
    }

    /// <summary>The record name of the fp32 GEMM under a mode (the SIMT kernel, or the tensor-core kernel on fp32 operands).</summary>
    private static string Fp32Impl(Fp32Matmul mode) => mode == Fp32Matmul.Ieee ? "simt_f32" : "tc_" + mode.Name();

    private static int ParseSimtSplits(BenchOptions o) =>
        o.SimtSplits is >= 0 and <= 1024 ? o.SimtSplits : throw new UserError($"--simt-splits {o.SimtSplits}: expected 0 (automatic) to 1024");

    public static List<BenchRecord> Run(ComputeDevice device, BenchOptions o)
    {
        var cDType = ParseCDType(o);
        ParseSimtSplits(o);
        ParseFp32Matmul(o);
        var simtTiles = ParseSimtTiles(o);
        if (o.Ptx is not null)
        {
            foreach (var tile in ParseTiles(o).Select(t => t == TensorCoreGemm.Tile.Auto ? TensorCoreGemm.Tile.Narrow : t).Distinct())
            {
                File.WriteAllText($"{o.Ptx}.{tile}.ptx", TensorCoreGemm.CompilePtx(device, tile));
                Console.WriteLine($"wrote the tensor-core kernel's PTX to {o.Ptx}.{tile}.ptx");
            }
            foreach (int layout in new[] { 12, 13, 14, 15 })
            {
                File.WriteAllText($"{o.Ptx}.wgmma.{layout}.ptx", TensorCoreGemm.CompileWgmmaPtx(device, layout));
                Console.WriteLine($"wrote the wgmma kernel's PTX (layout {layout}, target sm_90a) to {o.Ptx}.wgmma.{layout}.ptx");
            }
            foreach (var tile in new[] { MatMul.SimtTile.T128x128, MatMul.SimtTile.T128x64, MatMul.SimtTile.T256x32 })
            {
                File.WriteAllText($"{o.Ptx}.simt.{tile}.ptx", MatMul.CompilePtx(device, tile));
                Console.WriteLine($"wrote the SIMT kernel's PTX to {o.Ptx}.simt.{tile}.ptx");
            }
        }
        var cases = Cases(o).ToList();
        var tiles = ParseTiles(o);
        using var stores = DirectStores(o) ? TensorCoreGemm.UseDirectStores() : null;
        var records = new List<BenchRecord>();
        if (device.IsCuda)
        {
            Console.WriteLine($"deep tiles (>48 KB dynamic shared memory): {(TensorCoreGemm.DeepAvailable(device) ? "available" : "unavailable: " + TensorCoreGemm.DeepUnavailableBecause(device))}");
            Console.WriteLine($"wgmma (sm_90a) for the 64-deep tile: {(TensorCoreGemm.WgmmaAvailable(device) ? "available" : "unavailable" + (TensorCoreGemm.WgmmaUnavailableBecause(device) is string why ? ": " + why : " (not compute capability 9.0)"))}; --tc-mma {o.TcMma}");
        }
        Console.WriteLine($"{"case",-28} {"M",6} {"N",6} {"K",6} | {"tile",-10} {"tc ms",8} {"TFLOP/s",7} {"host µs",7} {"err",7} | {"simt plan",-20} {"simt ms",9} {"TFLOP/s",7} {"err",7} | {"tc/simt",7}");
        foreach (var c in cases)
        {
            try
            {
                records.AddRange(RunCase(device, o, c, cDType, tiles, simtTiles));
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                Console.WriteLine($"{c.Name,-28} FAILED: {e.GetType().Name}: {e.Message}");
                records.Add(new BenchRecord("gemm", c.Name, "tc_bf16", "bf16", cDType.Name(), c.M, c.N, c.K, c.Batch, c.TransA, c.TransB,
                    double.NaN, double.NaN, 0, double.NaN, null, $"FAIL: {e.GetType().Name}: {e.Message}"));
            }
        }
        PrintSimtKernels(device);
        return records;
    }

    public static TensorCoreGemm.MmaKind MmaOf(BenchOptions o) => o.TcMma.ToLowerInvariant() switch
    {
        "auto" => TensorCoreGemm.MmaKind.Auto,
        "mma" => TensorCoreGemm.MmaKind.MmaSync,
        "wgmma" => TensorCoreGemm.MmaKind.Wgmma,
        _ => throw new UserError($"--tc-mma '{o.TcMma}': expected auto, mma or wgmma"),
    };

    private static bool DirectStores(BenchOptions o) => o.TcStores switch
    {
        "auto" => false,
        "direct" => true,
        _ => throw new UserError($"--tc-stores '{o.TcStores}': expected auto or direct"),
    };

    private static List<TensorCoreGemm.Tile> ParseTiles(BenchOptions o) =>
        o.Tiles.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(t =>
            Enum.TryParse<TensorCoreGemm.Tile>(t, ignoreCase: true, out var tile) ? tile : throw new UserError($"--tiles: '{t}' is not auto, narrow, wide, narrowdeep, widedeep or narrowk64")).ToList();

    private static List<MatMul.SimtTile> ParseSimtTiles(BenchOptions o) =>
        o.SimtTiles.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(t =>
            Enum.TryParse<MatMul.SimtTile>(t, ignoreCase: true, out var tile) && tile != MatMul.SimtTile.T16x16
                ? tile : throw new UserError($"--simt-tiles: '{t}' is not auto, t128x128, t128x64 or t256x32")).ToList();

    /// <summary>The SIMT kernel instances the run used: (tile, variant bits).</summary>
    private static readonly HashSet<(MatMul.SimtTile, int)> SimtKernelsUsed = [];

    /// <summary>The tensor-core kernel instances the run used: (tile, layout bits, passes: 0 for bf16 operands, 1 TF32, 3 3xTF32; whether on wgmma).</summary>
    private static readonly HashSet<(TensorCoreGemm.Tile Tile, int Layout, int Passes, bool Wgmma)> TcKernelsUsed = [];

    /// <summary>Registers, spills and residency of every SIMT and tensor-core kernel instance the run loaded (CUDA: what ptxas made of the PTX).</summary>
    private static void PrintSimtKernels(ComputeDevice device)
    {
        foreach (var (tile, layout, passes, wgmma) in TcKernelsUsed.OrderBy(x => x))
            Console.WriteLine(wgmma
                ? $"tensor-core kernel bf16 {tile} on wgmma, layout {layout}: {TensorCoreGemm.WgmmaResources(device, layout)}"
                : $"tensor-core kernel {(passes switch { 0 => "bf16", 1 => "tf32", _ => "3xtf32" })} {tile} layout {layout}: {TensorCoreGemm.Resources(device, tile, layout, passes)}");
        TcKernelsUsed.Clear();
        foreach (var (tile, variant) in SimtKernelsUsed.OrderBy(x => x))
        {
            var r = MatMul.TiledKernelResources(device, tile, variant);
            if (r is not null) Console.WriteLine($"simt kernel {tile} variant {variant} (A k-contiguous {(variant & 1) != 0}, B k-contiguous {(variant & 2) != 0}): {r}");
        }
        SimtKernelsUsed.Clear();
    }

    private static IEnumerable<BenchRecord> RunCase(ComputeDevice device, BenchOptions o, GemmCase c, DType cDType, List<TensorCoreGemm.Tile> tiles, List<MatMul.SimtTile> simtTiles)
    {
        double flop = 2.0 * c.M * c.N * c.K * c.Batch;
        ulong seedA = (ulong)o.Seed * 0x9E3779B97F4A7C15UL + 1, seedB = seedA + 0x5851F42D4C957F2DUL;
        int aRows = c.TransA ? c.K : c.M, aCols = c.TransA ? c.M : c.K;
        int bRows = c.TransB ? c.N : c.K, bCols = c.TransB ? c.K : c.N;
        // Batched cases: batch matrices stacked along the rows of one tensor.
        using var a = RandomBf16(device, c.Batch * aRows, aCols, seedA, "a");
        using var b = RandomBf16(device, c.Batch * bRows, bCols, seedB, "b");
        using var cTc = Tensor.Empty(device, new Shape(c.Batch * c.M, c.N), cDType, MemoryCategory.Activations, "c_tc");
        MatrixOperand Operand(Tensor t, int rows, int cols, bool transposed) => new(t, 0, cols, c.Batch > 1 ? (long)rows * cols : 0, transposed);
        var aOp = Operand(a, aRows, aCols, c.TransA);
        var bOp = Operand(b, bRows, bCols, c.TransB);
        var cOp = Operand(cTc, c.M, c.N, false);
        var results = new List<BenchRecord>();

        string head = $"{c.Name,-28} {c.M,6} {c.N,6} {c.K,6} | ";
        var lines = new List<string>();
        double tcMs = double.NaN;
        string? why = TensorCoreGemm.WhyNot(aOp, bOp, cOp);
        foreach (var requested in why is null ? tiles : [])
        {
            using var scope = TensorCoreGemm.UseTile(requested);
            var tile = TensorCoreGemm.ChooseTile(device, TensorCoreGemm.LayoutOf(aOp, bOp, c.Batch));
            string variant = requested == TensorCoreGemm.Tile.Auto ? $"auto:{tile}" : tile.ToString();
            try
            {
                cTc.Raw.MemSet(0xFF); // NaN everywhere: an element the kernel does not write fails the check
                TensorCoreGemm.TryGemm(aOp, bOp, cOp, c.M, c.N, c.K, c.Batch);
                device.Synchronize();
                var instruction = TensorCoreGemm.InstructionFor(aOp, bOp, cOp, c.M, c.N, c.K, c.Batch);
                TcKernelsUsed.Add((tile, TensorCoreGemm.LayoutOf(aOp, bOp, c.Batch), 0, instruction == TensorCoreGemm.MmaKind.Wgmma));
                double err = SampledError(cTc, c, seedA, seedB);
                var (median, min, samples, hostUs) = BenchTimer.Time(device, () => TensorCoreGemm.TryGemm(aOp, bOp, cOp, c.M, c.N, c.K, c.Batch), o.Repeats);
                tcMs = double.IsNaN(tcMs) ? median : Math.Min(tcMs, median);
                double tol = 4 * (c.K + 3) * UnitRoundoff + (cDType == DType.BF16 ? 1.0 / 256 : 0);
                string? note = err <= tol ? null : $"FAIL: sampled error {err:E2} > {tol:E2}";
                string paths = $"A {TensorCoreGemm.LoadPath(aOp, c.Batch)}, B {TensorCoreGemm.LoadPath(bOp, c.Batch)}, {(instruction == TensorCoreGemm.MmaKind.Wgmma ? "wgmma" : "mma.sync")}";
                results.Add(new BenchRecord("gemm", c.Name, "tc_bf16", "bf16", cDType.Name(), c.M, c.N, c.K, c.Batch, c.TransA, c.TransB,
                    median, min, samples, flop / (median * 1e-3) / 1e12, err, note ?? paths, variant, hostUs));
                lines.Add(string.Create(CultureInfo.InvariantCulture,
                    $"{variant,-10} {median,8:F3} {flop / (median * 1e-3) / 1e12,7:F1} {hostUs,7:F1} {err,7:E0}{(note is null ? " " : "!")}| "));
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                results.Add(new BenchRecord("gemm", c.Name, "tc_bf16", "bf16", cDType.Name(), c.M, c.N, c.K, c.Batch, c.TransA, c.TransB,
                    double.NaN, double.NaN, 0, double.NaN, null, $"FAIL: {e.GetType().Name}: {e.Message}", variant));
                lines.Add($"{variant,-10} FAILED {e.GetType().Name}: {e.Message} | ");
            }
        }
        if (why is not null) lines.Add($"{"tc: " + why,-45}| ");
        if (lines.Count == 0) lines.Add($"{"",-45}| ");

        if (flop <= o.SimtMaxGflop * 1e9)
        {
            using var a32 = Tensor.Empty(device, a.Shape, DType.F32, MemoryCategory.Data, "a_f32");
            using var b32 = Tensor.Empty(device, b.Shape, DType.F32, MemoryCategory.Data, "b_f32");
            using var c32 = Tensor.Empty(device, cTc.Shape, DType.F32, MemoryCategory.Activations, "c_simt");
            Memopt.Kernels.Convert.ToF32(a, a32);
            Memopt.Kernels.Convert.ToF32(b, b32);
            var a32Op = Operand(a32, aRows, aCols, c.TransA);
            var b32Op = Operand(b32, bRows, bCols, c.TransB);
            var c32Op = Operand(c32, c.M, c.N, false);
            var mode = ParseFp32Matmul(o);
            string impl = Fp32Impl(mode);
            var previousMode = device.Fp32Matmul;
            device.Fp32Matmul = mode;
            try
            {
            // Under TF32 / 3xTF32 MatMul.Gemm hands the fp32 operands to the tensor-core kernel (one pass: --simt-tiles do not apply).
            for (int i = 0; i < (mode == Fp32Matmul.Ieee ? simtTiles.Count : tiles.Count); i++)
            {
                using var scope = MatMul.UseSimtPlan(simtTiles[Math.Min(i, simtTiles.Count - 1)], o.SimtSplits);
                using var tcScope = mode == Fp32Matmul.Ieee ? null : TensorCoreGemm.UseTile(tiles[i]);
                var plan = MatMul.PlanFor(device, c.M, c.N, c.K, c.Batch);
                string variant = plan?.ToString() ?? "portable";
                if (mode != Fp32Matmul.Ieee && device.IsCuda)
                {
                    int layout = TensorCoreGemm.LayoutOf(a32Op, b32Op, c.Batch);
                    var tile = TensorCoreGemm.ChooseTileF32(tiles[i], TensorCoreGemm.DeepAvailable(device));
                    variant = tiles[i] == TensorCoreGemm.Tile.Auto ? $"auto:{tile}" : tile.ToString();
                    TcKernelsUsed.Add((tile, layout, TensorCoreGemm.PassesOf(mode), false));
                }
                if (plan is { } used && mode == Fp32Matmul.Ieee) SimtKernelsUsed.Add((used.Tile, MatMul.VariantOf(a32Op, b32Op)));
                string simt;
                try
                {
                    c32.Raw.MemSet(0xFF);
                    MatMul.Gemm(a32Op, b32Op, c32Op, c.M, c.N, c.K, c.Batch);
                    device.Synchronize();
                    double err = SampledError(c32, c, seedA, seedB);
                    var (median, min, samples, hostUs) = BenchTimer.Time(device, () => MatMul.Gemm(a32Op, b32Op, c32Op, c.M, c.N, c.K, c.Batch), o.Repeats);
                    double tol = 4 * (c.K + 3) * UnitRoundoff;
                    string? note = err <= tol ? null : $"FAIL: sampled error {err:E2} > {tol:E2}";
                    results.Add(new BenchRecord("gemm", c.Name, impl, "f32", "f32", c.M, c.N, c.K, c.Batch, c.TransA, c.TransB,
                        median, min, samples, flop / (median * 1e-3) / 1e12, err, note, $"{impl}:{variant}", hostUs));
                    simt = string.Create(CultureInfo.InvariantCulture,
                        $"{variant,-20} {median,9:F3} {flop / (median * 1e-3) / 1e12,7:F2} {err,7:E0}{(note is null ? " " : "!")}| {median / tcMs,7:F1}x");
                }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                    results.Add(new BenchRecord("gemm", c.Name, impl, "f32", "f32", c.M, c.N, c.K, c.Batch, c.TransA, c.TransB,
                        double.NaN, double.NaN, 0, double.NaN, null, $"FAIL: {e.GetType().Name}: {e.Message}", $"{impl}:{variant}"));
                    simt = $"{variant,-20} FAILED {e.GetType().Name}: {e.Message}";
                }
                if (i < lines.Count) lines[i] += simt;
                else lines.Add(new string(' ', 45) + "| " + simt);
            }
            }
            finally
            {
                device.Fp32Matmul = previousMode;
            }
        }
        else lines[0] += $"{"(skipped: > --simt-max-gflop)",-28}|";
        Console.WriteLine(head + string.Join("\n" + new string(' ', head.Length), lines));
        return results;
    }

    /// <summary>
    /// A rows×cols bf16 tensor of values in [-1, 1) given by <see cref="Value"/>, filled from the host in chunks
    /// (the LM head's dY is 1.6 G elements at 32768 rows: no host copy of the whole tensor).
    /// </summary>
    private static Tensor RandomBf16(ComputeDevice device, int rows, int cols, ulong seed, string name)
    {
        var t = Tensor.Empty(device, new Shape(rows, cols), DType.BF16, MemoryCategory.Data, name);
        const int chunk = 1 << 24;
        var buffer = new ushort[(int)Math.Min(chunk, t.Numel)];
        for (long start = 0; start < t.Numel; start += chunk)
        {
            int len = (int)Math.Min(chunk, t.Numel - start);
            long first = start;
            Parallel.For(0, (len + 65535) / 65536, part =>
            {
                int end = Math.Min(len, (part + 1) * 65536);
                for (int i = part * 65536; i < end; i++) buffer[i] = BFloat16.FromFloat(Value(seed, first + i));
            });
            ((ArrayView1D<ushort, Stride1D.Dense>)t.BF16.SubView(start, len)).CopyFromCPU(device.Accelerator.DefaultStream, buffer.AsSpan(0, len));
        }
        return t;
    }

    /// <summary>The input value at flat index <paramref name="i"/>: a SplitMix64 hash mapped to [-1, 1).</summary>
    public static float Value(ulong seed, long i)
    {
        ulong z = seed + (ulong)i * 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        z ^= z >> 31;
        return (float)((z >> 40) * (1.0 / (1 << 23)) - 1.0);
    }

    /// <summary>Max over sampled elements of |C − float64 dot| / Σ|a·b| (NaN, i.e. an unwritten element, gives +∞).</summary>
    private static double SampledError(Tensor cT, GemmCase c, ulong seedA, ulong seedB)
    {
        var rng = new Random(12345);
        double worst = 0;
        long aMatrix = (long)c.M * c.K, bMatrix = (long)c.K * c.N, cMatrix = (long)c.M * c.N;
        for (int s = 0; s < Samples; s++)
        {
            // Corners and edges first (tile borders, first and last batch), then random elements.
            int i = s switch { 0 => 0, 1 => c.M - 1, 2 => 0, 3 => c.M - 1, _ => rng.Next(c.M) };
            int j = s switch { 0 => 0, 1 => c.N - 1, 2 => c.N - 1, 3 => 0, _ => rng.Next(c.N) };
            int bi = s switch { 0 => 0, 1 => c.Batch - 1, _ => rng.Next(c.Batch) };
            double dot = 0, abs = 0;
            for (int kk = 0; kk < c.K; kk++)
            {
                long ai = bi * aMatrix + (c.TransA ? (long)kk * c.M + i : (long)i * c.K + kk);
                long bIndex = bi * bMatrix + (c.TransB ? (long)j * c.K + kk : (long)kk * c.N + j);
                double av = BFloat16.Round(Value(seedA, ai)), bv = BFloat16.Round(Value(seedB, bIndex));
                dot += av * bv;
                abs += Math.Abs(av * bv);
            }
            long at = bi * cMatrix + (long)i * c.N + j;
            float got = cT.DType == DType.F32
                ? cT.F32.SubView(at, 1).GetAsArray()[0]
                : BFloat16.ToFloat(cT.BF16.SubView(at, 1).GetAsArray()[0]);
            double err = double.IsFinite(got) ? Math.Abs(got - dot) / Math.Max(abs, 1e-30) : double.PositiveInfinity;
            worst = Math.Max(worst, err);
        }
        return worst;
    }
}
