using FsCheck;
using FsCheck.Fluent;
using FsCheck.Xunit;
using Memopt.Runner.Experiments;

namespace Memopt.Tests.Runner;

/// <summary>The parts of experiments and max-batch that need no child process: the matrix, the search, outcome classification.</summary>
public class ExperimentPlanningTests
{
    [Fact]
    public void Default_matrix_is_the_studys_with_windows_T_over_4_and_T_over_2()
    {
        var t = Techniques.Select(Techniques.DefaultWindowSizes(256), [], []);
        Assert.Equal(["baseline", "bf16", "bf16_flash", "bf16_flash_window64", "bf16_flash_window128", "checkpointing", "combined"], t.Select(x => x.Label));
        Assert.Equal(["--bf16", "--flash-attn", "--window-size", "64"], t.Single(x => x.Label == "bf16_flash_window64").Flags);
        Assert.Equal(["--bf16", "--flash-attn", "--window-size", "64", "--gradient-checkpointing"], t.Single(x => x.Label == "combined").Flags);
        Assert.Empty(t.Single(x => x.Label == "baseline").Flags);
    }

    [Fact]
    public void Only_and_skip_name_families_or_labels_and_unknown_names_are_rejected()
    {
        int[] w = [4, 8];
        Assert.Equal(["window4", "window8"], Techniques.Select(w, ["window"], []).Select(x => x.Label));
        Assert.Equal(["bf16_flash_window8"], Techniques.Select(w, ["bf16_flash_window8"], []).Select(x => x.Label));
        Assert.Equal(["baseline", "checkpointing", "combined"], Techniques.Select(w, [], ["bf16", "bf16_flash", "bf16_flash_window"]).Select(x => x.Label));
        Assert.Contains("unknown technique 'fp8'", Assert.Throws<ArgumentException>(() => Techniques.Select(w, ["fp8"], [])).Message);
        Assert.Contains("leave no technique", Assert.Throws<ArgumentException>(() => Techniques.Select(w, ["baseline"], ["baseline"])).Message);
        Assert.Contains("must all be > 0", Assert.Throws<ArgumentException>(() => Techniques.Select([0], [], [])).Message);
    }

    [Fact]
    public void Technique_flags_map_back_to_the_matrix_names()
    {
        Assert.Equal("baseline", Techniques.FromFlags(false, false, null, false).Label);
        Assert.Equal("bf16_flash_window64", Techniques.FromFlags(true, true, 64, false).Label);
        Assert.Equal("combined", Techniques.FromFlags(true, true, 64, true).Family);
        Assert.Equal("window32", Techniques.FromFlags(false, false, 32, false).Label);
        Assert.Equal("flash_attn", Techniques.FromFlags(false, true, null, false).Label);
    }

    /// <summary>
    /// Against a device where exactly the batches ≤ fit run: the search returns fit (or cap / none_fits at the edges),
    /// never probes a batch twice, needs at most 2·log2(cap)+2 probes, and the known outcomes from the matrix are used.
    /// </summary>
    [Property(MaxTest = 300)]
    public void Max_batch_search_finds_the_boundary_in_logarithmically_many_probes(NonNegativeInt fitsRaw, PositiveInt capRaw, bool seed)
    {
        int cap = 1 + capRaw.Get % 5000, fits = fitsRaw.Get % (cap + 20);
        var probed = new List<int>();
        ProbeOutcome Probe(int b)
        {
            probed.Add(b);
            return new ProbeOutcome(b, b <= fits ? RunStatus.Ok : RunStatus.Oom, null, 0);
        }
        ProbeOutcome[] known = seed ? [new(Math.Min(cap, 32), Math.Min(cap, 32) <= fits ? RunStatus.Ok : RunStatus.Oom, null, 0, "matrix")] : [];
        var r = MaxBatchSearch.Run(Probe, 1, cap, 1, known);
        Assert.True(probed.Distinct().Count() == probed.Count, $"probed twice: {string.Join(",", probed)}");
        Assert.True(probed.Count <= 2 * Math.Log2(cap) + 2, $"{probed.Count} probes for cap {cap}");
        Assert.True(probed.All(b => b >= 1 && b <= cap));
        if (fits >= cap) { Assert.Equal(MaxBatchSearch.AtCap, r.Status); Assert.Equal(cap, r.MaxBatch); }
        else if (fits == 0) { Assert.Equal(MaxBatchSearch.NoneFits, r.Status); Assert.Null(r.MaxBatch); Assert.Equal(1, r.FirstOom); }
        else { Assert.Equal(MaxBatchSearch.Found, r.Status); Assert.Equal(fits, r.MaxBatch); Assert.Equal(fits + 1, r.FirstOom); }
    }

