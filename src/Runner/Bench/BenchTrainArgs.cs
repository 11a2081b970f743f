using CommandLine;
using Memopt.Model;
using Memopt.Runner.Commands;
using Memopt.Runner.Experiments;

namespace Memopt.Runner.Bench;

/// <summary>
/// The train options a benchmark builds its model from: --preset, the per-configuration flags the benchmark sets, and
/// --train-args passed through (model overrides, data, seed), all read by train's own parser, so a model here is the
/// model `memopt train` would build from the same words.
/// </summary>
public static class BenchTrainArgs
{
    /// <summary>Options the benchmarks set themselves; --train-args may not set them.</summary>
    private static readonly string[] Owned =
    [
        "--technique", "--batch-size", "--bf16", "--flash-attn", "--window-size", "--gradient-checkpointing", "--preset",
        "--steps", "--epochs", "--device", "--memory-limit", "--resume", "--save-every", "--trace",
    ];

    /// <summary>--train-args split into words, without the options the benchmark owns.</summary>
    public static IReadOnlyList<string> Split(BenchOptions o)
    {
        var words = ArgSplitter.Split(o.TrainArgs ?? "");
        foreach (var w in words)
        {
            string name = w.Split('=')[0];
            if (Owned.Contains(name, StringComparer.Ordinal))
                throw new UserError($"--train-args may not contain {name}: the benchmark sets it (see memopt bench --help)");
        }
        return words;
    }

    /// <summary>Train options for <paramref name="preset"/> plus <paramref name="words"/>.</summary>
    public static TrainOptions Parse(string preset, IEnumerable<string> words)
    {
        using var parser = new Parser(s => { s.HelpWriter = null; s.CaseInsensitiveEnumValues = true; });
        var parsed = parser.ParseArguments<TrainOptions>(["--preset", preset, .. words]);
        if (parsed is NotParsed<TrainOptions> bad)
            throw new UserError("--train-args: " + string.Join("; ", bad.Errors.Select(Experiments.ChildTrainOptions.DescribeParseError)));
        return ((Parsed<TrainOptions>)parsed).Value;
    }

    /// <summary>The model the preset and --train-args describe, validated.</summary>
    public static ModelConfig Config(BenchOptions o)
    {
        if (!ModelConfig.Presets.ContainsKey(o.Preset))
            throw new UserError($"--preset '{o.Preset}': expected one of {string.Join(", ", ModelConfig.Presets.Keys)}");
        try
        {
            var config = Parse(o.Preset, Split(o)).ModelConfig();
            config.Validate();
            return config;
        }
        catch (ArgumentException e)
        {
            throw new UserError(e.Message, e);
        }
    }
}
