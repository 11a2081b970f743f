using Memopt.Runner;

namespace Memopt.Tests.Harness;

/// <summary>memopt's Main in this process, and the small CPU model the command-line tests train.</summary>
public static class Cli
{
    /// <summary>Runs memopt with its stdout and stderr captured (tests run one collection at a time, so the swap is safe).</summary>
    public static (int Code, string Out, string Err) Run(params string[] args)
    {
        var (oldOut, oldErr) = (Console.Out, Console.Error);
        using var o = new StringWriter();
        using var e = new StringWriter();
        Console.SetOut(o);
        Console.SetError(e);
        try { return (Program.Main(args), o.ToString(), e.ToString()); }
        finally { Console.SetOut(oldOut); Console.SetError(oldErr); }
    }

    /// <summary>
    /// <paramref name="verb"/> on a d-model-16 model over the small synthetic corpus (BPE 300, T 16, batch 4) on the CPU,
    /// its token cache under <paramref name="dir"/>/cache; <paramref name="extra"/> adds the run's own options.
    /// </summary>
    public static string[] Small(string verb, string dir, int layers, params string[] extra) =>
    [
        verb, "--device", "cpu", "--layers", layers.ToString(), "--d-model", "16", "--heads", "2", "--d-ff", "32", "--seq-len", "16",
        "--vocab-size", "300", "--bpe-vocab", "300", "--corpus-words", "30000", "--synthetic-vocab", "150", "--batch-size", "4",
        "--cache-dir", Path.Combine(dir, "cache"), .. extra,
    ];
}