    [Fact]
    public void Max_batch_search_stops_at_a_probe_that_fails_for_another_reason_and_honours_precision()
    {
        var r = MaxBatchSearch.Run(b => new ProbeOutcome(b, b < 8 ? RunStatus.Ok : RunStatus.Failed, "validation split too small", 0));
        Assert.Equal(MaxBatchSearch.Failed, r.Status);
        Assert.Equal(4, r.MaxBatch);
        Assert.Contains("probe at batch 8 failed: validation split too small", r.Message);

        var coarse = MaxBatchSearch.Run(b => new ProbeOutcome(b, b <= 100 ? RunStatus.Ok : RunStatus.Oom, null, 0), precision: 8);
        Assert.True(coarse.FirstOom - coarse.MaxBatch <= 8 && coarse.MaxBatch <= 100 && coarse.FirstOom > 100);
    }

    [Theory]
    [InlineData(0, true, "", "ok", null)]
    [InlineData(0, false, "", "failed", "exited 0 but wrote no metrics file")]
    [InlineData(2, false, "memopt: out of device memory: ffn.up asked for 2.00 MiB ([4, 16, 32]); budget 1.00 MiB", "oom", "out of device memory: ffn.up asked for 2.00 MiB ([4, 16, 32]); budget 1.00 MiB")]
    [InlineData(134, false, "Unhandled exception. Memopt.Tensors.OutOfDeviceMemoryException: out of device memory: wte asked for 1 KiB\n   at X()", "oom", "Unhandled exception. Memopt.Tensors.OutOfDeviceMemoryException: out of device memory: wte asked for 1 KiB")]
    [InlineData(2, false, "data: ready\nmemopt: --flash-attn is not supported yet (it arrives with its own issue); run without it", "failed", "--flash-attn is not supported yet (it arrives with its own issue); run without it")]
    [InlineData(139, false, "step 1/10 loss 9.2\nUnhandled exception. System.AccessViolationException: bad\n   at Y()", "failed", "Unhandled exception. System.AccessViolationException: bad")]
    [InlineData(137, false, "", "failed", "exit code 137 without output")]
    [InlineData(1, false, "memopt 1.0.0\nERROR(S):\n  Option 'steps' is defined multiple times.\n\n  --technique   Label\n  --version  Display version information.", "failed", "Option 'steps' is defined multiple times.")]
    public void Child_outcomes_are_classified_by_exit_code_and_message(int exit, bool wroteMetrics, string output, string status, string? message)
    {
        var (s, m) = RunOutcome.Classify(new ChildResult(exit, 1, output.Split('\n'), false, false), wroteMetrics);
        Assert.Equal(status, s.Label());
        Assert.Equal(message, m);
    }

    [Fact]
    public void Pareto_front_keeps_points_no_other_is_both_faster_and_lighter()
    {
        var front = ExperimentPlots.ParetoFront([(10, 5), (20, 3), (15, 6), (30, 3), (5, 9)]);
        Assert.Equal([(5.0, 9.0), (10.0, 5.0), (20.0, 3.0)], front.OrderBy(p => p.X));
    }

    [Fact]
    public void Train_args_split_on_whitespace_and_group_quotes()
    {
        Assert.Equal(["--lr", "3e-4", "--data", "my corpus.txt", "--x", ""], ArgSplitter.Split(" --lr 3e-4  --data 'my corpus.txt' --x \"\""));
    }

    [Fact]
    public void The_dotnet_host_is_found_for_running_memopt_dll()
    {
        var p = ChildProgram.ForAssembly(typeof(Memopt.Runner.Program).Assembly.Location);
        Assert.Equal("dotnet", Path.GetFileNameWithoutExtension(p.FileName));
        Assert.True(Path.IsPathRooted(p.FileName) ? File.Exists(p.FileName) : true, p.FileName);
        Assert.EndsWith("memopt.dll", Assert.Single(p.PrefixArgs));
    }
}
