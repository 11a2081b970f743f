using System.Diagnostics;
using Memopt.Autograd;
using Memopt.Autograd.Optim;
using Memopt.Model.Data;
using Memopt.Tensors;

namespace Memopt.Model.Training;

/// <summary>
/// The training loop: for each optimizer step, GradAccumulation micro-batches of forward (a fresh tape) and backward,
/// then global-norm clipping and one Adam/AdamW update at the scheduled learning rate. The loss is read back after
/// every micro-batch, which synchronizes the device, so step times are device-synchronized by construction.
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
        _attention = new AttentionSettings(options.WindowSize);
        if (options.Bf16 != (model.Precision == Precision.Bf16))
            throw new ArgumentException($"--bf16 is {(options.Bf16 ? "on" : "off")} but the model was built in {model.Precision.Label()}");
        if (data.Stats.SeqLen > model.Config.SeqLen)
            throw new ArgumentException($"data sequence length {data.Stats.SeqLen} exceeds the model's maximum {model.Config.SeqLen}");
        if (data.Tokenizer.VocabSize > model.Config.VocabSize)
            throw new ArgumentException($"tokenizer vocabulary {data.Tokenizer.VocabSize} is larger than the model's {model.Config.VocabSize} (use --vocab-size)");
    }

    public Action<StepReport>? OnStep { get; init; }
    public Action<EvalReport>? OnEval { get; init; }

    public RunMetrics Run(string dataset)
    {
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

        using var optimizer = new AdamW(_model.Parameters, _o.Optimizer == OptimizerKind.AdamW
            ? new AdamWOptions(_o.LearningRate, WeightDecay: _o.WeightDecay)
            : AdamWOptions.Adam(_o.LearningRate));
        using var ids = Tensor.Empty(device, new Shape(b, t), DType.I32, MemoryCategory.Data, "batch.ids");
        using var targets = Tensor.Empty(device, new Shape(b, t), DType.I32, MemoryCategory.Data, "batch.targets");
        var hostIds = new int[b * t];
        var hostTargets = new int[b * t];

        var stepMs = new List<double>();
        var lossCurve = new List<double>();
        var evals = new List<EvalReport>();
        double trainLossSum = 0;
        int trainLossCount = 0;
        bool firstFinite = true;
        var loop = Stopwatch.StartNew();
        double evalSeconds = 0;

        for (long step = 0; step < totalSteps; step++)
        {
            var sw = Stopwatch.StartNew();
            float stepLoss = 0;
            for (int micro = 0; micro < _o.GradAccumulation; micro++)
            {
                batches.Next(hostIds, hostTargets);
                ids.CopyFrom(hostIds);
                targets.CopyFrom(hostTargets);
                var ctx = new ForwardContext(true, _o.Seed, step * _o.GradAccumulation + micro);
                using var tape = new Tape();
                Var loss;
                using (tracker.EnterPhase(Phase.Forward))
                    loss = _model.Loss(ids, targets, _attention, ctx, _o.LabelSmoothing, _o.Checkpointing);
                using (loss)
                {
                    float value = loss.Value.ToFloatArray()[0];
                    if (step == 0 && micro == 0) firstFinite = float.IsFinite(value);
                    if (!float.IsFinite(value))
                        throw new NonFiniteLossException(step, value);
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
            float norm;
            float lr = schedule.At(step);
            using (tracker.EnterPhase(Phase.Optimizer))
            {
                // Without clipping the norm is not needed: measuring it would add a reduction and a sync to every step.
                norm = _o.GradClip > 0 ? GradClip.ClipGradNorm(_model.Parameters, _o.GradClip) : float.NaN;
                optimizer.Step(lr);
                optimizer.ZeroGrad();
            }
            device.Synchronize();
            double ms = sw.Elapsed.TotalMilliseconds;
            stepMs.Add(ms);
            lossCurve.Add(stepLoss);
            trainLossSum += stepLoss;
            trainLossCount++;
            long tokensPerStep = (long)b * t * _o.GradAccumulation;
            OnStep?.Invoke(new StepReport(step + 1, totalSteps, stepLoss, lr, norm, ms, tokensPerStep / (ms / 1000), tracker.Live, tracker.Peak));
            if (_o.EvalEvery > 0 && (step + 1) % _o.EvalEvery == 0 && step + 1 < totalSteps)
            {
                var evalClock = Stopwatch.StartNew();
                var e = Evaluate(step + 1);
                evalSeconds += evalClock.Elapsed.TotalSeconds;
                evals.Add(e);
                OnEval?.Invoke(e);
            }
        }
        double trainSeconds = loop.Elapsed.TotalSeconds - evalSeconds;
        var memory = Memory(device);
        var final = Evaluate(totalSteps);
        evals.Add(final);
        OnEval?.Invoke(final);

        // Timing window: TimingSteps steps after TimingWarmupSteps warm-up steps (all steps after warm-up if fewer).
        var timed = stepMs.Skip(Math.Min(_o.TimingWarmupSteps, Math.Max(0, stepMs.Count - 1))).Take(_o.TimingSteps).ToArray();
        var sorted = timed.OrderBy(x => x).ToArray();
        long tokens = totalSteps * b * t * _o.GradAccumulation;
        return new RunMetrics
        {
            Technique = _o.Technique,
            Dataset = dataset,
            Parameters = _model.ParameterCount,
            Steps = totalSteps,
            TokensSeen = tokens,
            StepMsMean = timed.Average(),
            StepMsMedian = sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2,
            TimedSteps = timed.Length,
            EpochSeconds = trainSeconds * stepsPerEpoch / totalSteps,
            TokensPerSecond = tokens / trainSeconds,
            TrainLoss = trainLossSum / trainLossCount,
            ValLoss = final.Loss,
            OptimalValLoss = _data.Stats.Val.OptimalLossPerToken,
            BigramBaselineValLoss = _data.Stats.Val.BigramBaselineLossPerToken,
            FirstLossFinite = firstFinite,
            Evaluations = evals,
            LossCurve = lossCurve,
            Memory = memory,
        };
    }

    /// <summary>Mean next-token loss over the validation split (or its first EvalBatches batches), without gradients.</summary>
    public EvalReport Evaluate(long step)
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
            batches.Next(hi, ht);
            ids.CopyFrom(hi);
            targets.CopyFrom(ht);
            using var loss = _model.Loss(ids, targets, _attention, ForwardContext.Evaluation);
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

/// <summary>The loss became NaN or ±Inf: training stops rather than continuing on garbage.</summary>
public sealed class NonFiniteLossException(long step, float value)
    : Exception($"loss is {value} at step {step + 1}: training stopped (lower --lr, or check the data)")
{
    public long Step { get; } = step;
}
