using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Memopt.Autograd.Optim;
using Memopt.Model.Training;
using Memopt.Tensors;

namespace Memopt.Model.Checkpoints;

/// <summary>Why and where a checkpoint was written, and the optimizer's own step count (skipped steps do not count).</summary>
public sealed record CheckpointState(long Step, long TotalSteps, long OptimizerSteps, ulong Seed, string LrSchedule, float NextLearningRate, string Reason, DateTime WrittenUtc);

/// <summary>
/// A resumable training checkpoint: ONE safetensors file, step-NNNNNNNN.safetensors, in the run's checkpoint directory.
/// <list type="bullet">
/// <item>Tensors: every parameter under its model name, F32 (so safetensors.torch.load_file reads the weights as
///   they are), and the optimizer state under "optimizer." + <see cref="AdamW.StateTensors"/> names
///   (optimizer.exp_avg.{param}, optimizer.exp_avg_sq.{param}).</item>
/// <item>Metadata (JSON strings): memopt.kind = training_checkpoint, memopt.checkpoint_format, memopt.config (the
///   model), memopt.training (every training option), memopt.data (<see cref="DataIdentity"/>), memopt.state
///   (<see cref="CheckpointState"/>: step, optimizer step count, seed, schedule), memopt.progress
///   (<see cref="TrainingProgress"/>: data position, loss curve, step times, evaluations, skipped steps).</item>
/// <item>memopt.file_sha256 over every byte (<see cref="SafeTensors"/>), verified before anything is read.</item>
/// </list>
/// One file rather than a directory with a manifest: a single rename publishes the whole checkpoint atomically, so
/// there is never a half-written checkpoint to detect or clean up, and one checksum covers weights, optimizer state
/// and metadata together. The cost, holding the file in host memory while writing and reading, is three times the
/// parameter bytes.
/// </summary>
public sealed class TrainingCheckpoint
{
    public const string KindValue = "training_checkpoint";
    public const int Format = 1;
    public const string OptimizerPrefix = "optimizer.";
    public const string KindKey = "memopt.kind", FormatKey = "memopt.checkpoint_format", ConfigKey = "memopt.config",
        TrainingKey = "memopt.training", DataKey = "memopt.data", StateKey = "memopt.state", ProgressKey = "memopt.progress";
    private const string FilePrefix = "step-", FileSuffix = ".safetensors";

    /// <summary>Training options a resumed run may change: labels, evaluation and timing windows, checkpointing and
    /// fault handling, and gradient checkpointing (a memory technique that recomputes the same values).</summary>
    public static readonly IReadOnlySet<string> ChangeableOptions = new HashSet<string>
    {
        "technique", "eval_every", "eval_batches", "timing_warmup_steps", "timing_steps", "save_every", "keep_checkpoints",
        "detect_anomaly", "skip_non_finite", "max_consecutive_skips", "check_gradients",
        "gradient_checkpointing", "checkpoint_every", "checkpoint_scope", "checkpointing",
    };

    private static readonly JsonSerializerOptions Json = new(ResultsWriter.Json) { WriteIndented = false };

    private IReadOnlyDictionary<string, NamedTensor>? _tensors;   // dropped after Restore: it is 3× the parameter bytes of host memory
    private readonly JsonObject _model, _training, _data;
    private readonly string _progress;

    private TrainingCheckpoint(string path, IReadOnlyDictionary<string, NamedTensor> tensors, JsonObject model, JsonObject training,
        JsonObject data, CheckpointState state, string progress, ModelConfig config, DataIdentity identity)
    {
        Path = path; _tensors = tensors; _model = model; _training = training; _data = data; State = state; _progress = progress;
        Model = config; Data = identity;
    }

