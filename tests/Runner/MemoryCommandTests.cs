using System.Text.Json;
using Memopt.Model;
using Memopt.Model.Memory;
using Memopt.Runner;
using Memopt.Tests.Memory;
using Memopt.Tests.Harness;

namespace Memopt.Tests.Runner;

/// <summary>`memopt memory` and `train --trace`: the report, its JSON, plot and trace files, and bad input.</summary>
public class MemoryCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("memopt-memory-cli").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static (int Code, string Out, string Err) Run(params string[] args) => Cli.Run(args);

    /// <summary>A small model on the small synthetic corpus (as the train command tests use).</summary>
    private string[] Small(string verb, params string[] extra) =>
        Cli.Small(verb, _dir, 2, ["--results-dir", Path.Combine(_dir, "results"), "--eval-batches", "1", .. extra]);

    private static readonly ModelConfig SmallConfig = new() { VocabSize = 300, DModel = 16, Layers = 2, Heads = 2, DFF = 32, SeqLen = 16 };

    [Fact]
    public void Prediction_prints_every_category_the_saved_tensors_and_the_peak_and_writes_json_and_a_plot()
    {
        string json = Path.Combine(_dir, "memory.json"), plot = Path.Combine(_dir, "memory.png");
        var (code, output, err) = Run(Small("memory", "--gpu-memory", "2MiB", "--json", json, "--plot", plot));
        Assert.True(code == 0, err + output);
        foreach (var text in new[] { "saved_for_backward", "attention_scores", "activation_gradients", "optimizer_state", "forward of blocks 0–1",
                                     "qkv", "scores", "probs", "gelu out", "freed in the forward", "logits", "peak       backward", "largest batch in 2.00 MiB", "bf16+flash", "checkpointing",
                                     "tensors alive at the predicted peak" })
            Assert.Contains(text, output);
        var predicted = MemoryModel.Predict(SmallConfig, new MemoryModelSettings { BatchSize = 4, Device = WorkspaceShape.CpuAccelerator, ContextBytes = 0 });
        var root = JsonDocument.Parse(File.ReadAllText(json)).RootElement;
        Assert.Equal(predicted.PeakBytes, root.GetProperty("prediction").GetProperty("peak_bytes").GetInt64());
        Assert.Equal(7, root.GetProperty("max_batch").GetProperty("techniques").GetArrayLength());
        Assert.Equal(2, root.GetProperty("prediction").GetProperty("saved_per_layer").GetArrayLength());
        var block0 = root.GetProperty("prediction").GetProperty("forward_per_layer")[0].GetProperty("tensors").EnumerateArray().ToArray();
        Assert.Contains(block0, t => t.GetProperty("name").GetString() == "scores" && !t.GetProperty("kept_for_backward").GetBoolean());
        Assert.Contains(block0, t => t.GetProperty("name").GetString() == "probs" && t.GetProperty("kept_for_backward").GetBoolean());
        Assert.True(root.GetProperty("prediction").GetProperty("live_at_peak").GetArrayLength() > 10);
        Assert.True(new FileInfo(plot).Length > 1000);
        Assert.Empty(Directory.GetFiles(_dir, "*.tmp*"));
    }

    [Theory]
    [InlineData("--gpu-memory", "lots", "--gpu-memory 'lots' is not a byte size")]
    [InlineData("--gpu-memory", "0", "--gpu-memory '0': a byte size must be > 0")]
    [InlineData("--gpu-memory", "-24GiB", "--gpu-memory '-24GiB' is not a byte size")]
    [InlineData("--context-overhead", "big", "--context-overhead 'big' is not a byte size")]
    [InlineData("--trace", "t.json", "--trace records real steps: add --measure")]
    [InlineData("--batch-size", "0", "--batch-size must be > 0")]
    [InlineData("--top", "-1", "--top must be ≥ 0")]
    public void Bad_memory_arguments_exit_2_with_a_message_naming_the_flag(string flag, string value, string message)
    {
        var args = Small("memory").ToList();
        int i = args.IndexOf(flag);
        if (i >= 0) args[i + 1] = value; else args.AddRange([flag, value]);
        var (code, _, err) = Run([.. args]);
        Assert.Equal(2, code);
        Assert.Contains(message, err);
    }

    [Fact]
    public void Measure_matches_the_prediction_and_confirms_the_max_batch_under_the_budget()
    {
        string json = Path.Combine(_dir, "measured.json"), trace = Path.Combine(_dir, "trace.json");
        var (code, output, err) = Run(Small("memory", "--measure", "--steps", "2", "--gpu-memory", "1MiB", "--json", json, "--trace", trace));
        Assert.True(code == 0, err + output);
        Assert.Contains("measured vs predicted (2 real steps", output);
        Assert.Contains("tensors alive at the measured peak", output);
        Assert.Contains("prediction confirmed", output);
        var root = JsonDocument.Parse(File.ReadAllText(json)).RootElement;
        var measured = root.GetProperty("measured");
        Assert.Equal(root.GetProperty("prediction").GetProperty("peak_bytes").GetInt64(), measured.GetProperty("peak_bytes").GetInt64());
        Assert.Equal(0.0, measured.GetProperty("error_percent").GetProperty("peak").GetDouble());
        var check = root.GetProperty("max_batch_check");
        Assert.True(check.GetProperty("confirmed").GetBoolean());
        Assert.True(check.GetProperty("batch_ran").GetBoolean());
        Assert.False(check.GetProperty("next_batch_ran").GetBoolean());
        var t = ChromeTraceTests.Validate(trace);
        Assert.Contains(t.Events, e => e.GetProperty("name").GetString() == "step 2 done");
    }

    [Fact]
    public void Train_writes_a_trace_of_the_first_steps()
    {
        string trace = Path.Combine(_dir, "train-trace.json");
        var (code, output, err) = Run(Small("train", "--steps", "3", "--trace", trace, "--trace-steps", "1"));
        Assert.True(code == 0, err + output);
        Assert.Contains("trace ", output);
        var t = ChromeTraceTests.Validate(trace);
        Assert.Contains(t.Events, e => e.GetProperty("name").GetString() == "step 1 done");
        Assert.DoesNotContain(t.Events, e => e.GetProperty("name").GetString() == "step 2 done");
        var (bad, _, badErr) = Run(Small("train", "--steps", "1", "--trace", trace, "--trace-steps", "0"));
        Assert.Equal(2, bad);
        Assert.Contains("--trace-steps must be > 0", badErr);
    }
}
