using System.Globalization;
using CommandLine;
using Memopt.Model;
using Memopt.Model.Checkpoints;
using Memopt.Model.Data;
using Memopt.Model.Training;
using Memopt.Tensors;
using Spectre.Console;

namespace Memopt.Runner.Commands;

[Verb("train", HelpText = "Train a language model and write results/{dataset}_{technique}_metrics.json and _memory.json.")]
public class TrainOptions : DeviceOptions
{
    [Option("technique", Default = "baseline", HelpText = "Label of this run in the results.")]
    public string Technique { get; set; } = "baseline";

    [Option("preset", Default = "lab4", HelpText = "Model preset: lab4, rtx5090, tiny, small, medium.")]
    public string Preset { get; set; } = "lab4";

    [Option("batch-size", Default = 32)] public int BatchSize { get; set; } = 32;
    [Option("epochs", Default = 1)] public int Epochs { get; set; } = 1;
    [Option("steps", HelpText = "Optimizer steps (overrides --epochs).")] public int? Steps { get; set; }
    [Option("lr", Default = 1e-3f)] public float Lr { get; set; } = 1e-3f;
    [Option("optimizer", Default = "adam", HelpText = "adam or adamw.")] public string Optimizer { get; set; } = "adam";
    [Option("weight-decay", Default = 0.01f, HelpText = "AdamW's decoupled weight decay.")] public float WeightDecay { get; set; } = 0.01f;
    [Option("schedule", Default = "cosine", HelpText = "cosine (linear warm-up, cosine decay) or constant.")] public string Schedule { get; set; } = "cosine";
    [Option("warmup-steps", HelpText = "Warm-up steps (default 2% of the run).")] public int? WarmupSteps { get; set; }
    [Option("grad-clip", Default = 1.0f, HelpText = "Global gradient-norm clip (0 disables).")] public float GradClip { get; set; } = 1.0f;
    [Option("grad-accum", Default = 1, HelpText = "Micro-batches per optimizer step.")] public int GradAccum { get; set; } = 1;
    [Option("label-smoothing", Default = 0f)] public float LabelSmoothing { get; set; }
    [Option("dropout", HelpText = "Dropout probability (default 0).")] public float? Dropout { get; set; }
    [Option("seed", Default = 1L)] public long Seed { get; set; } = 1;
    [Option("eval-every", Default = 0, HelpText = "Validate every N steps (0: only at the end).")] public int EvalEvery { get; set; }
    [Option("eval-batches", HelpText = "At most this many validation batches per evaluation (default: all).")] public int? EvalBatches { get; set; }
    [Option("results-dir", Default = "results")] public string ResultsDir { get; set; } = "results";
    [Option("checkpoint", HelpText = "Checkpoint path (default {results-dir}/checkpoints/{dataset}_{technique}.safetensors).")] public string? Checkpoint { get; set; }
    [Option("trace", HelpText = "Write a Chrome trace (Perfetto, chrome://tracing) of memory and ops to this path; synchronizes the device at every op.")] public string? Trace { get; set; }
    [Option("trace-steps", Default = 3, HelpText = "With --trace: trace setup and the first N optimizer steps.")] public int TraceSteps { get; set; } = 3;

    // Data
    [Option("data", HelpText = "A .txt/.jsonl file or a directory of them. Default: the embedded synthetic corpus.")] public string? Data { get; set; }
    [Option("tokenizer", Default = "bpe", HelpText = "bpe, cl100k or o200k.")] public string Tokenizer { get; set; } = "bpe";
    [Option("bpe-vocab", Default = 10_000, HelpText = "Vocabulary of the trained BPE tokenizer.")] public int BpeVocab { get; set; } = 10_000;
    [Option("cache-dir", Default = "./cache")] public string CacheDir { get; set; } = "./cache";
    [Option("corpus-words", Default = SyntheticCorpusOptions.DefaultWords, HelpText = "Length of the synthetic corpus in words.")] public long CorpusWords { get; set; } = SyntheticCorpusOptions.DefaultWords;
    [Option("synthetic-vocab", Default = SyntheticLanguage.DefaultVocabularySize, HelpText = "Distinct words of the synthetic language.")] public int SyntheticVocab { get; set; } = SyntheticLanguage.DefaultVocabularySize;