    public string Path { get; }
    public CheckpointState State { get; }
    public long Step => State.Step;
    public ModelConfig Model { get; }
    public DataIdentity Data { get; }
    /// <summary>The training options as saved (JSON, snake_case names as in the results files).</summary>
    public JsonObject TrainingOptions => (JsonObject)_training.DeepClone();
    /// <summary>A fresh copy of the saved progress (the caller may continue it).</summary>
    public TrainingProgress Progress() => JsonSerializer.Deserialize<TrainingProgress>(_progress, Json)!;

    public static string FileName(long step) => $"{FilePrefix}{step.ToString("D8", CultureInfo.InvariantCulture)}{FileSuffix}";

    /// <summary>
    /// Writes the checkpoint of <paramref name="state"/>.Step into <paramref name="directory"/> atomically, then deletes
    /// all but the newest <paramref name="keep"/> checkpoints there (and temporary files of writers that died). Returns the path.
    /// </summary>
    public static string Save(string directory, TransformerLM model, AdamW optimizer, TrainingOptions options, DataIdentity data,
        TrainingProgress progress, CheckpointState state, int keep)
    {
        if (keep < 1) throw new ArgumentOutOfRangeException(nameof(keep), keep, "keep at least one checkpoint");
        var tensors = new List<NamedTensor>();
        foreach (var p in model.Parameters) tensors.Add(Named(p.Name, p.Value));
        foreach (var (name, t) in optimizer.StateTensors()) tensors.Add(Named(OptimizerPrefix + name, t));
        var metadata = new Dictionary<string, string>
        {
            [KindKey] = KindValue,
            [FormatKey] = Format.ToString(CultureInfo.InvariantCulture),
            [ConfigKey] = JsonSerializer.Serialize(model.Config, Json),
            [TrainingKey] = JsonSerializer.Serialize(options, Json),
            [DataKey] = JsonSerializer.Serialize(data, Json),
            [StateKey] = JsonSerializer.Serialize(state, Json),
            [ProgressKey] = JsonSerializer.Serialize(progress, Json),
        };
        string path = System.IO.Path.Combine(directory, FileName(state.Step));
        SafeTensors.Save(path, tensors, metadata);
        Prune(directory, keep, path);
        return path;
    }

    private static NamedTensor Named(string name, Tensor t) => new(name, DTypeName(t.DType), t.Shape.Dims.ToArray(), t.ToRawArray());

    private static string DTypeName(DType d) => d switch
    {
        DType.F32 => "F32",
        DType.BF16 => "BF16",
        DType.I32 => "I32",
        _ => throw new ArgumentException($"checkpoint: no safetensors name for dtype {d}"),
    };

    /// <summary>
    /// Reads and verifies a training checkpoint: the whole-file checksum, then that it is a training checkpoint of a
    /// known format with every metadata entry present and readable. Anything else is an <see cref="InvalidDataException"/>
    /// naming the file and the problem; a missing file a <see cref="FileNotFoundException"/>.
    /// </summary>
    public static TrainingCheckpoint Load(string path)
    {
        var file = SafeTensors.Load(path, requireChecksum: true);
        InvalidDataException Bad(string why) => new($"checkpoint '{path}': {why}");
        var meta = file.Metadata;
        if (!meta.TryGetValue(KindKey, out var kind))
            throw Bad(meta.ContainsKey(ConfigKey) ? "holds model weights only, not a training checkpoint (no optimizer state or progress); train with --save-every to get resumable checkpoints" : "not a memopt training checkpoint");
        if (kind != KindValue) throw Bad($"is a '{kind}', not a training checkpoint");
        if (!meta.TryGetValue(FormatKey, out var format) || format != Format.ToString(CultureInfo.InvariantCulture))
            throw Bad($"checkpoint format {format ?? "(none)"}, this build reads format {Format}");

        string Entry(string key) => meta.TryGetValue(key, out var v) ? v : throw Bad($"metadata entry {key} is missing");
        T Parse<T>(string key)
        {
            try { return JsonSerializer.Deserialize<T>(Entry(key), Json) ?? throw Bad($"metadata entry {key} is empty"); }
            catch (JsonException e) { throw Bad($"metadata entry {key} is not readable ({e.Message})"); }
        }
        JsonObject Object(string key)
        {
            try { return JsonNode.Parse(Entry(key)) as JsonObject ?? throw Bad($"metadata entry {key} is not a JSON object"); }
            catch (JsonException e) { throw Bad($"metadata entry {key} is not readable ({e.Message})"); }
        }
        var config = Parse<ModelConfig>(ConfigKey);
        var identity = Parse<DataIdentity>(DataKey);
        var state = Parse<CheckpointState>(StateKey);
        var progress = Parse<TrainingProgress>(ProgressKey);
        if (progress.Step != state.Step) throw Bad($"progress is at step {progress.Step} but the state says {state.Step}");
        var tensors = new Dictionary<string, NamedTensor>();
        foreach (var t in file.Tensors) tensors[t.Name] = t;
        return new TrainingCheckpoint(path, tensors, Object(ConfigKey), Object(TrainingKey), Object(DataKey), state, Entry(ProgressKey), config, identity);
    }

