using Memopt.Tests.Harness;
using Memopt.Model;
using Memopt.Model.Memory;
using Memopt.Runner.Experiments;
using Technique = Memopt.Runner.Experiments.Technique;
using static Memopt.Tests.Runner.ExperimentsTestKit;

namespace Memopt.Tests.Runner;

/// <summary>
/// MaxBatchPrediction: the memory model for what a max-batch probe runs (technique flags + --train-args, as `train`
/// parses them), against the criterion the child's --memory-limit enforces (pool blocks, no context), on the device
/// --device names. The settings here are written out by hand, so a flag that does not reach the model shows.
/// </summary>
public class MaxBatchPredictionTests
{
    /// <summary>The tiny model of the experiments tests (TinyTrainArgs).</summary>
    private static readonly ModelConfig Tiny = ModelConfig.Preset("lab4") with { Layers = 1, DModel = 16, Heads = 2, DFF = 32, SeqLen = 16, VocabSize = 300 };

    private static MaxBatchOptions Options(params string[] extra) =>
        Parse<MaxBatchOptions>(["max-batch", $"--train-args={TinyTrainArgs}", .. extra]);

    private static Technique Named(string label) => Techniques.Select([8], [label], [])[0];

    [Theory]
    [InlineData("baseline")]
    [InlineData("checkpointing")]
    [InlineData("bf16_flash")]
    public void The_prediction_is_the_largest_batch_whose_pool_blocks_fit_the_limit(string label)
    {
        const long limit = 320 * 1024;
        var forecast = MaxBatchPrediction.Predict(Options("--device", "cpu", "--memory-limit", "320KiB"), Named(label));
        var settings = new MemoryModelSettings
        {
            Device = WorkspaceShape.CpuAccelerator, ContextBytes = 0,
            Checkpointing = label == "checkpointing" ? new CheckpointSettings(1) : null, FlashAttention = label == "bf16_flash",
        }.WithBf16(label == "bf16_flash");
        long PoolPeak(int b) => MemoryModel.Predict(Tiny, settings with { BatchSize = b }).PoolPeakBytes;

        int batch = Assert.IsType<int>(forecast.MaxBatch);
        Assert.True(batch >= 1, forecast.ToString());
        Assert.True(PoolPeak(batch) <= limit, $"{label}: batch {batch} needs {PoolPeak(batch)} B of pool blocks");
        Assert.True(PoolPeak(batch + 1) > limit, $"{label}: batch {batch + 1} fits too ({PoolPeak(batch + 1)} B)");
        Assert.Contains("pool blocks ≤ 320 KiB", forecast.Basis);
        Assert.Contains("CPU accelerator", forecast.Basis);
    }

    [Fact]
    public void Train_args_and_the_device_reach_the_model()
    {
        // --checkpoint-scope from --train-args changes what checkpointing keeps.
        var mlp = Parse<MaxBatchOptions>("max-batch", "--device", "cpu", "--memory-limit", "320KiB", $"--train-args={TinyTrainArgs} --checkpoint-scope mlp");
        var settings = new MemoryModelSettings { Device = WorkspaceShape.CpuAccelerator, ContextBytes = 0, Checkpointing = new CheckpointSettings(1, CheckpointScope.Mlp) };
        Assert.Equal(MemoryModel.MaxBatch(Tiny, settings, 320 * 1024), MaxBatchPrediction.Predict(mlp, Named("checkpointing")).MaxBatch);

        // cuda and auto: the H100's launch shape (cooperative scratch, tensor-core split-K), still no context in a pool limit.
        var lab4 = new MemoryModelSettings { Device = WorkspaceShape.H100, ContextBytes = 0 }.WithBf16();
        int expected = MemoryModel.MaxBatch(ModelConfig.Preset("lab4"), lab4, 2L << 30);
        foreach (var device in new[] { "cuda", "auto" })
        {
            var forecast = MaxBatchPrediction.Predict(Parse<MaxBatchOptions>("max-batch", "--device", device, "--memory-limit", "2GiB"), Named("bf16"));
            Assert.Equal(expected, forecast.MaxBatch);
            Assert.Contains("H100", forecast.Basis);
        }
    }

    [Fact]
    public void Without_a_limit_or_with_flags_train_refuses_there_is_no_prediction_and_it_says_why()
    {
        var cpu = MaxBatchPrediction.Predict(Options("--device", "cpu"), Named("baseline"));
        Assert.Null(cpu.MaxBatch);
        Assert.Contains("no --memory-limit", cpu.Basis);
        // --device auto opens the device once to read its memory; with no CUDA GPU (CI) there is none to read.
        var auto = MaxBatchPrediction.Predict(Options(), Named("baseline"));
        if (TestDevice.Get().IsCuda)
        {
            Assert.NotNull(auto.MaxBatch);
            Assert.Contains("CUDA context", auto.Basis);
        }
        else
        {
            Assert.Null(auto.MaxBatch);
            Assert.Contains("no CUDA GPU", auto.Basis);
            Assert.StartsWith("n/a (no --memory-limit", auto.ToString());
        }

        var dropout = Parse<MaxBatchOptions>("max-batch", "--memory-limit", "1GiB", $"--train-args={TinyTrainArgs} --dropout 0.1");
        var refused = MaxBatchPrediction.Predict(dropout, Named("bf16_flash"));
        Assert.Null(refused.MaxBatch);
        Assert.Contains("--flash-attn does not support attention dropout", refused.Basis);
    }
}
