using System.Diagnostics;
using Memopt.Autograd;
using Memopt.Autograd.Optim;
using NonFinite = Memopt.Kernels.NonFinite;
using Memopt.Model.Checkpoints;
using Memopt.Model.Data;
using Memopt.Tensors;

namespace Memopt.Model.Training;

/// <summary>
/// The training loop: for each optimizer step, GradAccumulation micro-batches of forward (a fresh tape) and backward,
/// then global-norm clipping and one Adam/AdamW update at the scheduled learning rate. The loss is read back after
/// every micro-batch, which synchronizes the device, so step times are device-synchronized by construction.
/// Faults: a NaN/Inf loss, or NaN/Inf gradients after backward (the clipping norm, or one counting pass without
/// clipping), stop the run before the update (<see cref="NonFiniteException"/>) or, with SkipNonFinite, skip that
/// update; DetectAnomaly checks every op (<see cref="AnomalyDetector"/>). Checkpoints (<see cref="TrainingCheckpoint"/>)
/// are written every SaveEvery steps, at the end and on a <see cref="Stop"/> request; <see cref="Resume"/> continues
/// one so that the weights and optimizer state match an uninterrupted run bit for bit (given deterministic kernels).
/// </summary>
public sealed class Trainer
{
    private readonly TransformerLM _model;
    private readonly PreparedData _data;
    private readonly TrainingOptions _o;
    private readonly AttentionSettings _attention;

    public Trainer(TransformerLM model, PreparedData data, TrainingOptions options)
    {
        options.Validate();
        _model = model;
        _data = data;
        _o = options;
        _attention = new AttentionSettings(options.WindowSize, options.FlashAttention);
        // Like torch.backends.cuda.matmul.allow_tf32: a setting of the device, for every fp32 GEMM of this run.
        model.Device.Fp32Matmul = options.Fp32Matmul;
        if (options.Bf16 != (model.Precision == Precision.Bf16))
            throw new ArgumentException($"--bf16 is {(options.Bf16 ? "on" : "off")} but the model was built in {model.Precision.Label()}");
        if (data.Stats.SeqLen > model.Config.SeqLen)
            throw new ArgumentException($"data sequence length {data.Stats.SeqLen} exceeds the model's maximum {model.Config.SeqLen}");
        if (data.Tokenizer.VocabSize > model.Config.VocabSize)
            throw new ArgumentException($"tokenizer vocabulary {data.Tokenizer.VocabSize} is larger than the model's {model.Config.VocabSize} (use --vocab-size)");
    }

    public Action<StepReport>? OnStep { get; init; }
    public Action<EvalReport>? OnEval { get; init; }
    /// <summary>Checkpoints written, steps skipped, the resume point.</summary>
    public Action<string>? Log { get; init; }
    /// <summary>
    /// A stop request (Ctrl-C, SIGTERM, or a test): the current step finishes (an evaluation in progress is abandoned),
    /// a checkpoint is written when <see cref="CheckpointDirectory"/> is set, and <see cref="Run"/> returns partial metrics.
    /// </summary>
    public CancellationToken Stop { get; init; }
    /// <summary>Where training checkpoints go (every <see cref="TrainingOptions.SaveEvery"/> steps, at the end, on a stop); null: none.</summary>
    public string? CheckpointDirectory { get; init; }
    /// <summary>Continue from this checkpoint: it must match the model, the data and the training options (else a <see cref="Checkpoints.CheckpointMismatchException"/>).</summary>
    public TrainingCheckpoint? Resume { get; init; }

