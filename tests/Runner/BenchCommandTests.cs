using System.Text.Json;
using Memopt.Tests.Harness;

namespace Memopt.Tests.Runner;

/// <summary>
/// `memopt bench gemm`, `bench step` and `bench kernels` on tiny shapes on the CPU: the case syntax (transposes, batch), the SIMT rows,
/// the records, the profile, bad input.
/// </summary>
public class BenchCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("memopt-bench-cli").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>A d-model-16 model (as <see cref="Cli.Small"/>), through --train-args.</summary>
    private const string TinyModel = "--train-args=--layers 1 --d-model 16 --heads 2 --d-ff 32 --seq-len 16 --vocab-size 300";

    /// <summary>
    /// The profiled step's kernels and launch calls happen inside that step's clock, so their sums are below its time;
    /// the slack covers the clocks being read at slightly different moments.
    /// </summary>
    private const double ClockSlack = 1.05;

    private static JsonElement[] Results(string path) =>
        JsonDocument.Parse(File.ReadAllText(path)).RootElement.GetProperty("results").EnumerateArray().ToArray();

    private static double Num(JsonElement r, string name) => r.GetProperty(name).ValueKind == JsonValueKind.Number ? r.GetProperty(name).GetDouble() : double.NaN;

    [Fact]
    public void Step_times_every_technique_and_profiles_one_step_per_phase()
    {
        string json = Path.Combine(_dir, "step.json");
        var (code, output, err) = Cli.Run("bench", "step", "--device", "cpu", "--batch-sizes", "2", "--warmup", "0", "--repeats", "1",
            "--profile", "--top", "5", "--random-tokens", TinyModel, "--out", json);
        Assert.True(code == 0, err + output);
        var records = Results(json);
        Assert.Equal(["baseline", "bf16", "bf16_flash", "bf16_flash_window4", "checkpointing", "combined"],
            records.Select(r => r.GetProperty("technique").GetString()!).ToArray());
        foreach (var r in records)
        {
            string name = r.GetProperty("name").GetString()!;
            Assert.True(r.GetProperty("note").ValueKind == JsonValueKind.Null, $"{name}: {r.GetProperty("note")}"); // also: the tracker was back to zero
            Assert.Equal("step", r.GetProperty("suite").GetString());
            Assert.Equal(2, r.GetProperty("batch").GetInt32());
            Assert.Equal(16, r.GetProperty("seq_len").GetInt32());
            Assert.Equal(1, r.GetProperty("samples").GetInt32());
            double ms = Num(r, "ms"), min = Num(r, "ms_min");
            Assert.True(min > 0 && min <= ms, $"{name}: min {min}, median {ms}");
            Assert.True(Math.Abs(Num(r, "tokens_per_s") - 2 * 16 / (ms / 1000)) < 1e-6 * Num(r, "tokens_per_s"), name);
            Assert.True(Num(r, "peak_bytes") > 0 && Num(r, "peak_reserved_bytes") >= Num(r, "peak_bytes"), name);

            var p = r.GetProperty("profile");
            double kernelMs = Num(p, "kernel_ms"), profiled = Num(p, "profiled_step_ms"), launchCalls = Num(p, "launch_host_ms");
            Assert.True(kernelMs > 0 && kernelMs <= profiled * ClockSlack, $"{name}: kernels {kernelMs} ms in a {profiled} ms step");
            Assert.Equal(kernelMs, Num(p, "kernel_device_ms")); // the CPU accelerator has stream markers too
            Assert.True(launchCalls > 0 && launchCalls <= profiled * ClockSlack, $"{name}: launch calls {launchCalls} ms in a {profiled} ms step");
            var kernels = p.GetProperty("kernels").EnumerateArray().ToArray();
            Assert.Equal(p.GetProperty("launches").GetInt32(), kernels.Sum(k => k.GetProperty("calls").GetInt32()));
            var phases = kernels.Select(k => k.GetProperty("phase").GetString()).ToHashSet();
            foreach (var phase in new[] { "forward", "backward", "optimizer" }) Assert.Contains(phase, phases);
            Assert.Equal(name.Contains("checkpointing") || name.Contains("combined"), phases.Contains("recompute"));
            Assert.Contains(kernels, k => k.GetProperty("kernel").GetString() == "adamw.update" && k.GetProperty("phase").GetString() == "optimizer");
        }
        Assert.Contains("not kernel time", output + err);
        Assert.Contains("adamw.update", output);
    }

    [Fact]
    public void Step_trains_on_the_corpus_of_memopt_train_by_default()
    {
        string json = Path.Combine(_dir, "corpus.json");
        var (code, output, err) = Cli.Run("bench", "step", "--device", "cpu", "--techniques", "bf16", "--batch-sizes", "3", "--warmup", "0", "--repeats", "1",
            "--train-args=--layers 1 --d-model 16 --heads 2 --d-ff 32 --seq-len 16 --vocab-size 300 --bpe-vocab 300 --corpus-words 30000 " +
            $"--synthetic-vocab 150 --cache-dir {Path.Combine(_dir, "cache")}", "--out", json);
        Assert.True(code == 0, err + output);
        Assert.Contains("the corpus of `memopt train`", output);
        var r = Assert.Single(Results(json));
        Assert.Equal("rtx5090.bf16.b3", r.GetProperty("name").GetString());
        Assert.Equal("bf16", r.GetProperty("input_type").GetString());
        Assert.True(Num(r, "ms") > 0 && r.GetProperty("profile").ValueKind == JsonValueKind.Null);
    }

    [Fact]
    public void Kernels_time_every_family_against_the_copy_with_bytes_and_flops()
    {
        string json = Path.Combine(_dir, "kernels.json");
        var (code, output, err) = Cli.Run("bench", "kernels", "--device", "cpu", "--repeats", "2", "--attention", "1x2x16x8", "--rows", "32",
            "--copy-mib", "1", TinyModel, "--out", json);
        Assert.True(code == 0, err + output);
        var records = Results(json);
        Assert.StartsWith("copy.d2d", records[0].GetProperty("name").GetString());
        Assert.Equal(1.0, Num(records[0], "bandwidth_ratio"));
        string[] expected =
        [
            .. new[] { "naive", "flash" }.SelectMany(_ => new[] { "attention.b1h2T16hd8.forward", "attention.b1h2T16hd8.backward" }),
            .. new[] { "naive", "flash" }.SelectMany(_ => new[] { "attention.b1h2T16hd8.forward", "attention.b1h2T16hd8.backward" }),
            "layernorm.r32.forward", "layernorm.r32.backward", "layernorm.r32.forward", "layernorm.r32.backward",
            "cross_entropy.r32.forward", "cross_entropy.r32.backward", "cross_entropy.r32.forward", "cross_entropy.r32.backward",
        ];
        var names = records.Skip(1).Select(r => r.GetProperty("name").GetString()!).ToArray();
        Assert.Equal(expected, names.Take(expected.Length).ToArray());
        Assert.Equal(4, names.Count(n => n.StartsWith("adamw.", StringComparison.Ordinal)));
        foreach (var r in records)
        {
            string name = r.GetProperty("name").GetString()!;
            Assert.True(r.GetProperty("note").GetString() is { } note && !note.StartsWith("FAIL") && !note.StartsWith("OOM"), $"{name}: {r.GetProperty("note")}");
            Assert.True(Num(r, "ms") > 0 && Num(r, "ms_min") <= Num(r, "ms"), name);
            Assert.True(Num(r, "bytes") > 0 && Num(r, "gbps") > 0 && Num(r, "bandwidth_ratio") > 0, name);
            if (name.StartsWith("attention", StringComparison.Ordinal))
                Assert.True(Num(r, "tflops") > 0 && Num(r, "peak_bytes") > 0, name);
        }
        // fp32 and bf16 of each attention implementation, the bf16 moving half the bytes.
        var attention = records.Where(r => r.GetProperty("name").GetString() == "attention.b1h2T16hd8.forward").ToArray();
        Assert.Equal(["f32", "f32", "bf16", "bf16"], attention.Select(r => r.GetProperty("input_type").GetString()).ToArray());
        Assert.Equal(["naive", "flash", "naive", "flash"], attention.Select(r => r.GetProperty("impl").GetString()).ToArray());
    }

    [Theory]
    [InlineData("gemm", "--sizes", "4x4x4@0", "--sizes: '4x4x4@0': the batch after '@' must be a positive integer")]
    [InlineData("gemm", "--simt-tiles", "t16x16", "--simt-tiles: 't16x16' is not auto, t128x128, t128x64 or t256x32")]
    [InlineData("gemm", "--simt-splits", "-1", "--simt-splits -1: expected 0 (automatic) to 1024")]
    [InlineData("gemm", "--tc-stores", "staged", "--tc-stores 'staged': expected auto or direct")]
    [InlineData("step", "--techniques", "turbo", "--techniques: unknown technique 'turbo'")]
    [InlineData("step", "--batch-sizes", "32,0", "--batch-sizes: '0' is not a positive integer")]
    [InlineData("step", "--batch-sizes", "-4", "--batch-sizes: '-4' is not a positive integer")]
    [InlineData("step", "--warmup", "-1", "--warmup -1: must be ≥ 0")]
    [InlineData("step", "--train-args", "--batch-size 4", "--train-args may not contain --batch-size")]
    [InlineData("step", "--train-args", "--no-such-flag", "--train-args: unknown option 'no-such-flag'")]
    [InlineData("step", "--preset", "huge", "--preset 'huge': expected one of")]
    [InlineData("kernels", "--kernels", "attention,softmax", "--kernels: 'softmax' is not one of")]
    [InlineData("kernels", "--attention", "1x2x16", "--attention: '1x2x16' is not a preset")]
    [InlineData("kernels", "--rows", "0", "--rows: '0' is not a positive integer")]
    [InlineData("kernels", "--copy-mib", "0", "--copy-mib 0: must be > 0")]
    [InlineData("fft", "--repeats", "1", "bench 'fft': expected one of gemm, step, kernels")]
    public void Bad_input_exits_2_with_one_line_naming_the_option(string suite, string flag, string value, string message)
    {
        var (code, output, err) = Cli.Run("bench", suite, "--device", "cpu", $"{flag}={value}");
        Assert.True(code == 2, $"exit {code}: {err}{output}");
        Assert.Contains(message, err);
        Assert.DoesNotContain("memopt bench", output); // refused before the device opened
    }

    [Fact]
    public void Gemm_bench_times_batched_custom_cases_and_writes_checked_records()
    {
        string json = Path.Combine(_dir, "gemm.json");
        var (code, output, error) = Cli.Run("bench", "gemm", "--device", "cpu", "--sizes", "33x17x9:tn@2,20x12x8", "--repeats", "1", "--out", json);
        Assert.True(code == 0, $"exit {code}: {output}\n{error}");
        Assert.Contains("33x17x9.tn@2", output);
        Assert.Contains("portable", output);
        using var doc = JsonDocument.Parse(File.ReadAllText(json));
        var records = doc.RootElement.GetProperty("results").EnumerateArray().ToList();
        Assert.Equal(2, records.Count);
        var batched = records[0];
        Assert.Equal(("simt_f32", 2, true, false), (batched.GetProperty("impl").GetString(), batched.GetProperty("batch").GetInt32(),
            batched.GetProperty("trans_a").GetBoolean(), batched.GetProperty("trans_b").GetBoolean()));
        // Sampled outputs (both batches) against float64: within the bench's own bound, 4·(K+3)·2⁻²⁴ of Σ|a·b|.
        Assert.All(records, r => Assert.True(r.GetProperty("max_error").GetDouble() <= 4 * 12 / (double)(1 << 24), r.ToString()));
    }

}
