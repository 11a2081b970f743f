using System.Text.Json;
using Memopt.Model;
using Memopt.Model.Memory;
using Memopt.Tensors;

namespace Memopt.Tests.Memory;

/// <summary>
/// The model against the H100 runs already in the repository (docs/runs: `memopt train` memory files of lab4 at batch
/// 32, rtx5090 at 32 and medium at 8 with 0, 1/4, 1/2 and all blocks checkpointed): the tracker's figures must come
/// out byte for byte with the H100's launch shape, and the driver's figure within the spread of the context overhead.
/// </summary>
public class H100RunsTests
{
    /// <summary>
    /// Driver used minus pool reserved over these runs: 552.54–554.51 MB (the default is the lab4 b32 run's), so a
    /// prediction of the driver figure is good to 2 MB; 0.2% of the smallest run's 1.99 GB.
    /// </summary>
    private const double DriverTolerance = 0.002;

    public static TheoryData<string, string, int, int, bool> Runs => new()
    {
        { "h100-lab4-final/synthetic_baseline_memory.json", "lab4", 32, 0, false },
        { "h100-lab4-final/synthetic_baseline-untied_memory.json", "lab4", 32, 0, true },
        { "h100-checkpointing/medium/synthetic_off_memory.json", "medium", 8, 0, false },
        { "h100-checkpointing/medium/synthetic_every4_memory.json", "medium", 8, 4, false },
        { "h100-checkpointing/medium/synthetic_every2_memory.json", "medium", 8, 2, false },
        { "h100-checkpointing/medium/synthetic_every1_memory.json", "medium", 8, 1, false },
        { "h100-checkpointing/rtx5090/synthetic_every4_memory.json", "rtx5090", 32, 4, false },
        { "h100-checkpointing/rtx5090/synthetic_every2_memory.json", "rtx5090", 32, 2, false },
        { "h100-checkpointing/rtx5090/synthetic_every1_memory.json", "rtx5090", 32, 1, false },
    };

    private static string? RunsDirectory()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (Directory.Exists(Path.Combine(dir.FullName, "docs", "runs"))) return Path.Combine(dir.FullName, "docs", "runs");
        return null;
    }

    [Theory]
    [MemberData(nameof(Runs))]
    public void Recorded_h100_runs_are_predicted_byte_for_byte(string file, string preset, int batch, int every, bool untied)
    {
        var runs = RunsDirectory();
        Assert.SkipWhen(runs is null, "docs/runs is not next to the test binary (a copied test build)");
        var m = JsonDocument.Parse(File.ReadAllText(Path.Combine(runs!, file))).RootElement.GetProperty("memory");
        var config = ModelConfig.Preset(preset);
        if (untied) config = config with { TiedHead = false };
        var p = MemoryModel.Predict(config, new MemoryModelSettings
        {
            BatchSize = batch, Checkpointing = every > 0 ? new CheckpointSettings(every) : null, Device = WorkspaceShape.H100,
        });
        Assert.Equal(m.GetProperty("peak_bytes").GetInt64(), p.PeakBytes);
        Assert.Equal(m.GetProperty("peak_reserved_bytes").GetInt64(), p.ReservedBytes);
        Assert.Equal(m.GetProperty("forward_peak_bytes").GetInt64(), p.ForwardPeakBytes);
        Assert.Equal(m.GetProperty("backward_peak_bytes").GetInt64(), p.BackwardPeakBytes);
        Assert.Equal(m.GetProperty("optimizer_peak_bytes").GetInt64(), p.OptimizerPeakBytes);
        Assert.Equal(m.GetProperty("parameter_bytes").GetInt64(), 4 * p.ParameterCount);
        foreach (var c in MemoryCategories.All)
        {
            Assert.True(m.GetProperty("at_peak_per_category").GetProperty(c.Label()).GetInt64() == p.AtPeak[c], $"{file}: {c.Label()} at the peak");
            Assert.True(m.GetProperty("peak_per_category").GetProperty(c.Label()).GetInt64() == p.PeakPerCategory[c], $"{file}: {c.Label()} own peak");
        }
        long driver = m.GetProperty("driver_used_bytes").GetInt64();
        Assert.True(Math.Abs(p.DriverBytes - driver) <= DriverTolerance * driver, $"{file}: driver predicted {p.DriverBytes} B, measured {driver} B");
    }
}