    public RunMetrics Run(string dataset)
    {
        if (_o.SaveEvery > 0 && CheckpointDirectory is null)
            throw new ArgumentException($"--save-every {_o.SaveEvery} needs a checkpoint directory (Trainer.CheckpointDirectory)");
        var device = _model.Device;
        var tracker = device.Tracker;
        int b = _o.BatchSize, t = _data.Stats.SeqLen;
        var batches = _data.Batches(SplitName.Train, b, _o.Seed, shuffle: true);
        long stepsPerEpoch = batches.BatchesPerEpoch / _o.GradAccumulation;
        if (stepsPerEpoch == 0)
            throw new DataException($"the training split has {batches.BatchesPerEpoch} batches of {b}×{t} tokens, fewer than one optimizer step of {_o.GradAccumulation} micro-batches");
        long totalSteps = _o.Steps ?? stepsPerEpoch * _o.Epochs;
        int warmup = _o.WarmupSteps ?? (int)Math.Max(1, totalSteps / 50);
        var schedule = _o.Schedule == ScheduleKind.Cosine
            ? LrSchedule.Cosine(_o.LearningRate, warmup, (int)totalSteps, _o.MinLrRatio)
            : LrSchedule.Constant(_o.LearningRate, warmup);
        // Hashing the training tokens is only needed to write or check a checkpoint.
        var identity = new Lazy<DataIdentity>(() => DataIdentity.Of(_data));

        using var optimizer = new AdamW(_model.Parameters, _o.Optimizer == OptimizerKind.AdamW
            ? new AdamWOptions(_o.LearningRate, WeightDecay: _o.WeightDecay)
            : AdamWOptions.Adam(_o.LearningRate));
        var progress = new TrainingProgress();
        if (Resume is { } from)
        {
            from.CheckMatches(_model.Config, _o, identity.Value);
            if (from.Step > totalSteps)
                throw new CheckpointMismatchException(from.Path, "step", from.Step.ToString(), $"at most {totalSteps}", "the checkpoint is past the end of this run");
            from.Restore(_model, optimizer);
            progress = from.Progress();
            progress.ResumedAt.Add(progress.Step);
            batches.Restore(progress.DataPosition);
            Log?.Invoke($"resumed from {from.Path} at step {progress.Step}/{totalSteps}");
        }
        using var ids = Tensor.Empty(device, new Shape(b, t), DType.I32, MemoryCategory.Data, "batch.ids");
        using var targets = Tensor.Empty(device, new Shape(b, t), DType.I32, MemoryCategory.Data, "batch.targets");
        var hostIds = new int[b * t];
        var hostTargets = new int[b * t];
        var detector = _o.DetectAnomaly ? new AnomalyDetector() : null;
        Tape.ObserverScope? observing = detector is null ? null : Tape.Observe(detector);

        var session = Stopwatch.StartNew();
        double sessionStart = progress.TrainSeconds, excluded = 0;   // evaluations and checkpoint writes are not training time
        // The checkpoint resumed from already holds the state at its step: no second copy of it is written.
        string? checkpoint = Resume?.Path;
        long checkpointStep = Resume?.Step ?? -1;
        void SaveCheckpoint(string reason)
        {
            if (CheckpointDirectory is null || checkpointStep == progress.Step) return;
            var clock = Stopwatch.StartNew();
            progress.TrainSeconds = sessionStart + session.Elapsed.TotalSeconds - excluded;
            var state = new CheckpointState(progress.Step, totalSteps, optimizer.StepCount, _o.Seed, schedule.ToString(),
                progress.Step < totalSteps ? schedule.At(progress.Step) : float.NaN, reason, DateTime.UtcNow);
            checkpoint = TrainingCheckpoint.Save(CheckpointDirectory, _model, optimizer, _o, identity.Value, progress, state, _o.KeepCheckpoints);
            checkpointStep = progress.Step;
            excluded += clock.Elapsed.TotalSeconds;
            Log?.Invoke($"checkpoint {checkpoint} (step {progress.Step}/{totalSteps}, {reason})");
        }

        bool stopped = false;
        try
        {
            for (long step = progress.Step; step < totalSteps && !stopped; step++)
            {
                var sw = Stopwatch.StartNew();
                float stepLoss = 0;
                string? nonFinite = null;   // why this step's update is skipped (--skip-nonfinite)
                for (int micro = 0; micro < _o.GradAccumulation; micro++)
                {
                    batches.Next(hostIds, hostTargets);
                    if (nonFinite is not null) continue;   // the step is lost; only keep the data position of an unskipped run
                    ids.CopyFrom(hostIds);
                    targets.CopyFrom(hostTargets);
                    if (detector is not null) { detector.Step = step + 1; detector.MicroBatch = micro; }
                    var ctx = new ForwardContext(true, _o.Seed, step * _o.GradAccumulation + micro);
                    using var tape = new Tape();
                    Var loss;
                    using (tracker.EnterPhase(Phase.Forward))
                        loss = _model.Loss(ids, targets, _attention, ctx, _o.LabelSmoothing, _o.Checkpointing, _o.Head);
                    using (loss)
                    {
                        float value = loss.Value.ToFloatArray()[0];
                        if (step == 0 && micro == 0) progress.FirstLossFinite = float.IsFinite(value);
                        if (!float.IsFinite(value))
                        {
                            if (!_o.SkipNonFinite) throw new NonFiniteLossException(step + 1, value);
                            nonFinite = $"loss {value} in micro-batch {micro + 1}";
                            stepLoss = value;
                            continue;
                        }
                        stepLoss += value / _o.GradAccumulation;
                        if (_o.GradAccumulation == 1)
                            tape.Backward(loss);
                        else
                        {
                            using var scaled = Ops.Scale(loss, 1f / _o.GradAccumulation, "accumulation.scale");
                            tape.Backward(scaled);
                        }
                    }
                }
                float norm = float.NaN;
                float lr = schedule.At(step);
                using (tracker.EnterPhase(Phase.Optimizer))
                {
                    if (nonFinite is null)
                    {
                        // Clipping's norm doubles as the check; without clipping, one counting pass (no norm: it would add a sync
                        // to every step for a figure nobody asked for).
                        if (_o.GradClip > 0)
                        {
                            norm = GradClip.ClipGradNorm(_model.Parameters, _o.GradClip);
                            if (!float.IsFinite(norm)) nonFinite = DescribeGradients(norm);
                        }
                        else if (_o.CheckGradients && NonFinite.Any(Gradients()))
                            nonFinite = DescribeGradients(float.NaN);
                        if (nonFinite is not null && !_o.SkipNonFinite) throw new NonFiniteGradientException(step + 1, nonFinite);
                    }
                    if (nonFinite is null)
                    {
                        optimizer.Step(lr);
                        progress.ConsecutiveSkips = 0;
                    }
                    else
                    {
                        progress.SkippedSteps.Add(step + 1);
                        progress.ConsecutiveSkips++;
                        Log?.Invoke($"step {step + 1}: {nonFinite}; update skipped ({progress.ConsecutiveSkips} in a row, limit {_o.MaxConsecutiveSkips})");
                    }
                    optimizer.ZeroGrad();
                }
                device.Synchronize();
                double ms = sw.Elapsed.TotalMilliseconds;
                progress.Step = step + 1;
                progress.DataPosition = batches.Position;
                progress.StepMs.Add(ms);
                progress.LossCurve.Add(stepLoss);
                if (nonFinite is null)
                {
                    progress.TrainLossSum += stepLoss;
                    progress.TrainLossCount++;
                }
                long tokensPerStep = (long)b * t * _o.GradAccumulation;
                OnStep?.Invoke(new StepReport(step + 1, totalSteps, stepLoss, lr, norm, ms, tokensPerStep / (ms / 1000), tracker.Live, tracker.Peak, nonFinite is not null));
                if (progress.ConsecutiveSkips >= _o.MaxConsecutiveSkips)
                    throw new NonFiniteException(step + 1, $"{progress.ConsecutiveSkips} steps in a row had a non-finite loss or gradient " +
                                                           $"(the last, step {step + 1}: {nonFinite}); training stopped (lower --lr, or run with --detect-anomaly)");
                if (_o.EvalEvery > 0 && (step + 1) % _o.EvalEvery == 0 && step + 1 < totalSteps)
                {
                    var evalClock = Stopwatch.StartNew();
                    var e = Evaluate(step + 1, Stop);
                    excluded += evalClock.Elapsed.TotalSeconds;
                    if (e is not null)
                    {
                        progress.Evaluations.Add(e);
                        OnEval?.Invoke(e);
                    }
                }
                stopped = Stop.IsCancellationRequested;
                if (_o.SaveEvery > 0 && (progress.Step % _o.SaveEvery == 0 || progress.Step == totalSteps))
                    SaveCheckpoint(progress.Step == totalSteps ? "final" : "periodic");
            }
        }
        finally
        {
            observing?.Dispose();
        }
        progress.TrainSeconds = sessionStart + session.Elapsed.TotalSeconds - excluded;
        var memory = Memory(device);
        EvalReport? final = null;
        if (!stopped)
        {
            final = Evaluate(totalSteps, Stop);
            stopped = final is null;
            if (final is not null)
            {
                progress.Evaluations.Add(final);
                OnEval?.Invoke(final);
            }
        }
        if (stopped) SaveCheckpoint("interrupted");
        return Metrics(dataset, progress, totalSteps, stepsPerEpoch, final, stopped, memory, checkpoint);
    }