    // Model overrides
    [Option("layers")] public int? Layers { get; set; }
    [Option("d-model")] public int? DModel { get; set; }
    [Option("heads")] public int? Heads { get; set; }
    [Option("d-ff")] public int? DFF { get; set; }
    [Option("seq-len")] public int? SeqLen { get; set; }
    [Option("vocab-size", HelpText = "Model vocabulary (default: the preset's; must be ≥ the tokenizer's).")] public int? VocabSize { get; set; }
    [Option("positions", HelpText = "sinusoidal or learned.")] public string? Positions { get; set; }
    [Option("post-norm", HelpText = "Post-norm blocks instead of pre-norm.")] public bool PostNorm { get; set; }
    [Option("untied-head", HelpText = "Give the LM head its own weight.")] public bool UntiedHead { get; set; }
    [Option("head-bias", HelpText = "Give the LM head a bias.")] public bool HeadBias { get; set; }

    // Techniques
    [Option("bf16", HelpText = "bf16 mixed precision: bf16 activations, gradients of activations and matmul weight copies; float32 master weights, parameter gradients, Adam state and loss.")]
    public bool Bf16 { get; set; }
    [Option("fp32-matmul", Default = "ieee", HelpText = "GEMMs of fp32 operands: ieee (fp32 FMA on the SIMT kernels), tf32 (tensor cores, operands rounded to TF32) or 3xtf32 (tensor cores, each operand split into two TF32 parts: near-fp32 accuracy). CUDA only; elsewhere every mode is ieee.")]
    public string Fp32Matmul { get; set; } = "ieee";
    [Option("tf32", HelpText = "Short for --fp32-matmul tf32 (PyTorch's torch.backends.cuda.matmul.allow_tf32).")] public bool Tf32 { get; set; }
    [Option("flash-attn", HelpText = "Tiled flash attention: no B×H×T×T scores in memory (no attention dropout).")] public bool FlashAttn { get; set; }
    [Option("window-size", HelpText = "Sliding-window causal attention: each query sees its W most recent positions.")] public int? WindowSize { get; set; }
    [Option("fused-head", HelpText = "LM head and cross-entropy fused and chunked over rows: the B×T×V logits never exist whole (see --head-chunk-rows).")]
    public bool FusedHead { get; set; }
    [Option("head-chunk-rows", Default = HeadSettings.DefaultChunkRows, HelpText = "With --fused-head: rows of logits per chunk (memory in flight: 4 bytes × rows × vocab, 2 under --bf16).")]
    public int HeadChunkRows { get; set; } = HeadSettings.DefaultChunkRows;
    [Option("gradient-checkpointing", HelpText = "Recompute activations in backward instead of keeping them (see --checkpoint-every, --checkpoint-scope).")]
    public bool GradientCheckpointing { get; set; }
    [Option("checkpoint-every", Default = 1, HelpText = "With --gradient-checkpointing: checkpoint every K-th block (index % K == 0).")]
    public int CheckpointEvery { get; set; } = 1;
    [Option("checkpoint-scope", Default = "block", HelpText = "With --gradient-checkpointing: recompute the whole block, or only its attention or mlp half.")]
    public string CheckpointScope { get; set; } = "block";

