using System.Text.Json;
using Memopt.Kernels;
using Memopt.Runner;
using Memopt.Tests.Harness;

namespace Memopt.Tests.Runner;

/// <summary>The memopt command line: results files and their fields, and bad input that must exit non-zero with a clear message.</summary>
public class CommandLineTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("memopt-cli").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string[] SmallTrain(params string[] extra) =>
        Cli.Small("train", _dir, 1, ["--steps", "5", "--eval-batches", "2", "--results-dir", Path.Combine(_dir, "results"), .. extra]);

    private static (int Code, string Out, string Err) Run(params string[] args) => Cli.Run(args);

    [Fact]
    public void Train_writes_metrics_memory_and_a_checkpoint_with_the_documented_fields()
    {
        var (code, output, err) = Run(SmallTrain("--technique", "baseline"));
        Assert.True(code == 0, err + output);
        var metrics = JsonDocument.Parse(File.ReadAllText(Path.Combine(_dir, "results", "synthetic_baseline_metrics.json"))).RootElement;
        var m = metrics.GetProperty("metrics");
        foreach (var field in new[] { "parameters", "tokens_seen", "step_ms_mean", "step_ms_median", "epoch_seconds", "tokens_per_second",
                                      "train_loss", "train_perplexity", "val_loss", "val_perplexity", "optimal_val_perplexity", "peak_memory_bytes" })
            Assert.True(m.TryGetProperty(field, out _), $"metrics.{field} missing");
        Assert.Equal(5 * 4 * 16, m.GetProperty("tokens_seen").GetInt64());
        Assert.Equal("baseline", metrics.GetProperty("technique").GetString());
        Assert.True(metrics.GetProperty("config").TryGetProperty("model", out _));
        var memory = JsonDocument.Parse(File.ReadAllText(Path.Combine(_dir, "results", "synthetic_baseline_memory.json"))).RootElement.GetProperty("memory");
        foreach (var field in new[] { "peak_bytes", "peak_reserved_bytes", "forward_peak_bytes", "backward_peak_bytes", "peak_per_category", "at_peak_per_category" })
            Assert.True(memory.TryGetProperty(field, out _), $"memory.{field} missing");
        Assert.True(File.Exists(Path.Combine(_dir, "results", "checkpoints", "synthetic_baseline.safetensors")));
        Assert.Empty(Directory.GetFiles(_dir, "*.tmp*", SearchOption.AllDirectories)); // AtomicFile's temp files are *.tmp-PID-GUID
        Assert.Contains("params", output);
    }

    [Theory]
    [InlineData("--batch-size", "0", "--batch-size must be > 0")]
    [InlineData("--steps", "-3", "--steps must be > 0")]
    [InlineData("--heads", "3", "not divisible by --heads 3")]
    [InlineData("--device", "tpu", "expected auto, cuda or cpu")]
    [InlineData("--memory-limit", "lots", "'lots' is not a byte size")]
    [InlineData("--vocab-size", "100", "larger than the model's 100")]
    [InlineData("--head-chunk-rows", "0", "--head-chunk-rows must be > 0")]
    public void Bad_train_arguments_exit_2_with_a_message_naming_the_problem(string flag, string value, string message)
    {
        var args = SmallTrain().ToList();
        int i = args.IndexOf(flag);
        if (i >= 0) args[i + 1] = value; else args.AddRange([flag, value]);
        var (code, _, err) = Run([.. args]);
        Assert.Equal(2, code);
        Assert.Contains(message, err);
        Assert.False(File.Exists(Path.Combine(_dir, "results", "synthetic_baseline_metrics.json")), "nothing is written for a failed run");
    }

    [Fact]
    public void Missing_and_empty_data_files_are_named_in_the_error()
    {
        var missing = Path.Combine(_dir, "nope.txt");
        var (code, _, err) = Run(SmallTrain("--data", missing));
        Assert.Equal(2, code);
        Assert.Contains("nope.txt", err);
        var empty = Path.Combine(_dir, "empty.txt");
        File.WriteAllText(empty, "");
        (code, _, err) = Run(SmallTrain("--data", empty));
        Assert.Equal(2, code);
        Assert.Contains("empty.txt", err);
    }

    [Fact]
    public void All_techniques_combined_train_under_one_label()
    {
        var (code, output, err) = Run(SmallTrain("--bf16", "--flash-attn", "--window-size", "4", "--gradient-checkpointing"));
        Assert.True(code == 0, err + output);
        var metrics = JsonDocument.Parse(File.ReadAllText(Path.Combine(_dir, "results", "synthetic_bf16_flash_window4_checkpointing_metrics.json"))).RootElement;
        Assert.Equal("bf16+flash+window4+checkpointing", metrics.GetProperty("technique").GetString());
        Assert.True(double.IsFinite(metrics.GetProperty("metrics").GetProperty("val_loss").GetDouble()));
    }

    [Fact]
    public void Bf16_trains_and_writes_its_results_under_the_bf16_label()
    {
        var (code, output, err) = Run(SmallTrain("--bf16"));
        Assert.True(code == 0, err + output);
        Assert.Contains("bf16 mixed precision", output);
        var metrics = JsonDocument.Parse(File.ReadAllText(Path.Combine(_dir, "results", "synthetic_bf16_metrics.json"))).RootElement;
        Assert.Equal("bf16", metrics.GetProperty("technique").GetString());
        Assert.True(double.IsFinite(metrics.GetProperty("metrics").GetProperty("val_loss").GetDouble()));
        Assert.True(File.Exists(Path.Combine(_dir, "results", "checkpoints", "synthetic_bf16.safetensors")));
    }

    [Fact]
    public void Check_runs_every_kernel_against_its_reference()
    {
        var (code, output, err) = Run("check", "--device", "cpu", "--repeats", "1", "--kernel", "elementwise");
        Assert.True(code == 0, err + output);
        Assert.Contains("2 passed, 0 failed", output);
        var (bad, _, badErr) = Run("check", "--device", "cpu", "--kernel", "no-such-kernel");
        Assert.Equal(2, bad);
        Assert.Contains("matches no kernel", badErr);
    }

    [Fact]
    public void Info_names_the_device_and_which_tensor_core_gemm_runs_there()
    {
        var dev = TestDevice.Get();
        var (code, output, err) = Run("info", "--device", dev.IsCuda ? "cuda" : "cpu");
        Assert.True(code == 0, err + output);
        Assert.Contains("compute capability", output);
        string line = output.Split('\n').Single(l => l.StartsWith("tensor-core GEMM", StringComparison.Ordinal));
        if (!dev.IsCuda) Assert.Contains("none (not a CUDA device", line);
        else if (TensorCoreGemm.WgmmaAvailable(dev)) Assert.Contains("mma.sync, 64-deep tile, wgmma (sm_90a)", line);
        else Assert.Contains("no wgmma", line);
    }
}