    private Tensor[] Gradients() => _model.Parameters.Select(p => p.Grad!).ToArray();

    /// <summary>Which parameters' gradients hold NaN/Inf (the failure path only: one count per parameter).</summary>
    private string DescribeGradients(float norm)
    {
        var bad = _model.Parameters.Select(p => (p.Name, Count: NonFinite.Count(p.Grad!), p.Grad!.Numel)).Where(x => x.Count > 0).ToList();
        if (bad.Count == 0)
            return $"the gradient norm is {norm} although every gradient element is finite (the sum of squares overflowed float32)";
        string list = string.Join(", ", bad.Take(5).Select(x => $"{x.Name} ({x.Count} of {x.Numel})"));
        return $"{bad.Count} parameter gradient{(bad.Count == 1 ? "" : "s")} hold NaN/Inf: {list}{(bad.Count > 5 ? ", …" : "")}";
    }

    private RunMetrics Metrics(string dataset, TrainingProgress p, long totalSteps, long stepsPerEpoch, EvalReport? final, bool partial,
        MemoryReport memory, string? checkpoint)
    {
        int b = _o.BatchSize, t = _data.Stats.SeqLen;
        // Timing window: TimingSteps steps after TimingWarmupSteps warm-up steps (all steps after warm-up if fewer).
        var timed = p.StepMs.Skip(Math.Min(_o.TimingWarmupSteps, Math.Max(0, p.StepMs.Count - 1))).Take(_o.TimingSteps).ToArray();
        var sorted = timed.OrderBy(x => x).ToArray();
        long tokens = p.Step * b * t * _o.GradAccumulation;
        double trainSeconds = p.TrainSeconds;
        return new RunMetrics
        {
            Technique = _o.Technique,
            Dataset = dataset,
            Parameters = _model.ParameterCount,
            Steps = p.Step,
            TotalSteps = totalSteps,
            TokensSeen = tokens,
            StepMsMean = timed.Length > 0 ? timed.Average() : double.NaN,
            StepMsMedian = sorted.Length == 0 ? double.NaN
                : sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2,
            TimedSteps = timed.Length,
            EpochSeconds = p.Step > 0 ? trainSeconds * stepsPerEpoch / p.Step : double.NaN,
            TokensPerSecond = tokens / trainSeconds,
            TrainLoss = p.TrainLossCount > 0 ? p.TrainLossSum / p.TrainLossCount : double.NaN,
            ValLoss = final?.Loss ?? p.Evaluations.LastOrDefault()?.Loss ?? double.NaN,
            OptimalValLoss = _data.Stats.Val.OptimalLossPerToken,
            BigramBaselineValLoss = _data.Stats.Val.BigramBaselineLossPerToken,
            FirstLossFinite = p.FirstLossFinite,
            Evaluations = p.Evaluations,
            LossCurve = p.LossCurve,
            Memory = memory,
            Partial = partial,
            SkippedSteps = p.SkippedSteps,
            ResumedAt = p.ResumedAt,
            Checkpoint = checkpoint,
        };
    }