    // Resume and fault handling
    [Option("save-every", Default = 0, HelpText = "Write a resumable training checkpoint every N steps and at the end (0: only when interrupted).")]
    public int SaveEvery { get; set; }
    [Option("checkpoint-dir", HelpText = "Directory of the training checkpoints (default {results-dir}/checkpoints/{dataset}_{technique}).")]
    public string? CheckpointDir { get; set; }
    [Option("keep-checkpoints", Default = 2, HelpText = "Training checkpoints to keep (older ones are deleted).")]
    public int KeepCheckpoints { get; set; } = 2;
    [Option("resume", HelpText = "Continue a run from a training checkpoint file, or from the newest valid one in a directory; 'latest': this run's checkpoint directory.")]
    public string? Resume { get; set; }
    [Option("detect-anomaly", HelpText = "Check every op's output and gradients for NaN/Inf and stop at the first, naming it (slow).")]
    public bool DetectAnomaly { get; set; }
    [Option("skip-nonfinite", HelpText = "Skip the update of a step with a NaN/Inf loss or gradient instead of stopping (see --max-consecutive-skips).")]
    public bool SkipNonFinite { get; set; }
    [Option("max-consecutive-skips", Default = 10, HelpText = "With --skip-nonfinite: stop after this many skipped steps in a row.")]
    public int MaxConsecutiveSkips { get; set; } = 10;
    [Option("no-grad-check", HelpText = "Without clipping, do not count NaN/Inf gradients after backward (saves one pass per step).")]
    public bool NoGradCheck { get; set; }

    /// <summary>The word that makes --resume use this run's own checkpoint directory.</summary>
    public const string ResumeLatest = "latest";

    /// <summary>
    /// The run's label: --technique when given, else derived from the precision and attention flags ("bf16", "flash",
    /// "window128", "bf16+flash+window128+checkpointing"), else "baseline".
    /// </summary>
    public string TechniqueLabel()
    {
        if (Technique != "baseline") return Technique;
        var parts = new List<string>();
        if (Bf16) parts.Add("bf16");
        if (FlashAttn) parts.Add("flash");
        if (WindowSize is int w) parts.Add($"window{w}");
        if (GradientCheckpointing) parts.Add("checkpointing");
        if (FusedHead) parts.Add("fused_head");
        if (ParsedFp32Matmul() is not Tensors.Fp32Matmul.Ieee and var mode) parts.Add(mode.Name());
        return parts.Count == 0 ? Technique : string.Join("+", parts);
    }

    public TrainOptions Clone() => (TrainOptions)MemberwiseClone();

    public Tensors.Fp32Matmul ParsedFp32Matmul()
    {
        var mode = Fp32MatmulNames.Parse(Fp32Matmul);
        if (!Tf32) return mode;
        if (mode == Tensors.Fp32Matmul.Tf32x3) throw new ArgumentException("--tf32 and --fp32-matmul 3xtf32 contradict each other: give one");
        return Tensors.Fp32Matmul.Tf32;
    }

    public Model.CheckpointScope ParsedCheckpointScope() => CheckpointScope.ToLowerInvariant() switch
    {
        "block" => Model.CheckpointScope.Block,
        "attention" => Model.CheckpointScope.Attention,
        "mlp" => Model.CheckpointScope.Mlp,
        _ => throw new ArgumentException($"--checkpoint-scope must be block, attention or mlp, got '{CheckpointScope}'"),
    };

    public ModelConfig ModelConfig()
    {
        var c = Model.ModelConfig.Preset(Preset);
        return c with
        {
            Layers = Layers ?? c.Layers,
            DModel = DModel ?? c.DModel,
            Heads = Heads ?? c.Heads,
            DFF = DFF ?? c.DFF,
            SeqLen = SeqLen ?? c.SeqLen,
            VocabSize = VocabSize ?? c.VocabSize,
            Positions = Positions is null ? c.Positions : Enum.Parse<PositionEncoding>(Positions, ignoreCase: true),
            Norm = PostNorm ? NormPlacement.Post : c.Norm,
            TiedHead = !UntiedHead && c.TiedHead,
            HeadBias = HeadBias || c.HeadBias,
            Dropout = Dropout ?? c.Dropout,
        };
    }
}

public static class TrainCommand
{
    /// <summary>The command line: Ctrl-C / SIGTERM stop the run cleanly (see <see cref="InterruptSignals"/>); every end prints its message.</summary>
    public static int Run(TrainOptions o)
    {
        using var signals = InterruptSignals.Install(Console.Error);
        var outcome = Execute(o, signals.Token);
        if (outcome.Status == TrainStatus.Interrupted && signals.Signal != 0)
        {
            outcome = outcome with { ExitCode = signals.ExitCode, Message = outcome.Message?.Replace("interrupted", $"interrupted by {signals.SignalName}") };
        }
        if (outcome.Status != TrainStatus.Completed && outcome.Message is not null)
            Console.Error.WriteLine($"memopt: {outcome.Message}");
        return outcome.ExitCode;
    }

