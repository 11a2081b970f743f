using Memopt.Model.Training;

namespace Memopt.Runner.Commands;

/// <summary>How a training run ended.</summary>
public enum TrainStatus
{
    Completed,
    /// <summary>Stopped on request (Ctrl-C, SIGTERM, a cancelled token) after finishing a step; a checkpoint and partial metrics were written.</summary>
    Interrupted,
    /// <summary>A NaN/Inf loss or gradient (or too many skipped steps, or an anomaly found by --detect-anomaly).</summary>
    NonFinite,
    /// <summary>An allocation passed --memory-limit or the device's memory.</summary>
    OutOfMemory,
    /// <summary>Bad arguments, missing/corrupt data, a corrupt or mismatched checkpoint: nothing was trained.</summary>
    BadInput,
}

/// <summary>
/// The exit codes of <c>memopt train</c> (and what a parent process can read from them): 0 completed, 2 bad input or a
/// corrupt/mismatched file, 3 out of device memory, 4 non-finite values, 130 stopped by SIGINT (Ctrl-C), 143 stopped by
/// SIGTERM. Any other code is a crash (e.g. 134, an unhandled exception).
/// </summary>
public static class ExitCodes
{
    public const int Completed = 0;
    public const int BadInput = 2;
    public const int OutOfMemory = 3;
    public const int NonFinite = 4;
    public const int Interrupted = 130;   // 128 + SIGINT
    public const int Terminated = 143;    // 128 + SIGTERM

    public static TrainStatus StatusOf(int exitCode) => exitCode switch
    {
        Completed => TrainStatus.Completed,
        BadInput => TrainStatus.BadInput,
        OutOfMemory => TrainStatus.OutOfMemory,
        NonFinite => TrainStatus.NonFinite,
        Interrupted or Terminated => TrainStatus.Interrupted,
        _ => throw new ArgumentOutOfRangeException(nameof(exitCode), exitCode, "not an exit code memopt train returns (a crash?)"),
    };
}

/// <summary>
/// The end of one <see cref="TrainCommand.Execute"/>: status, exit code, the one-line message printed for it, and the
/// files written. Metrics are present for completed and interrupted runs; CheckpointPath is the last training
/// checkpoint (always present for an interrupted run that got as far as one step); ResumeCommand is the exact command
/// line that continues an interrupted run.
/// </summary>
public sealed record TrainOutcome(
    TrainStatus Status,
    int ExitCode,
    string? Message,
    RunMetrics? Metrics = null,
    string? MetricsPath = null,
    string? MemoryPath = null,
    string? WeightsPath = null,
    string? CheckpointPath = null,
    string? ResumeCommand = null,
    Exception? Error = null);