    /// <summary>
    /// Throws a <see cref="CheckpointMismatchException"/> naming the file and the first field that differs between the
    /// checkpoint and this run: any model field (another architecture), any data identity field but the source path
    /// (another tokenizer, vocabulary, sequence length or corpus), any training option not in <see cref="ChangeableOptions"/>.
    /// </summary>
    public void CheckMatches(ModelConfig config, TrainingOptions options, DataIdentity data)
    {
        Compare("model", _model, JsonSerializer.SerializeToNode(config, Json)!.AsObject(), new HashSet<string>(),
            "a checkpoint of another architecture");
        Compare("data", _data, JsonSerializer.SerializeToNode(data, Json)!.AsObject(), new HashSet<string> { "source" },
            "the data were prepared with another tokenizer, vocabulary, sequence length or corpus");
        Compare("training", _training, JsonSerializer.SerializeToNode(options, Json)!.AsObject(), ChangeableOptions,
            "resume with the options the run started with");
    }

    private void Compare(string section, JsonObject saved, JsonObject current, IReadOnlySet<string> ignored, string hint)
    {
        foreach (var key in saved.Select(kv => kv.Key).Union(current.Select(kv => kv.Key)))
        {
            if (ignored.Contains(key)) continue;
            saved.TryGetPropertyValue(key, out var a);
            current.TryGetPropertyValue(key, out var b);
            if (!JsonNode.DeepEquals(a, b))
                throw new CheckpointMismatchException(Path, $"{section}.{key}", Show(a), Show(b), hint);
        }
    }

    private static string Show(JsonNode? n) => n is null ? "absent" : n.ToJsonString();

    /// <summary>
    /// Copies the weights and the optimizer state into <paramref name="model"/> and <paramref name="optimizer"/>; every
    /// tensor must be there with its dtype and shape. Once: the host copies are released afterwards.
    /// </summary>
    public void Restore(TransformerLM model, AdamW optimizer)
    {
        var tensors = _tensors ?? throw new InvalidOperationException($"checkpoint '{Path}' was already restored (load it again to restore it twice)");
        var unused = new HashSet<string>(tensors.Keys);
        void Copy(string name, Tensor into)
        {
            if (!tensors.TryGetValue(name, out var t))
                throw new InvalidDataException($"checkpoint '{Path}' has no tensor '{name}' (a checkpoint of another architecture or optimizer?)");
            if (t.DType != DTypeName(into.DType) || !t.Shape.SequenceEqual(into.Shape.Dims))
                throw new InvalidDataException($"checkpoint '{Path}': '{name}' is {t.DType} {Shape.Format(t.Shape)}, this run expects {DTypeName(into.DType)} {into.Shape}");
            into.CopyFromRaw(t.Data);
            unused.Remove(name);
        }
        foreach (var p in model.Parameters) Copy(p.Name, p.Value);
        foreach (var (name, t) in optimizer.StateTensors()) Copy(OptimizerPrefix + name, t);
        if (unused.Count > 0)
            throw new InvalidDataException($"checkpoint '{Path}' has tensors this run lacks: {string.Join(", ", unused.Take(5))} (another architecture?)");
        optimizer.StepCount = State.OptimizerSteps;
        _tensors = null;
    }

