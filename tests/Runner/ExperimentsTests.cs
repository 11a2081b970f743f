using System.Text.Json;
using Memopt.Runner.Experiments;
using static Memopt.Tests.Runner.ExperimentsTestKit;

namespace Memopt.Tests.Runner;

/// <summary>
/// `memopt experiments` and `memopt compare` end to end: real `memopt train` children on a tiny model (files and their
/// fields, skip-if-done, --force, out-of-memory under a budget as a result, max batch from the matrix), and fake children
/// for what a real one cannot be made to do on demand (crash, hang).
/// </summary>
public class ExperimentsTests(SharedDataCache cache) : IClassFixture<SharedDataCache>, IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("memopt-exp").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Results => Path.Combine(_dir, "results");

    private string[] Experiments(params string[] extra) =>
    [
        "experiments", "--device", "cpu", "--steps", "2", "--cache-dir", cache.Dir, "--results-dir", Results,
        $"--train-args={TinyTrainArgs}", .. extra,
    ];

    private static JsonElement Summary(string results) =>
        JsonDocument.Parse(File.ReadAllText(Path.Combine(results, "experiment_summary.json"))).RootElement;

    private static JsonElement Run(JsonElement summary, string technique, int batch) =>
        summary.GetProperty("runs").EnumerateArray().Single(r => r.GetProperty("technique").GetString() == technique && r.GetProperty("batch_size").GetInt32() == batch);

    /// <summary>
    /// The whole pipeline on real children, under a budget that fits batch 2 of every technique and batch 4 only with
    /// checkpointing (a study's typical finding): out-of-memory runs are recorded and the matrix goes on; max batch
    /// per technique reuses the matrix's runs as probes; compare writes the report and every plot; a second invocation
    /// runs nothing; --force runs again what it selects. One test, because each child costs ~3 s.
    /// </summary>
    [Fact]
    public void Matrix_under_a_budget_then_compare_plots_skip_and_force_with_real_children()
    {
        var program = RealMemopt();
        string[] matrix = Experiments("--batch-sizes", "2,4", "--only", "baseline,checkpointing,window", "--window-sizes", "8",
            "--memory-limit", TightBudget, "--max-batch", "--max-batch-cap", "4");
        var output = new StringWriter();
        int code = ExperimentsCommand.Run(Parse<ExperimentsOptions>(matrix), program, output);
        Assert.True(code == 0, "out of memory is a result, not a failure\n" + output);

        var summary = Summary(Results);
        Assert.Equal(1, summary.GetProperty("schema").GetInt32());
        Assert.Equal("synthetic", summary.GetProperty("dataset").GetString());
        Assert.Equal(TightBudget, summary.GetProperty("memory_limit").GetString());
        Assert.Equal(6, summary.GetProperty("runs").GetArrayLength());
        var ok = new[] { ("baseline", 2), ("checkpointing", 2), ("window8", 2), ("checkpointing", 4) };
        foreach (var (technique, batch) in ok)
        {
            var run = Run(summary, technique, batch);
            Assert.True("ok" == run.GetProperty("status").GetString(), $"{technique} b{batch}: {run}");
            Assert.Equal(0, run.GetProperty("exit_code").GetInt32());
            var flags = run.GetProperty("flags").EnumerateArray().Select(f => f.GetString()!).ToArray();
            Assert.Equal(technique switch { "baseline" => [], "checkpointing" => ["--gradient-checkpointing"], _ => new[] { "--window-size", "8" } }, flags);
            var m = run.GetProperty("metrics");
            foreach (var field in new[] { "parameters", "val_perplexity", "step_ms_median", "epoch_seconds", "peak_memory_bytes", "peak_reserved_bytes", "tokens_per_second" })
                Assert.True(m.GetProperty(field).GetDouble() > 0, $"{technique} b{batch}: metrics.{field}");
            Assert.Equal(2L * batch * 16, m.GetProperty("tokens_seen").GetInt64());
            Assert.Equal(m.GetProperty("peak_memory_bytes").GetInt64(), m.GetProperty("at_peak_per_category").EnumerateObject().Sum(p => p.Value.GetInt64()));
            Assert.True(File.Exists(Path.Combine(Results, run.GetProperty("metrics_file").GetString()!)));
            Assert.Contains("val loss", File.ReadAllText(Path.Combine(Results, run.GetProperty("log").GetString()!)));
            Assert.False(File.Exists(Path.Combine(Results, run.GetProperty("run_dir").GetString()!, "checkpoint.safetensors")), "checkpoints are deleted unless --keep-checkpoints");
        }
        foreach (var technique in new[] { "baseline", "window8" })
        {
            var oom = Run(summary, technique, 4);
            Assert.Equal("oom", oom.GetProperty("status").GetString());
            Assert.Contains("out of device memory", oom.GetProperty("message").GetString());
            Assert.Equal(Memopt.Runner.Commands.ExitCodes.OutOfMemory, oom.GetProperty("exit_code").GetInt32());
            Assert.Equal(JsonValueKind.Null, oom.GetProperty("metrics").ValueKind);
            Assert.Contains("out of device memory", File.ReadAllText(Path.Combine(Results, oom.GetProperty("log").GetString()!)));
        }
        Assert.True(Run(summary, "checkpointing", 2).GetProperty("metrics").GetProperty("peak_memory_bytes").GetInt64()
                    < Run(summary, "baseline", 2).GetProperty("metrics").GetProperty("peak_memory_bytes").GetInt64(),
            "checkpointing keeps less for backward than the baseline");

        // Max batch: baseline and window8 fit 2 and not 4, so one probe (3) decides; checkpointing fits the cap.
        var maxBatch = summary.GetProperty("max_batch").EnumerateArray().ToDictionary(m => m.GetProperty("technique").GetString()!);
        Assert.Equal(["baseline", "checkpointing", "window8"], maxBatch.Keys.Order());
        foreach (var technique in new[] { "baseline", "window8" })
        {
            var m = maxBatch[technique];
            Assert.Equal("ok", m.GetProperty("status").GetString());
            int found = m.GetProperty("max_batch").GetInt32();
            Assert.InRange(found, 2, 3);
            Assert.Equal(found + 1, m.GetProperty("first_oom_batch").GetInt32());
            Assert.True(found == m.GetProperty("predicted_max_batch").GetInt32(), $"{technique}: the memory model's prediction is the batch found: {m}");
            var probes = m.GetProperty("probes").EnumerateArray().ToList();
            Assert.Equal(2, probes.Count(p => p.GetProperty("source").GetString() == "matrix"));
            Assert.Equal(3, Assert.Single(probes, p => p.GetProperty("source").GetString() == "probe").GetProperty("batch_size").GetInt32());
        }
        Assert.Equal("cap", maxBatch["checkpointing"].GetProperty("status").GetString());
        Assert.Equal(4, maxBatch["checkpointing"].GetProperty("max_batch").GetInt32());

        // The memory model's prediction for every technique, beside the search's answer.
        var predictions = summary.GetProperty("max_batch_predictions").EnumerateArray().ToDictionary(p => p.GetProperty("technique").GetString()!);
        Assert.Equal(["baseline", "checkpointing", "window8"], predictions.Keys.Order());
        foreach (var (technique, p) in predictions)
        {
            Assert.Contains("pool blocks ≤ 320 KiB", p.GetProperty("basis").GetString());
            Assert.Equal(maxBatch[technique].GetProperty("predicted_max_batch").GetInt32(), p.GetProperty("max_batch").GetInt32());
        }
        Assert.True(predictions["checkpointing"].GetProperty("max_batch").GetInt32() >= 4, "checkpointing fits the cap 4, and so it is predicted");

        // compare at batch 2 (where every technique ran): the table and the analysis in text, CSV and Markdown, and
        // every plot as a PNG; a PyTorch reference directory in the same metrics format appears beside memopt's rows.
        string pytorch = Path.Combine(_dir, "pytorch");
        Directory.CreateDirectory(pytorch);
        foreach (var f in Directory.GetFiles(Path.Combine(Results, "runs", "baseline_b2"), "*.json"))
            File.Copy(f, Path.Combine(pytorch, Path.GetFileName(f)));
        var compareOut = new StringWriter();
        Assert.Equal(0, CompareCommand.Run(Parse<CompareOptions>("compare", "--results-dir", Results, "--batch", "2", "--pytorch", pytorch), compareOut));
        string report = File.ReadAllText(Path.Combine(Results, "comparison_report.txt"));
        Assert.StartsWith(report, compareOut.ToString());
        foreach (var column in ComparisonReport.Columns) Assert.Contains(column, report);
        Assert.Contains("lowest peak memory: checkpointing", report);
        Assert.Contains("Where the memory goes at the peak (batch 2", report);
        Assert.Contains("saved_for_backward", report);
        Assert.Contains("Out of memory: baseline b4, window8 b4", report);
        Assert.Contains($"Largest batch that fits in {TightBudget}: checkpointing, 4", report);
        var csv = File.ReadAllLines(Path.Combine(Results, "comparison_report.csv"));
        var header = csv[0].Split(',');
        Assert.StartsWith("source,technique,family,window_size,batch_size,status", csv[0]);
        Assert.Equal(1 + 6 + 1, csv.Length);
        Assert.Single(csv, l => l.StartsWith("pytorch,baseline,", StringComparison.Ordinal));
        var checkpointing2 = csv.Single(l => l.StartsWith("memopt,checkpointing,checkpointing,,2,ok,", StringComparison.Ordinal)).Split(',');
        Assert.True(double.Parse(checkpointing2[Array.IndexOf(header, "memory_reduction_pct")], System.Globalization.CultureInfo.InvariantCulture) > 0);
        Assert.Equal("4", checkpointing2[Array.IndexOf(header, "max_batch")]);
        // (The ok rows: an out-of-memory row's message holds commas, quoted, so a plain split would shift its cells.)
        foreach (var line in csv.Where(l => l.StartsWith("memopt,", StringComparison.Ordinal) && l.Contains(",ok,")).Select(l => l.Split(',')))
        {
            Assert.Equal(predictions[line[1]].GetProperty("max_batch").GetInt32().ToString(System.Globalization.CultureInfo.InvariantCulture), line[Array.IndexOf(header, "predicted_max_batch")]);
            Assert.Equal("true", line[Array.IndexOf(header, "prediction_within_step")]);
        }
        Assert.Contains("Predicted largest batch (memory model; pool blocks ≤ 320 KiB", report);
        Assert.Contains("within one search step of the measured largest batch for 3 of 3 searched techniques", report);
        var md = File.ReadAllText(Path.Combine(Results, "comparison_report.md"));
        Assert.Contains("| source | technique | batch |", md);
        Assert.Contains("## Analysis", md);
        foreach (var png in ExperimentPlots.FileNames)
            Assert.True(IsPng(Path.Combine(Results, "plots", png)), $"{png} is not a PNG");

        // The same command again finds every run and search done (an OOM is a kept result) and starts no child.
        var metricsFile = Path.Combine(Results, Run(summary, "baseline", 2).GetProperty("metrics_file").GetString()!);
        var written = File.GetLastWriteTimeUtc(metricsFile);
        output = new StringWriter();
        Assert.Equal(0, ExperimentsCommand.Run(Parse<ExperimentsOptions>(matrix), program, output));
        Assert.Contains("6 already done, 0 to run", output.ToString());
        Assert.Equal(3, output.ToString().Split("already searched").Length - 1);
        Assert.Equal(written, File.GetLastWriteTimeUtc(metricsFile));

        // --force runs again what it selects, and the summary keeps the others.
        output = new StringWriter();
        Assert.Equal(0, ExperimentsCommand.Run(Parse<ExperimentsOptions>(Experiments(
            "--batch-sizes", "2", "--only", "baseline", "--memory-limit", TightBudget, "--force")), program, output));
        Assert.Contains("0 already done, 1 to run", output.ToString());
        Assert.NotEqual(written, File.GetLastWriteTimeUtc(metricsFile));
        Assert.Equal(6, Summary(Results).GetProperty("runs").GetArrayLength());
        Assert.Equal(3, Summary(Results).GetProperty("max_batch").GetArrayLength());
        // Without --max-batch the prediction is still made, for the techniques the summary keeps too.
        Assert.Equal(3, Summary(Results).GetProperty("max_batch_predictions").GetArrayLength());
        Assert.Contains("memory model, largest batch: baseline ", output.ToString());
    }

    [Fact]
    public void A_crashed_child_is_recorded_as_failed_the_matrix_goes_on_and_a_rerun_retries_only_it()
    {
        var (program, calls) = FakeMemopt(_dir, """
            case "$tech" in
              checkpointing) echo "Unhandled exception. System.InvalidOperationException: boom" >&2; echo "   at Memopt.Somewhere()" >&2; exit 134 ;;
              window*) echo "memopt: out of device memory: attention.scores asked for 1.00 KiB" >&2; exit 2 ;;
            esac
            """);
        var options = Parse<ExperimentsOptions>("experiments", "--results-dir", Results, "--batch-sizes", "2", "--only", "checkpointing,baseline,window", "--window-sizes", "8");
        var output = new StringWriter();
        Assert.Equal(1, ExperimentsCommand.Run(options, program, output));
        Assert.Contains("1 ok, 1 out of memory, 1 failed", output.ToString());

        var summary = Summary(Results);
        var crashed = Run(summary, "checkpointing", 2);
        Assert.Equal("failed", crashed.GetProperty("status").GetString());
        Assert.Equal(134, crashed.GetProperty("exit_code").GetInt32());
        Assert.Equal("Unhandled exception. System.InvalidOperationException: boom", crashed.GetProperty("message").GetString());
        Assert.Equal("oom", Run(summary, "window8", 2).GetProperty("status").GetString());
        Assert.Equal("ok", Run(summary, "baseline", 2).GetProperty("status").GetString());
        Assert.Equal(3, File.ReadAllLines(calls).Length);

        Assert.Equal(1, ExperimentsCommand.Run(options, program, new StringWriter()));
        var rerun = File.ReadAllLines(calls).Skip(3).ToList();
        Assert.Single(rerun);
        Assert.Contains("--gradient-checkpointing", rerun[0]);
    }

    [Fact]
    public void Results_of_another_configuration_leave_the_summary_and_run_again()
    {
        var (program, calls) = FakeMemopt(_dir, "");
        string[] Args(string steps) => ["experiments", "--results-dir", Results, "--batch-sizes", "2", "--only", "baseline", "--steps", steps];
        Assert.Equal(0, ExperimentsCommand.Run(Parse<ExperimentsOptions>(Args("2")), program, new StringWriter()));
        Assert.Equal(0, ExperimentsCommand.Run(Parse<ExperimentsOptions>(Args("2")), program, new StringWriter()));
        Assert.Single(File.ReadAllLines(calls));
        var output = new StringWriter();
        Assert.Equal(0, ExperimentsCommand.Run(Parse<ExperimentsOptions>(Args("3")), program, output));
        Assert.Contains("1 result(s) in", output.ToString());
        Assert.Contains("came from another configuration", output.ToString());
        Assert.Equal(2, File.ReadAllLines(calls).Length);
        Assert.Contains("--steps 3", File.ReadAllLines(calls)[1]);
        var run = Assert.Single(Summary(Results).GetProperty("runs").EnumerateArray());
        Assert.Contains("3", run.GetProperty("args").EnumerateArray().SkipWhile(a => a.GetString() != "--steps").Skip(1).Select(a => a.GetString()));
        var prediction = Assert.Single(Summary(Results).GetProperty("max_batch_predictions").EnumerateArray());
        Assert.Equal(JsonValueKind.Null, prediction.GetProperty("max_batch").ValueKind);
        Assert.Contains("no --memory-limit", prediction.GetProperty("basis").GetString());
        Assert.Contains("memory model: no max-batch prediction (no --memory-limit", output.ToString());
    }

    [Fact]
    public void Techniques_not_supported_yet_and_hung_children_are_failed_runs_with_their_reason()
    {
        var (program, _) = FakeMemopt(_dir, """
            case "$tech" in
              bf16) echo "memopt: --bf16 is not supported yet (it arrives with its own issue); run without it" >&2; exit 2 ;;
              checkpointing) sleep 30 ;;
              baseline) exit 0 ;;
            esac
            """);
        var options = Parse<ExperimentsOptions>("experiments", "--results-dir", Results, "--batch-sizes", "2", "--only", "bf16,checkpointing,baseline", "--run-timeout", "1");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        Assert.Equal(1, ExperimentsCommand.Run(options, program, new StringWriter()));
        Assert.True(clock.Elapsed.TotalSeconds < 15, "the hung child was killed at its timeout");
        var summary = Summary(Results);
        Assert.Equal("--bf16 is not supported yet (it arrives with its own issue); run without it", Run(summary, "bf16", 2).GetProperty("message").GetString());
        var hung = Run(summary, "checkpointing", 2);
        Assert.Equal("failed", hung.GetProperty("status").GetString());
        Assert.StartsWith("timed out", hung.GetProperty("message").GetString());
        Assert.Equal(JsonValueKind.Null, hung.GetProperty("exit_code").ValueKind);
        Assert.Equal("exited 0 but wrote no metrics file", Run(summary, "baseline", 2).GetProperty("message").GetString());
    }

    /// <summary>
    /// With --memory-limit the search starts at the memory model's prediction: against a child that fits exactly up to
    /// the predicted batch, two probes confirm it. Without a limit there is no prediction, and the search doubles from
    /// --start, then bisects.
    /// </summary>
    [Fact]
    public void Max_batch_command_starts_at_the_prediction_and_without_one_doubles_from_start()
    {
        var options = Parse<MaxBatchOptions>("max-batch", "--results-dir", Results, "--gradient-checkpointing", "--memory-limit", "24GiB");
        var forecast = MaxBatchPrediction.Predict(options, Techniques.FromFlags(false, false, null, true));
        int predicted = forecast.MaxBatch ?? throw new InvalidOperationException(forecast.ToString());
        Assert.InRange(predicted, 2, 4095); // lab4 with checkpointing in a 24 GiB pool, under the default cap 4096
        var (program, calls) = FakeMemopt(_dir, $$"""
            if [ "$batch" -gt {{predicted}} ]; then echo "memopt: out of device memory: ffn asked for 1.00 MiB" >&2; exit 2; fi
            """);
        var output = new StringWriter();
        int code = MaxBatchCommand.Run(options, program, output);
        Assert.True(code == 0, output.ToString());
        Assert.Contains($"max batch  {predicted} (batch {predicted + 1} runs out of memory; 2 probes)", output.ToString());
        Assert.Contains($"predicted  {forecast}", output.ToString());
        var record = JsonDocument.Parse(File.ReadAllText(Path.Combine(Results, "max_batch", "checkpointing.json"))).RootElement;
        Assert.Equal(predicted, record.GetProperty("max_batch").GetInt32());
        Assert.Equal(predicted, record.GetProperty("predicted_max_batch").GetInt32());
        Assert.Equal(forecast.Basis, record.GetProperty("prediction_basis").GetString());
        Assert.Equal("24GiB", record.GetProperty("memory_limit").GetString());
        Assert.Equal([$"{predicted}", $"{predicted + 1}"], ProbedBatches(calls));
        Assert.All(File.ReadAllLines(calls), l => Assert.Contains("--gradient-checkpointing", l));
        Assert.All(File.ReadAllLines(calls), l => Assert.Contains("--memory-limit 24GiB", l));
        Assert.False(Directory.EnumerateDirectories(Path.Combine(Results, "max_batch", "checkpointing")).Any(), "probe result directories are removed");

        string plain = Path.Combine(_dir, "no-limit");
        Directory.CreateDirectory(plain);
        var (doubling, doublingCalls) = FakeMemopt(plain, """
            if [ "$batch" -gt 5 ]; then echo "memopt: out of device memory: ffn asked for 1.00 MiB" >&2; exit 2; fi
            """);
        output = new StringWriter();
        Assert.Equal(0, MaxBatchCommand.Run(Parse<MaxBatchOptions>("max-batch", "--results-dir", Path.Combine(plain, "results"), "--gradient-checkpointing", "--cap", "64"), doubling, output));
        Assert.Contains("max batch  5 (batch 6 runs out of memory", output.ToString());
        Assert.Contains("predicted  n/a (no --memory-limit", output.ToString());
        Assert.Equal(["1", "2", "4", "8", "6", "5"], ProbedBatches(doublingCalls));
    }

    private static List<string> ProbedBatches(string calls) =>
        File.ReadAllLines(calls).Select(l => l.Split(' ').SkipWhile(a => a != "--batch-size").ElementAt(1)).ToList();

    [Theory]
    [InlineData("--train-args=--batch-size 3", "--train-args may not contain --batch-size")]
    [InlineData("--train-args=--no-such-option 1", "unknown option 'no-such-option'")]
    [InlineData("--only=flash", "unknown technique 'flash'")]
    [InlineData("--batch-sizes=0", "--batch-sizes must all be > 0")]
    [InlineData("--memory-limit=lots", "'lots' is not a byte size")]
    [InlineData("--train-args=--heads 3", "not divisible by --heads 3")]
    public void Bad_experiments_arguments_exit_2_before_any_run(string arg, string message)
    {
        var (code, _, err) = Main("experiments", "--results-dir", Results, arg);
        Assert.Equal(2, code);
        Assert.Contains(message, err);
        Assert.False(Directory.Exists(Path.Combine(Results, "runs")));
    }

    [Fact]
    public void Compare_without_a_summary_says_to_run_experiments_first()
    {
        var (code, _, err) = Main("compare", "--results-dir", Results);
        Assert.Equal(2, code);
        Assert.Contains("run `memopt experiments` first", err);
    }
}