    /// <summary>
    /// Runs one training and reports how it ended instead of throwing: completed, interrupted (when
    /// <paramref name="stop"/> is cancelled: the step in progress finishes, a checkpoint and partial metrics are
    /// written, and the outcome carries the exact command that resumes), non-finite, out of memory, or bad input
    /// (including a corrupt or mismatched checkpoint). Unexpected exceptions (bugs, device faults) propagate.
    /// For a parent process, the same ends are the exit codes in <see cref="ExitCodes"/>.
    /// </summary>
    public static TrainOutcome Execute(TrainOptions o, CancellationToken stop = default)
    {
        try
        {
            return Train(o, stop);
        }
        catch (UserError e)
        {
            return new TrainOutcome(TrainStatus.BadInput, ExitCodes.BadInput, e.Message, Error: e);
        }
    }

    private static TrainOutcome Train(TrainOptions o, CancellationToken stop)
    {
        var (config, training) = Settings(o);
        string technique = o.TechniqueLabel();
        TraceOption.Validate(o);

        var data = PrepareData(o, config);
        string dataset = DatasetName(o.Data);
        string checkpointDir = o.CheckpointDir ?? Path.Combine(o.ResultsDir, "checkpoints", $"{ResultsWriter.Sanitize(dataset)}_{ResultsWriter.Sanitize(technique)}");
        var resume = o.Resume is null ? null : LoadResume(o.Resume, checkpointDir, config, training, data);
        using var device = o.OpenDevice();
        using var trace = TraceOption.Start(o, device);
        var info = device.Info();
        Console.WriteLine($"device   {info.Kind}: {info.Name}");
        Console.WriteLine($"model    {config}{(o.Bf16 ? "; bf16 mixed precision" : "")}" +
            (training.Fp32Matmul == Fp32Matmul.Ieee ? "" : $"; fp32 GEMMs {training.Fp32Matmul.Name()} on the tensor cores{(device.IsCuda ? "" : " (CUDA only: IEEE here)")}"));
        TransformerLM model;
        try { model = new TransformerLM(device, config, (int)o.Seed, o.Bf16 ? Precision.Bf16 : Precision.Fp32); }
        catch (OutOfDeviceMemoryException e) { return new TrainOutcome(TrainStatus.OutOfMemory, ExitCodes.OutOfMemory, e.Message, Error: e); }
        using var ownedModel = model;
        Console.WriteLine($"params   {model.ParameterCount.ToString("N0", CultureInfo.InvariantCulture)}");
        Console.WriteLine($"data     {data.Stats.Source}: {data.Stats.Train.Tokens:N0} train tokens, {data.Stats.Val.Tokens:N0} val tokens, tokenizer {data.Stats.TokenizerName} ({data.Tokenizer.VocabSize})" +
                          (data.Stats.BadJsonlLines > 0 ? $"; {data.Stats.BadJsonlLines:N0} malformed .jsonl lines skipped (first: {data.Stats.BadLineExamples.FirstOrDefault()})" : ""));
        if (data.Stats.Val.OptimalPerplexity is double best)
            Console.WriteLine($"optimum  best achievable val perplexity {best:F3} (entropy rate of the synthetic source); " +
                              $"count-based bigram fitted on train: {data.Stats.Val.BigramBaselinePerplexity:F3}");
        if (resume is not null)
            Console.WriteLine($"resume   {resume.Path}: step {resume.Step} of {resume.State.TotalSteps}");

        RunMetrics metrics;
        try
        {
            metrics = TrainWithProgress(model, data, training, dataset, new TrainerHooks(stop, checkpointDir, resume));
        }
        catch (OutOfDeviceMemoryException e)
        {
            return new TrainOutcome(TrainStatus.OutOfMemory, ExitCodes.OutOfMemory, e.Message, Error: e);
        }
        catch (NonFiniteException e)
        {
            return new TrainOutcome(TrainStatus.NonFinite, ExitCodes.NonFinite, e.Message, Error: e);
        }
        catch (Exception e) when (e is DataException or ArgumentException or CheckpointMismatchException or InvalidDataException)
        {
            throw new UserError(e.Message, e);
        }

        var (metricsPath, memoryPath) = ResultsWriter.Write(o.ResultsDir, metrics, new { model = config, training, flags = Environment.GetCommandLineArgs().Skip(1) }, info, data.Stats);
        if (metrics.Partial)
        {
            string? command = metrics.Checkpoint is { } c ? ResumeCommand(o, c) : null;
            string message = $"interrupted after step {metrics.Steps} of {metrics.TotalSteps}; partial metrics in {metricsPath}" +
                             (command is null ? " (no checkpoint was written)" : $"; checkpoint {metrics.Checkpoint}\nresume with:\n  {command}");
            return new TrainOutcome(TrainStatus.Interrupted, ExitCodes.Interrupted, message, metrics, metricsPath, memoryPath,
                CheckpointPath: metrics.Checkpoint, ResumeCommand: command);
        }
        var weights = o.Checkpoint ?? Path.Combine(o.ResultsDir, "checkpoints", $"{ResultsWriter.Sanitize(dataset)}_{ResultsWriter.Sanitize(technique)}.safetensors");
        ModelCheckpoint.Save(weights, model, new Dictionary<string, string> { ["memopt.config"] = System.Text.Json.JsonSerializer.Serialize(config, ResultsWriter.Json) });

        Console.WriteLine();
        Console.WriteLine($"val loss {metrics.ValLoss:F4}  val ppl {metrics.ValPerplexity:F3}" +
                          (metrics.OptimalValPerplexity is double opt ? $"  (optimum {opt:F3}, gap {100 * (metrics.ValPerplexity / opt - 1):F1}%; bigram baseline {data.Stats.Val.BigramBaselinePerplexity:F3})" : ""));
        Console.WriteLine($"step     mean {metrics.StepMsMean:F1} ms, median {metrics.StepMsMedian:F1} ms over {metrics.TimedSteps} steps; epoch {metrics.EpochSeconds:F1} s; {metrics.TokensPerSecond:N0} tokens/s");
        Console.WriteLine($"memory   peak {ByteSize.Format(metrics.Memory.PeakBytes)} tracked (forward {ByteSize.Format(metrics.Memory.ForwardPeakBytes)}, backward {ByteSize.Format(metrics.Memory.BackwardPeakBytes)}), reserved {ByteSize.Format(metrics.Memory.PeakReservedBytes)}" +
                          (metrics.Memory.DriverUsedBytes is long d ? $", driver {ByteSize.Format(d)}" : ""));
        if (metrics.SkippedSteps.Count > 0)
            Console.WriteLine($"skipped  {metrics.SkippedSteps.Count} step(s) with a non-finite loss or gradient: {string.Join(", ", metrics.SkippedSteps.Take(20))}");
        Console.WriteLine($"wrote    {metricsPath}, {memoryPath}, {weights}" + (metrics.Checkpoint is { } last ? $", {last}" : ""));
        TraceOption.Finish(trace);
        return new TrainOutcome(TrainStatus.Completed, ExitCodes.Completed, null, metrics, metricsPath, memoryPath, weights, metrics.Checkpoint);
    }

