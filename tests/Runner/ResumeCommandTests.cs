using System.Text.Json;
using CommandLine;
using Memopt.Model.Checkpoints;
using Memopt.Runner;
using Memopt.Runner.Commands;
using Memopt.Tests.Harness;

namespace Memopt.Tests.Runner;

/// <summary>memopt train's resume, interruption and fault exits: codes, messages naming the file and the problem, and the printed resume command.</summary>
public class ResumeCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("memopt-resume-cli").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Results => Path.Combine(_dir, "results");
    private string CheckpointDir => Path.Combine(Results, "checkpoints", "synthetic_baseline");
    private string MetricsFile => Path.Combine(Results, "synthetic_baseline_metrics.json");

    internal static (int Code, string Out, string Err) Run(params string[] args) => Cli.Run(args);

    private string[] SmallTrain(params string[] extra) =>
        Cli.Small("train", _dir, 1, ["--steps", "5", "--eval-batches", "2", "--results-dir", Results, .. extra]);

    /// <summary>The small run with some of its options replaced (CommandLineParser refuses an option given twice).</summary>
    private string[] SmallTrainWith(params string[] pairs)
    {
        var args = SmallTrain().ToList();
        for (int i = 0; i < pairs.Length; i += 2)
        {
            int at = args.IndexOf(pairs[i]);
            if (at >= 0) args[at + 1] = pairs[i + 1]; else args.AddRange([pairs[i], pairs[i + 1]]);
        }
        return [.. args];
    }

    private static TrainOptions Parse(string[] args) =>
        new Parser(s => s.CaseInsensitiveEnumValues = true).ParseArguments<TrainOptions, PrepareOptions>(args)
            .MapResult((TrainOptions o) => o, (PrepareOptions _) => throw new InvalidOperationException(), e => throw new ArgumentException(string.Join("; ", e)));

    /// <summary>Splits a printed command line as a POSIX shell would (plain words and single-quoted strings, '\'' for a quote).</summary>
    private static string[] SplitCommandLine(string line)
    {
        var args = new List<string>();
        var current = new System.Text.StringBuilder();
        bool quoted = false, any = false;
        for (int i = 0; i < line.Length; i++)
        {
            char c = line[i];
            if (c == '\'' ) { quoted = !quoted; any = true; }
            else if (c == '\\' && !quoted && i + 1 < line.Length) { current.Append(line[++i]); any = true; }
            else if (c == ' ' && !quoted) { if (any) args.Add(current.ToString()); current.Clear(); any = false; }
            else { current.Append(c); any = true; }
        }
        if (any) args.Add(current.ToString());
        return [.. args];
    }

    private JsonElement Metrics() => JsonDocument.Parse(File.ReadAllText(MetricsFile)).RootElement;

    [Fact]
    public void An_interrupted_run_writes_partial_metrics_and_a_checkpoint_and_its_printed_command_finishes_the_run()
    {
        using var stop = new CancellationTokenSource();
        stop.Cancel();   // as if Ctrl-C came during the first step: that step finishes, then the run stops
        var (oldOut, oldErr) = (Console.Out, Console.Error);
        TrainOutcome outcome;
        Console.SetOut(TextWriter.Null);
        Console.SetError(TextWriter.Null);
        // --grad-clip 0 is default(float) but not the option's default; a directory with a space and a quote needs quoting.
        string checkpoints = Path.Combine(_dir, "run's checkpoints");
        try { outcome = TrainCommand.Execute(Parse(SmallTrain("--grad-clip", "0", "--checkpoint-dir", checkpoints)), stop.Token); }
        finally { Console.SetOut(oldOut); Console.SetError(oldErr); }

        Assert.Equal((TrainStatus.Interrupted, ExitCodes.Interrupted), (outcome.Status, outcome.ExitCode));
        Assert.Equal(Path.Combine(checkpoints, TrainingCheckpoint.FileName(1)), outcome.CheckpointPath);
        Assert.Contains("interrupted after step 1 of 5", outcome.Message);
        Assert.Contains("resume with:", outcome.Message);
        var partial = Metrics();
        Assert.Equal("interrupted", partial.GetProperty("status").GetString());
        Assert.True(partial.GetProperty("partial").GetBoolean());
        Assert.Equal(1, partial.GetProperty("metrics").GetProperty("steps").GetInt64());
        Assert.False(File.Exists(Path.Combine(Results, "checkpoints", "synthetic_baseline.safetensors")), "no final weights for a partial run");

        Assert.StartsWith("memopt train ", outcome.ResumeCommand);
        var args = SplitCommandLine(outcome.ResumeCommand!)[1..];
        Assert.Equal(outcome.CheckpointPath, args[Array.IndexOf(args, "--resume") + 1]);
        Assert.Equal("0", args[Array.IndexOf(args, "--grad-clip") + 1]);
        var (code, output, err) = Run(args);
        Assert.True(code == 0, err + output);
        Assert.Contains($"resume   {outcome.CheckpointPath}: step 1 of 5", output);
        var done = Metrics();
        Assert.Equal("completed", done.GetProperty("status").GetString());
        Assert.Equal(5, done.GetProperty("metrics").GetProperty("steps").GetInt64());
        Assert.Equal([1L], done.GetProperty("metrics").GetProperty("resumed_at_steps").EnumerateArray().Select(e => e.GetInt64()));
        Assert.Equal(5, done.GetProperty("loss_curve").GetArrayLength());
        Assert.True(File.Exists(Path.Combine(Results, "checkpoints", "synthetic_baseline.safetensors")));
        Assert.Empty(Directory.GetFiles(_dir, "*.tmp-*", SearchOption.AllDirectories));
    }

    [Fact]
    public void Corrupt_missing_or_mismatched_checkpoints_exit_2_naming_the_file_and_the_problem()
    {
        var (code, output, err) = Run(SmallTrainWith("--steps", "2", "--save-every", "1"));
        Assert.True(code == 0, err + output);
        Assert.Equal([TrainingCheckpoint.FileName(2), TrainingCheckpoint.FileName(1)],
            TrainingCheckpoint.List(CheckpointDir).Select(c => Path.GetFileName(c.Path)));
        string newest = Path.Combine(CheckpointDir, TrainingCheckpoint.FileName(2));
        string older = Path.Combine(CheckpointDir, TrainingCheckpoint.FileName(1));
        string[] Resume(string what, params string[] more) => SmallTrainWith(["--steps", "2", "--resume", what, .. more]);

        // Another architecture, another tokenizer (so another token cache), another batch size: the file and the field are named.
        (code, _, err) = Run(Resume(newest, "--d-model", "32"));
        Assert.Equal(2, code);
        Assert.Contains($"checkpoint '{newest}' does not match this run: model.d_model is 16 in the checkpoint but 32 here", err);
        (code, _, err) = Run(Resume(newest, "--bpe-vocab", "290"));
        Assert.Equal(2, code);
        Assert.Contains("data.tokenizer", err);
        Assert.Contains("another tokenizer", err);
        (code, _, err) = Run(Resume(newest, "--batch-size", "2"));
        Assert.Equal(2, code);
        Assert.Contains("training.batch_size is 4 in the checkpoint but 2 here", err);

        // A truncated file named directly is refused; a directory falls back to the older valid file, with a warning
        // naming the damaged one (here that older file then does not match the batch size, which stops before training).
        File.WriteAllBytes(newest, File.ReadAllBytes(newest)[..1000]);
        (code, _, err) = Run(Resume(newest));
        Assert.Equal(2, code);
        Assert.Contains(newest, err);
        Assert.Contains("truncated", err);
        (code, _, err) = Run(Resume("latest", "--batch-size", "2"));
        Assert.Equal(2, code);
        Assert.Contains($"resume: checkpoint '{newest}'", err);
        Assert.Contains("trying an older checkpoint", err);
        Assert.Contains($"checkpoint '{older}' does not match this run: training.batch_size", err);

        var bytes = File.ReadAllBytes(older);
        bytes[^10] ^= 0x01;
        File.WriteAllBytes(older, bytes);
        (code, _, err) = Run(Resume(older));
        Assert.Equal(2, code);
        Assert.Contains(older, err);
        Assert.Contains("checksum mismatch", err);
        (code, _, err) = Run(Resume(CheckpointDir));
        Assert.Equal(2, code);
        Assert.Contains($"no valid checkpoint in '{CheckpointDir}'", err);

        (code, _, err) = Run(Resume(Path.Combine(_dir, "nope.safetensors")));
        Assert.Equal(2, code);
        Assert.Contains("nope.safetensors' does not exist", err);
        (code, _, err) = Run(Resume("latest", "--checkpoint-dir", Path.Combine(_dir, "empty")));
        Assert.Equal(2, code);
        Assert.Contains("no checkpoint directory", err);
        Assert.False(File.Exists(MetricsFile) && Metrics().GetProperty("status").GetString() != "completed");
    }

    [Fact]
    public void Bare_resume_means_latest_once_arguments_are_normalized()
    {
        Assert.Equal(["train", "--resume", "latest", "--steps", "3"], TrainCommand.NormalizeArguments(["train", "--resume", "--steps", "3"]));
        Assert.Equal(["train", "--resume", "latest"], TrainCommand.NormalizeArguments(["train", "--resume"]));
        Assert.Equal(["train", "--resume", "a.safetensors"], TrainCommand.NormalizeArguments(["train", "--resume", "a.safetensors"]));
    }

    [Fact]
    public void Non_finite_values_exit_4_with_the_step_and_out_of_memory_exits_3()
    {
        // A learning rate of 1e30 makes the weights overflow in the first update: the second step's loss is not finite.
        var (code, _, err) = Run(SmallTrainWith("--lr", "1e30", "--grad-clip", "0"));
        Assert.Equal(4, code);
        Assert.Contains("at step 2: training stopped", err);
        Assert.False(File.Exists(MetricsFile));

        // Parameters and gradients fit in 100 KiB, Adam's two moments do not.
        (code, _, err) = Run(SmallTrain("--memory-limit", "100KiB"));
        Assert.Equal(3, code);
        Assert.Contains("out of device memory", err);
    }

    [Fact]
    public void Malformed_jsonl_lines_are_counted_and_reported_and_a_damaged_token_cache_is_named_and_rebuilt()
    {
        var rng = new Random(3);
        string[] words = ["river", "stone", "light", "north", "quiet", "ember", "field", "cloud", "salt", "tower", "reed", "glass"];
        var lines = Enumerable.Range(0, 400).Select(i =>
            JsonSerializer.Serialize(new { text = string.Join(' ', Enumerable.Range(0, 20).Select(_ => words[rng.Next(words.Length)])) + "." })).ToList();
        lines.Insert(10, "not json");
        lines.Insert(50, """{"title": "no text"}""");
        lines.Insert(90, """{"text": 3}""");
        string corpus = Path.Combine(_dir, "corpus.jsonl");
        File.WriteAllLines(corpus, lines);
        var (code, output, err) = Run(SmallTrainWith("--data", corpus, "--bpe-vocab", "280", "--steps", "1"));
        Assert.True(code == 0, err + output);
        Assert.Contains("3 malformed .jsonl lines skipped (first: " + corpus + ":11: bad JSON", output);

        // A damaged cached token file is named and rebuilt (memopt prepare reads the same cache, without a device).
        var cached = Directory.GetFiles(Path.Combine(_dir, "cache"), "*.val.tok", SearchOption.AllDirectories).Single();
        var bytes = File.ReadAllBytes(cached);
        bytes[^2] ^= 0x20;
        File.WriteAllBytes(cached, bytes);
        (code, output, err) = Run("prepare", "--data", corpus, "--vocab-size", "280", "--seq-len", "16", "--cache-dir", Path.Combine(_dir, "cache"));
        Assert.True(code == 0, err + output);
        Assert.Contains($"{cached}: corrupt (payload checksum mismatch); rebuilding", err);
    }
}