    /// <summary>Checkpoint files in a directory, newest step first.</summary>
    public static IReadOnlyList<(long Step, string Path)> List(string directory)
    {
        if (!Directory.Exists(directory)) return [];
        var found = new List<(long, string)>();
        foreach (var file in Directory.EnumerateFiles(directory, FilePrefix + "*" + FileSuffix))
        {
            var name = System.IO.Path.GetFileName(file);
            var digits = name[FilePrefix.Length..^FileSuffix.Length];
            if (long.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out long step)) found.Add((step, file));
        }
        return found.OrderByDescending(f => f.Item1).ToList();
    }

    /// <summary>
    /// The newest checkpoint in <paramref name="directory"/> that loads and verifies. A damaged newer one is reported
    /// through <paramref name="log"/> (file and problem) and the next older one tried; none valid is an
    /// <see cref="InvalidDataException"/> listing each file's problem.
    /// </summary>
    public static TrainingCheckpoint Latest(string directory, Action<string>? log = null)
    {
        var files = List(directory);
        if (files.Count == 0) throw new InvalidDataException($"no checkpoint ({FilePrefix}N{FileSuffix}) in '{directory}'");
        var problems = new List<string>();
        foreach (var (_, file) in files)
        {
            try { return Load(file); }
            catch (InvalidDataException e)
            {
                problems.Add(e.Message);
                log?.Invoke($"{e.Message}; trying an older checkpoint");
            }
        }
        throw new InvalidDataException($"no valid checkpoint in '{directory}': {string.Join("; ", problems)}");
    }

    /// <summary>A checkpoint file as is, or the newest valid checkpoint of a directory.</summary>
    public static TrainingCheckpoint Resolve(string path, Action<string>? log = null)
    {
        if (Directory.Exists(path)) return Latest(path, log);
        if (!File.Exists(path)) throw new FileNotFoundException($"checkpoint '{path}' does not exist", path);
        return Load(path);
    }

    private static void Prune(string directory, int keep, string justWritten)
    {
        foreach (var (_, file) in List(directory).Skip(keep))
            if (!string.Equals(System.IO.Path.GetFullPath(file), System.IO.Path.GetFullPath(justWritten), StringComparison.Ordinal))
                TryDelete(file);
        // Temporary files of a writer that was killed mid-write (AtomicFile names them PATH.tmp-PID-GUID).
        foreach (var temp in Directory.EnumerateFiles(directory, FilePrefix + "*" + FileSuffix + ".tmp-*"))
        {
            var parts = System.IO.Path.GetFileName(temp).Split(".tmp-")[^1].Split('-');
            if (int.TryParse(parts[0], out int pid) && pid != Environment.ProcessId && !IsAlive(pid)) TryDelete(temp);
        }
    }

    private static bool IsAlive(int pid)
    {
        try { using var p = System.Diagnostics.Process.GetProcessById(pid); return !p.HasExited; }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException) { return false; }
    }

    private static void TryDelete(string file)
    {
        try { File.Delete(file); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

/// <summary>A valid checkpoint that does not fit this run: names the file, the field and both values.</summary>
public sealed class CheckpointMismatchException(string path, string field, string saved, string current, string hint)
    : Exception($"checkpoint '{path}' does not match this run: {field} is {saved} in the checkpoint but {current} here ({hint})")
{
    public string Path { get; } = path;
    public string Field { get; } = field;
}
