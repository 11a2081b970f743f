using System.Text.Json;
using Memopt.Tests.Harness;

namespace Memopt.Tests.Runner;

/// <summary>`memopt bench gemm` on the CPU: the case syntax (transposes, batch), the SIMT rows and the JSON records.</summary>
public class BenchCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("memopt-bench-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

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

    [Theory]
    [InlineData("--sizes", "4x4x4@0", "batch")]
    [InlineData("--simt-tiles", "t16x16", "--simt-tiles")]
    public void Bad_gemm_bench_arguments_name_the_problem(string flag, string value, string message)
    {
        var (code, output, error) = Cli.Run("bench", "gemm", "--device", "cpu", flag, value, "--repeats", "1");
        Assert.NotEqual(0, code);
        Assert.Contains(message, output + error);
    }
}