    /// <summary>The checkpoint named by --resume (a file, a directory, or "latest": this run's directory), verified and checked against this run.</summary>
    private static TrainingCheckpoint LoadResume(string resume, string checkpointDir, ModelConfig config, TrainingOptions training, PreparedData data)
    {
        bool latest = resume.Equals(TrainOptions.ResumeLatest, StringComparison.OrdinalIgnoreCase);
        string path = latest ? checkpointDir : resume;
        if (latest && !Directory.Exists(path))
            throw new UserError($"--resume {TrainOptions.ResumeLatest}: no checkpoint directory '{path}' (checkpoints are written with --save-every N and when a run is interrupted; --checkpoint-dir names another place)");
        try
        {
            var checkpoint = TrainingCheckpoint.Resolve(path, m => Console.Error.WriteLine($"resume: {m}"));
            checkpoint.CheckMatches(config, training, DataIdentity.Of(data));
            return checkpoint;
        }
        catch (Exception e) when (e is InvalidDataException or FileNotFoundException or CheckpointMismatchException or IOException)
        {
            throw new UserError(e.Message, e);
        }
    }

    /// <summary>
    /// The command line that continues this run from <paramref name="checkpoint"/>: every option with its value as this
    /// run had it, defaults included (CommandLineParser's own FormatCommandLine drops values equal to default(T), such
    /// as --grad-clip 0, which would resume with the wrong options), plus --resume; quoted for a POSIX shell.
    /// </summary>
    public static string ResumeCommand(TrainOptions o, string checkpoint)
    {
        var copy = o.Clone();
        copy.Resume = checkpoint;
        var args = new List<string> { "memopt", "train" };
        foreach (var property in typeof(TrainOptions).GetProperties())
        {
            if (property.GetCustomAttributes(typeof(OptionAttribute), inherit: true).FirstOrDefault() is not OptionAttribute option) continue;
            switch (property.GetValue(copy))
            {
                case null:
                case false:
                    break;
                case true:
                    args.Add("--" + option.LongName);
                    break;
                case IFormattable value:
                    args.Add("--" + option.LongName);
                    args.Add(value.ToString(null, CultureInfo.InvariantCulture));
                    break;
                case var value:
                    args.Add("--" + option.LongName);
                    args.Add(ShellQuote(value.ToString()!));
                    break;
            }
        }
        return string.Join(' ', args);
    }

