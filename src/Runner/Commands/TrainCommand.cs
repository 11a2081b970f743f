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

    // Techniques (their issues bring them)
    [Option("bf16")] public bool Bf16 { get; set; }
    [Option("flash-attn")] public bool FlashAttn { get; set; }
    [Option("window-size")] public int? WindowSize { get; set; }
    [Option("gradient-checkpointing", HelpText = "Recompute activations in backward instead of keeping them (see --checkpoint-every, --checkpoint-scope).")]
    public bool GradientCheckpointing { get; set; }
    [Option("checkpoint-every", Default = 1, HelpText = "With --gradient-checkpointing: checkpoint every K-th block (index % K == 0).")]
    public int CheckpointEvery { get; set; } = 1;
    [Option("checkpoint-scope", Default = "block", HelpText = "With --gradient-checkpointing: recompute the whole block, or only its attention or mlp half.")]
    public string CheckpointScope { get; set; } = "block";

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
    public static int Run(TrainOptions o)
    {
        foreach (var (flag, on) in new[] { ("--bf16", o.Bf16), ("--flash-attn", o.FlashAttn) })
            if (on) throw new UserError($"{flag} is not supported yet (it arrives with its own issue); run without it");

        var (config, training) = Settings(o);
        TraceOption.Validate(o);

        var data = PrepareData(o, config);
        using var device = o.OpenDevice();
        using var trace = TraceOption.Start(o, device);
        var info = device.Info();
        Console.WriteLine($"device   {info.Kind}: {info.Name}");
        Console.WriteLine($"model    {config}");
        using var model = new TransformerLM(device, config, (int)o.Seed);
        Console.WriteLine($"params   {model.ParameterCount.ToString("N0", CultureInfo.InvariantCulture)}");
        Console.WriteLine($"data     {data.Stats.Source}: {data.Stats.Train.Tokens:N0} train tokens, {data.Stats.Val.Tokens:N0} val tokens, tokenizer {data.Stats.TokenizerName} ({data.Tokenizer.VocabSize})");
        if (data.Stats.Val.OptimalPerplexity is double best)
            Console.WriteLine($"optimum  best achievable val perplexity {best:F3} (entropy rate of the synthetic source); " +
                              $"count-based bigram fitted on train: {data.Stats.Val.BigramBaselinePerplexity:F3}");

        string dataset = DatasetName(o.Data);
        RunMetrics metrics;
        try
        {
            metrics = TrainWithProgress(model, data, training, dataset);
        }
        catch (OutOfDeviceMemoryException e)
        {
            throw new UserError(e.Message, e);
        }
        catch (Exception e) when (e is DataException or NonFiniteLossException or ArgumentException)
        {
            throw new UserError(e.Message, e);
        }

        var (metricsPath, memoryPath) = ResultsWriter.Write(o.ResultsDir, metrics, new { model = config, training, flags = Environment.GetCommandLineArgs().Skip(1) }, info, data.Stats);
        var ckpt = o.Checkpoint ?? Path.Combine(o.ResultsDir, "checkpoints", $"{ResultsWriter.Sanitize(dataset)}_{ResultsWriter.Sanitize(o.Technique)}.safetensors");
        ModelCheckpoint.Save(ckpt, model, new Dictionary<string, string> { ["memopt.config"] = System.Text.Json.JsonSerializer.Serialize(config, ResultsWriter.Json) });

        Console.WriteLine();
        Console.WriteLine($"val loss {metrics.ValLoss:F4}  val ppl {metrics.ValPerplexity:F3}" +
                          (metrics.OptimalValPerplexity is double opt ? $"  (optimum {opt:F3}, gap {100 * (metrics.ValPerplexity / opt - 1):F1}%; bigram baseline {data.Stats.Val.BigramBaselinePerplexity:F3})" : ""));
        Console.WriteLine($"step     mean {metrics.StepMsMean:F1} ms, median {metrics.StepMsMedian:F1} ms over {metrics.TimedSteps} steps; epoch {metrics.EpochSeconds:F1} s; {metrics.TokensPerSecond:N0} tokens/s");
        Console.WriteLine($"memory   peak {ByteSize.Format(metrics.Memory.PeakBytes)} tracked (forward {ByteSize.Format(metrics.Memory.ForwardPeakBytes)}, backward {ByteSize.Format(metrics.Memory.BackwardPeakBytes)}), reserved {ByteSize.Format(metrics.Memory.PeakReservedBytes)}" +
                          (metrics.Memory.DriverUsedBytes is long d ? $", driver {ByteSize.Format(d)}" : ""));
        Console.WriteLine($"wrote    {metricsPath}, {memoryPath}, {ckpt}");
        TraceOption.Finish(trace);
        return 0;
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
            training = new TrainingOptions
            {
                Technique = o.Technique, BatchSize = o.BatchSize, Epochs = o.Epochs, Steps = o.Steps, LearningRate = o.Lr,
                Optimizer = Enum.Parse<OptimizerKind>(o.Optimizer, ignoreCase: true), WeightDecay = o.WeightDecay,
                Schedule = Enum.Parse<ScheduleKind>(o.Schedule, ignoreCase: true), WarmupSteps = o.WarmupSteps,
                GradClip = o.GradClip, GradAccumulation = o.GradAccum, LabelSmoothing = o.LabelSmoothing, Seed = (ulong)o.Seed,
                EvalEvery = o.EvalEvery, EvalBatches = o.EvalBatches, WindowSize = o.WindowSize,
                GradientCheckpointing = o.GradientCheckpointing, CheckpointEvery = o.CheckpointEvery,
                CheckpointScope = o.ParsedCheckpointScope(),
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

    private static RunMetrics TrainWithProgress(TransformerLM model, PreparedData data, TrainingOptions training, string dataset)
    {
        if (Console.IsOutputRedirected || !AnsiConsole.Profile.Capabilities.Interactive)
        {
            // Logs and CI: one line every ~5% of the run instead of a redrawn bar.
            var trainer = new Trainer(model, data, training)
            {
                OnStep = s => { if (s.Step == 1 || s.Step == s.TotalSteps || s.Step % Math.Max(1, s.TotalSteps / 20) == 0) Console.WriteLine(StepLine(s)); },
                OnEval = e => Console.WriteLine($"eval     step {e.Step}: val loss {e.Loss:F4}, ppl {e.Perplexity:F3}"),
            };
            return trainer.Run(dataset);
        }
        RunMetrics? result = null;
        AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                var task = ctx.AddTask("training", maxValue: 1);
                var trainer = new Trainer(model, data, training)
                {
                    OnStep = s => { task.MaxValue = s.TotalSteps; task.Value = s.Step; task.Description = Markup.Escape(StepLine(s)); },
                    OnEval = e => AnsiConsole.MarkupLine(Markup.Escape($"eval step {e.Step}: val loss {e.Loss:F4}, ppl {e.Perplexity:F3}")),
                };
                result = trainer.Run(dataset);
            });
        return result!;
    }

    private static string StepLine(StepReport s) =>
        $"step {s.Step}/{s.TotalSteps} loss {s.Loss:F4} lr {s.LearningRate:E2} | {s.TokensPerSecond:N0} tok/s | mem {ByteSize.Format(s.LiveBytes)} (peak {ByteSize.Format(s.PeakBytes)})";
}
