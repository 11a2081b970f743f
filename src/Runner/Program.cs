using CommandLine;
using Memopt.Runner.Commands;
using Memopt.Runner.Experiments;

namespace Memopt.Runner;

/// <summary>memopt: one verb per job. Every verb returns 0 on success and a non-zero code with a message on bad input.</summary>
public static class Program
{
    public static int Main(string[] args)
    {
        var parser = new Parser(s => { s.HelpWriter = Console.Error; s.CaseInsensitiveEnumValues = true; });
        var parsed = parser.ParseArguments<TrainOptions, MemoryOptions, PrepareOptions, CheckOptions, InfoOptions, ExperimentsOptions, MaxBatchOptions, CompareOptions, BenchOptions, TracePlotOptions>(
            TrainCommand.NormalizeArguments(args));
        try
        {
            return parsed.MapResult(
                (MemoryOptions o) => MemoryCommand.Run(o),
                (TrainOptions o) => TrainCommand.Run(o),
                (PrepareOptions o) => PrepareCommand.Run(o),
                (CheckOptions o) => CheckCommand.Run(o),
                (InfoOptions o) => InfoCommand.Run(o),
                (ExperimentsOptions o) => ExperimentsCommand.Run(o),
                (MaxBatchOptions o) => MaxBatchCommand.Run(o),
                (CompareOptions o) => CompareCommand.Run(o),
                (BenchOptions o) => BenchCommand.Run(o),
                (TracePlotOptions o) => TracePlotCommand.Run(o),
                _ => 2);
        }
        catch (UserError e)
        {
            Console.Error.WriteLine($"memopt: {e.Message}");
            return 2;
        }
    }
}

/// <summary>Bad input from the user: reported as one line and exit code 2, without a stack trace.</summary>
public sealed class UserError(string message, Exception? inner = null) : Exception(message, inner);