    private static string ShellQuote(string s) =>
        s.Length > 0 && s.All(c => char.IsAsciiLetterOrDigit(c) || "_-./:=@%+,".Contains(c)) ? s : "'" + s.Replace("'", "'\\''") + "'";

    /// <summary>
    /// `--resume` with no path means "latest": CommandLineParser has no optional option values, so the argument list is
    /// completed before parsing (Program.Main calls this).
    /// </summary>
    public static string[] NormalizeArguments(string[] args)
    {
        var list = new List<string>(args.Length + 1);
        for (int i = 0; i < args.Length; i++)
        {
            list.Add(args[i]);
            if (args[i] == "--resume" && (i + 1 == args.Length || args[i + 1].StartsWith("--", StringComparison.Ordinal)))
                list.Add(TrainOptions.ResumeLatest);
        }
        return [.. list];
    }

    /// <summary>The model shape and training options the flags describe (shared with `memopt memory`).</summary>
    internal static (ModelConfig Config, TrainingOptions Training) Settings(TrainOptions o)
    {
        ModelConfig config;
        TrainingOptions training;
        try
        {
            config = o.ModelConfig();
            config.Validate();
            if (o.FlashAttn && config.Dropout > 0)
                throw new ArgumentException($"--flash-attn does not support attention dropout: run with --dropout 0 (got --dropout {config.Dropout})");
            training = new TrainingOptions
            {
                Technique = o.TechniqueLabel(), BatchSize = o.BatchSize, Epochs = o.Epochs, Steps = o.Steps, LearningRate = o.Lr,
                Optimizer = Enum.Parse<OptimizerKind>(o.Optimizer, ignoreCase: true), WeightDecay = o.WeightDecay,
                Schedule = Enum.Parse<ScheduleKind>(o.Schedule, ignoreCase: true), WarmupSteps = o.WarmupSteps,
                GradClip = o.GradClip, GradAccumulation = o.GradAccum, LabelSmoothing = o.LabelSmoothing, Seed = (ulong)o.Seed,
                EvalEvery = o.EvalEvery, EvalBatches = o.EvalBatches, WindowSize = o.WindowSize, FlashAttention = o.FlashAttn,
                GradientCheckpointing = o.GradientCheckpointing, CheckpointEvery = o.CheckpointEvery,
                CheckpointScope = o.ParsedCheckpointScope(), Bf16 = o.Bf16, Fp32Matmul = o.ParsedFp32Matmul(), FusedHead = o.FusedHead, HeadChunkRows = o.HeadChunkRows,
                SaveEvery = o.SaveEvery, KeepCheckpoints = o.KeepCheckpoints, DetectAnomaly = o.DetectAnomaly,
                SkipNonFinite = o.SkipNonFinite, MaxConsecutiveSkips = o.MaxConsecutiveSkips, CheckGradients = !o.NoGradCheck,
            };
            training.Validate();
        }
        catch (ArgumentException e)
        {
            throw new UserError(e.Message, e);
        }
        return (config, training);
    }

