using CommandLine;
using Memopt.Model;
using Memopt.Runner.Commands;
using Memopt.Tensors;

namespace Memopt.Runner.Experiments;

/// <summary>
/// Options of the verbs that run <c>memopt train</c> as child processes (experiments, max-batch): the model and data
/// the children share, and <c>--train-args</c>, any other train options passed through unchanged.
/// </summary>
public abstract class ChildTrainOptions : DeviceOptions
{
    [Option("preset", Default = "lab4", HelpText = "Model preset: lab4, rtx5090, tiny, small, medium.")]
    public string Preset { get; set; } = "lab4";

    [Option("data", HelpText = "A .txt/.jsonl file or a directory of them. Default: the embedded synthetic corpus.")]
    public string? Data { get; set; }

    [Option("cache-dir", Default = "./cache", HelpText = "Tokenized-data cache shared by every run.")]
    public string CacheDir { get; set; } = "./cache";

    [Option("results-dir", Default = "results")]
    public string ResultsDir { get; set; } = "results";

    [Option("train-args", HelpText = "Other train options for every run, in one quoted string, e.g. \"--lr 3e-4 --eval-batches 20 --seq-len 128\".")]
    public string? TrainArgs { get; set; }

    /// <summary>Options this verb sets itself for each run; passing them in --train-args would be ambiguous.</summary>
    private static readonly string[] Owned =
    [
        "--technique", "--batch-size", "--results-dir", "--checkpoint", "--bf16", "--flash-attn", "--window-size",
        "--gradient-checkpointing", "--device", "--memory-limit", "--preset", "--data", "--cache-dir", "--epochs", "--steps",
    ];

    /// <summary>--train-args split into tokens, checked by train's own parser (so a typo fails before hours of runs).</summary>
    public IReadOnlyList<string> ParsedTrainArgs()
    {
        var tokens = ArgSplitter.Split(TrainArgs ?? "");
        foreach (var t in tokens)
        {
            string name = t.Split('=')[0];
            if (Owned.Contains(name, StringComparer.Ordinal))
                throw new UserError($"--train-args may not contain {name}: it is an option of this command (or set per run)");
        }
        TrainFor(tokens, Preset); // validates
        return tokens;
    }

    /// <summary>The model every child builds (preset plus the overrides in --train-args): its sequence length sets the default windows.</summary>
    public ModelConfig ModelConfig()
    {
        try
        {
            var config = TrainFor(ParsedTrainArgs(), Preset).ModelConfig();
            config.Validate();
            return config;
        }
        catch (ArgumentException e)
        {
            throw new UserError(e.Message, e);
        }
    }

    /// <summary>The train options a child of this technique runs with (its flags, then --train-args), less its batch and output paths.</summary>
    public TrainOptions TrainOptionsFor(Technique technique)
    {
        var o = TrainFor([.. technique.Flags, .. ParsedTrainArgs()], Preset);
        o.Device = Device;
        o.MemoryLimit = MemoryLimit;
        return o;
    }

    public long? MemoryLimitBytes()
    {
        if (MemoryLimit is null) return null;
        try { return ByteSize.Parse(MemoryLimit); }
        catch (FormatException e) { throw new UserError($"--memory-limit: {e.Message}", e); }
    }

    /// <summary>The arguments every child gets, whatever the technique and batch: device, budget, model, data, passed-through options.</summary>
    public List<string> SharedChildArgs()
    {
        var args = new List<string> { "--device", Device };
        if (MemoryLimit is not null) args.AddRange(["--memory-limit", MemoryLimit]);
        args.AddRange(["--preset", Preset]);
        if (Data is not null) args.AddRange(["--data", Data]);
        return args;
    }

    private static TrainOptions TrainFor(IReadOnlyList<string> tokens, string preset)
    {
        using var parser = new Parser(s => { s.HelpWriter = null; s.CaseInsensitiveEnumValues = true; });
        var parsed = parser.ParseArguments<TrainOptions>([.. tokens]);
        if (parsed is NotParsed<TrainOptions> bad)
            throw new UserError("--train-args: " + string.Join("; ", bad.Errors.Select(DescribeParseError)));
        var o = ((Parsed<TrainOptions>)parsed).Value;
        o.Preset = preset;
        return o;
    }

    /// <summary>One parse error of train's options in words (shared by every verb that passes --train-args through).</summary>
    internal static string DescribeParseError(Error e) => e switch
    {
        UnknownOptionError u => $"unknown option '{u.Token}'",
        MissingValueOptionError m => $"--{m.NameInfo.LongName} needs a value",
        BadFormatConversionError b => $"bad value for --{b.NameInfo.LongName}",
        BadFormatTokenError t => $"unexpected '{t.Token}'",
        _ => e.Tag.ToString(),
    };
}

/// <summary>Splits a command-line string into arguments: whitespace separates, single or double quotes group.</summary>
public static class ArgSplitter
{
    public static List<string> Split(string text)
    {
        var args = new List<string>();
        var current = new System.Text.StringBuilder();
        bool inToken = false;
        char quote = '\0';
        foreach (char c in text)
        {
            if (quote != '\0')
            {
                if (c == quote) quote = '\0'; else current.Append(c);
            }
            else if (c is '"' or '\'') { quote = c; inToken = true; }
            else if (char.IsWhiteSpace(c))
            {
                if (inToken) { args.Add(current.ToString()); current.Clear(); inToken = false; }
            }
            else { current.Append(c); inToken = true; }
        }
        if (quote != '\0') throw new UserError($"--train-args: unclosed {quote} quote in \"{text}\"");
        if (inToken) args.Add(current.ToString());
        return args;
    }
}