    /// <summary>Mean next-token loss over the validation split (or its first EvalBatches batches), without gradients.</summary>
    public EvalReport Evaluate(long step) => Evaluate(step, CancellationToken.None)!;

    /// <summary>As <see cref="Evaluate(long)"/>, abandoned (null) when <paramref name="stop"/> is requested between batches.</summary>
    public EvalReport? Evaluate(long step, CancellationToken stop)
    {
        var device = _model.Device;
        int b = _o.BatchSize, t = _data.Stats.SeqLen;
        var batches = _data.Batches(SplitName.Val, b, _o.Seed, shuffle: false);
        int count = Math.Min(batches.BatchesPerEpoch, _o.EvalBatches ?? int.MaxValue);
        if (count == 0)
            throw new DataException($"the validation split has fewer than {b} sequences of {t + 1} tokens: lower --batch-size or use more data");
        using var phase = device.Tracker.EnterPhase(Phase.Evaluation);
        using var noGrad = Tape.NoGrad();
        using var ids = Tensor.Empty(device, new Shape(b, t), DType.I32, MemoryCategory.Data, "eval.ids");
        using var targets = Tensor.Empty(device, new Shape(b, t), DType.I32, MemoryCategory.Data, "eval.targets");
        var hi = new int[b * t];
        var ht = new int[b * t];
        double sum = 0;
        for (int i = 0; i < count; i++)
        {
            if (stop.IsCancellationRequested) return null;
            batches.Next(hi, ht);
            ids.CopyFrom(hi);
            targets.CopyFrom(ht);
            using var loss = _model.Loss(ids, targets, _attention, ForwardContext.Evaluation, head: _o.Head);
            sum += loss.Value.ToFloatArray()[0];
        }
        double mean = sum / count;
        return new EvalReport(step, mean, Math.Exp(mean), count);
    }

    private MemoryReport Memory(ComputeDevice device)
    {
        var tr = device.Tracker;
        return new MemoryReport(
            tr.Peak, tr.PeakReserved, device.DriverUsedBytes(),
            tr.PeakDuring(Phase.Forward), tr.PeakDuring(Phase.Backward), tr.PeakDuring(Phase.Optimizer),
            MemoryCategories.All.ToDictionary(c => c.Label(), c => tr.PeakOf(c)),
            tr.AtPeak().ByCategory.ToDictionary(kv => kv.Key.Label(), kv => kv.Value),
            _model.Parameters.Sum(p => p.Value.Bytes));
    }
}
