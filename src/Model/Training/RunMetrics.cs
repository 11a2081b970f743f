namespace Memopt.Model.Training;

/// <summary>Time of one optimizer step (all micro-batches, clipping and the update), device-synchronized.
/// GradNorm is the pre-clip global norm, NaN when clipping is off (it is then not measured). Skipped: the update was
/// skipped for a non-finite loss or gradient (--skip-nonfinite).</summary>
public sealed record StepReport(long Step, long TotalSteps, float Loss, float LearningRate, float GradNorm, double StepMs,
    double TokensPerSecond, long LiveBytes, long PeakBytes, bool Skipped = false);

public sealed record EvalReport(long Step, double Loss, double Perplexity, int Batches);

/// <summary>Peak memory of a run: tracked live bytes (overall, per category, at the peak, per phase), pool reserved bytes, driver figure.</summary>
public sealed record MemoryReport(
    long PeakBytes,
    long PeakReservedBytes,
    long? DriverUsedBytes,
    long ForwardPeakBytes,
    long BackwardPeakBytes,
    long OptimizerPeakBytes,
    IReadOnlyDictionary<string, long> PeakPerCategory,
    IReadOnlyDictionary<string, long> AtPeakPerCategory,
    long ParameterBytes);

public sealed record RunMetrics
{
    public required string Technique { get; init; }
    public required string Dataset { get; init; }
    public required long Parameters { get; init; }
    public required long Steps { get; init; }
    public required long TokensSeen { get; init; }
    public required double StepMsMean { get; init; }
    public required double StepMsMedian { get; init; }
    public required int TimedSteps { get; init; }
    public required double EpochSeconds { get; init; }
    public required double TokensPerSecond { get; init; }
    public required double TrainLoss { get; init; }
    public double TrainPerplexity => Math.Exp(TrainLoss);
    public required double ValLoss { get; init; }
    public double ValPerplexity => Math.Exp(ValLoss);
    /// <summary>Best achievable validation loss per token (synthetic corpus only).</summary>
    public double? OptimalValLoss { get; init; }
    public double? OptimalValPerplexity => OptimalValLoss is double l ? Math.Exp(l) : null;
    /// <summary>Validation loss of a Kneser–Ney word bigram counted on the train split (synthetic corpus only): what plain counting learns from the same data.</summary>
    public double? BigramBaselineValLoss { get; init; }
    public required bool FirstLossFinite { get; init; }
    public required IReadOnlyList<EvalReport> Evaluations { get; init; }
    public required IReadOnlyList<double> LossCurve { get; init; }
    public required MemoryReport Memory { get; init; }

    /// <summary>Steps the run was set to take; <see cref="Steps"/> is how many it completed.</summary>
    public long TotalSteps { get; init; }
    /// <summary>True when the run stopped early (interrupted): the figures cover the completed steps only and there was no final evaluation.</summary>
    public bool Partial { get; init; }
    public string Status => Partial ? "interrupted" : "completed";
    /// <summary>1-based numbers of the steps whose update was skipped (--skip-nonfinite).</summary>
    public IReadOnlyList<long> SkippedSteps { get; init; } = [];
    /// <summary>Completed-step counts at which the run was resumed from a checkpoint.</summary>
    public IReadOnlyList<long> ResumedAt { get; init; } = [];
    /// <summary>The last training checkpoint written (null: none).</summary>
    public string? Checkpoint { get; init; }
}