    internal static PreparedData PrepareData(TrainOptions o, ModelConfig config)
    {
        try
        {
            return DataPipeline.Prepare(new DataOptions
            {
                DataPath = o.Data,
                Tokenizer = PrepareOptions.ParseTokenizer(o.Tokenizer),
                VocabSize = o.BpeVocab,
                SeqLen = config.SeqLen,
                Seed = (ulong)o.Seed,
                CacheDir = o.CacheDir,
                CorpusWords = o.CorpusWords,
                SyntheticVocabulary = o.SyntheticVocab,
                Log = m => Console.Error.WriteLine($"data: {m}"),
            });
        }
        catch (Exception e) when (e is DataException or ArgumentException or IOException)
        {
            throw new UserError(e.Message, e);
        }
    }

    internal static string DatasetName(string? path) =>
        path is null ? "synthetic" : Path.GetFileNameWithoutExtension(Path.TrimEndingDirectorySeparator(path));

    private sealed record TrainerHooks(CancellationToken Stop, string CheckpointDirectory, TrainingCheckpoint? Resume);

    private static Trainer MakeTrainer(TransformerLM model, PreparedData data, TrainingOptions training, TrainerHooks hooks,
        Action<StepReport> onStep, Action<EvalReport> onEval, Action<string> log) =>
        new(model, data, training)
        {
            OnStep = onStep, OnEval = onEval, Log = log,
            Stop = hooks.Stop, CheckpointDirectory = hooks.CheckpointDirectory, Resume = hooks.Resume,
        };

    private static RunMetrics TrainWithProgress(TransformerLM model, PreparedData data, TrainingOptions training, string dataset, TrainerHooks hooks)
    {
        if (Console.IsOutputRedirected || !AnsiConsole.Profile.Capabilities.Interactive)
        {
            // Logs and CI: one line every ~5% of the run instead of a redrawn bar.
            return MakeTrainer(model, data, training, hooks,
                s => { if (s.Step == 1 || s.Step == s.TotalSteps || s.Step % Math.Max(1, s.TotalSteps / 20) == 0) Console.WriteLine(StepLine(s)); },
                e => Console.WriteLine($"eval     step {e.Step}: val loss {e.Loss:F4}, ppl {e.Perplexity:F3}"),
                m => Console.WriteLine($"train    {m}")).Run(dataset);
        }
        RunMetrics? result = null;
        AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask("training", maxValue: 1);
                result = MakeTrainer(model, data, training, hooks,
                    s => { task.MaxValue = s.TotalSteps; task.Value = s.Step; task.Description = Markup.Escape(StepLine(s)); },
                    e => AnsiConsole.MarkupLine(Markup.Escape($"eval step {e.Step}: val loss {e.Loss:F4}, ppl {e.Perplexity:F3}")),
                    m => AnsiConsole.MarkupLine(Markup.Escape(m))).Run(dataset);
            });
        return result!;
    }

    private static string StepLine(StepReport s) =>
        $"step {s.Step}/{s.TotalSteps} loss {s.Loss:F4} lr {s.LearningRate:E2} | {s.TokensPerSecond:N0} tok/s | mem {ByteSize.Format(s.LiveBytes)} (peak {ByteSize.Format(s.PeakBytes)})";
}
