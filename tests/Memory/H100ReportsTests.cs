using System.Text.Json;
using Memopt.Model;
using Memopt.Model.Memory;
using Memopt.Tensors;

namespace Memopt.Tests.Memory;

/// <summary>
/// The model against `memopt memory --measure` on the H100 for every technique of the study (lab4 and rtx5090 at batch
/// 32; docs/runs/h100-memory-reports/measured.json, the measured figures of each report; the fp32 ones re-measured with
/// the split-K SIMT GEMM in h100-memory-reports-fp32; rtx5090 again with the fused head in h100-memory-reports-fused): the tracked peak, the phase peaks, the pool's reserved bytes and
/// every category at the peak and at its own peak, byte for byte, with the H100's launch shape. A change to a kernel's
/// allocations or to the model that the H100 would see shows here without a GPU.
/// </summary>
public class H100ReportsTests
{
    public static TheoryData<string> Reports()
    {
        var data = new TheoryData<string>();
        if (File() is string path)
            foreach (var run in JsonDocument.Parse(System.IO.File.ReadAllText(path)).RootElement.GetProperty("runs").EnumerateArray())
                data.Add(run.GetProperty("report").GetString()!);
        else data.Add("(docs/runs not found)");
        return data;
    }

    [Theory]
    [MemberData(nameof(Reports))]
    public void Every_technique_measured_on_the_h100_is_predicted_byte_for_byte(string report)
    {
        var path = File();
        Assert.SkipWhen(path is null, "docs/runs is not next to the test binary (a copied test build)");
        var run = JsonDocument.Parse(System.IO.File.ReadAllText(path!)).RootElement.GetProperty("runs").EnumerateArray()
            .Single(r => r.GetProperty("report").GetString() == report);
        int? window = run.GetProperty("window_size").ValueKind == JsonValueKind.Number ? run.GetProperty("window_size").GetInt32() : null;
        var settings = new MemoryModelSettings
        {
            BatchSize = run.GetProperty("batch_size").GetInt32(),
            FlashAttention = run.GetProperty("flash_attention").GetBoolean(),
            WindowSize = window,
            Checkpointing = run.GetProperty("checkpointing").GetBoolean() ? new CheckpointSettings(1) : null,
            // Runs measured with --fused-head carry its chunk rows; the older ones materialized the logits.
            Head = run.TryGetProperty("head_chunk_rows", out var chunk) ? new HeadSettings(chunk.GetInt32()) : null,
            Device = WorkspaceShape.H100,
        }.WithBf16(run.GetProperty("bf16").GetBoolean());
        var p = MemoryModel.Predict(ModelConfig.Preset(run.GetProperty("preset").GetString()!), settings);
        var m = run.GetProperty("measured");
        Assert.Equal(m.GetProperty("peak_bytes").GetInt64(), p.PeakBytes);
        Assert.Equal(m.GetProperty("peak_reserved_bytes").GetInt64(), p.ReservedBytes);
        Assert.Equal(m.GetProperty("forward_peak_bytes").GetInt64(), p.ForwardPeakBytes);
        Assert.Equal(m.GetProperty("backward_peak_bytes").GetInt64(), p.BackwardPeakBytes);
        Assert.Equal(m.GetProperty("optimizer_peak_bytes").GetInt64(), p.OptimizerPeakBytes);
        foreach (var c in MemoryCategories.All)
        {
            Assert.True(m.GetProperty("at_peak").GetProperty(c.Label()).GetInt64() == p.AtPeak[c], $"{report}: {c.Label()} at the peak");
            Assert.True(m.GetProperty("peak_per_category").GetProperty(c.Label()).GetInt64() == p.PeakPerCategory[c], $"{report}: {c.Label()} own peak");
        }
    }

    private static string? File()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string path = Path.Combine(dir.FullName, "docs", "runs", "h100-memory-reports", "measured.json");
            if (System.IO.File.Exists(path)) return path;
        }
        return null;
    }
}
