using FsCheck;
using FsCheck.Xunit;
using Memopt.Autograd.Optim;
using Memopt.Model;
using Memopt.Model.Checkpoints;
using Memopt.Model.Training;
using Memopt.Tests.Harness;

namespace Memopt.Tests.Model;

/// <summary>A damaged training checkpoint is never loaded; a valid one that does not fit the run is refused naming the field.</summary>
public class CheckpointCorruptionTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("memopt-corrupt").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static readonly ModelConfig Config = TransformerLMTests.Tiny();
    private static readonly TrainingOptions Training = new() { BatchSize = 2, Steps = 10, SaveEvery = 5 };
    private static readonly DataIdentity Data = new("bpe-300", "00000000000abcde", 300, 6, 12345, new string('7', 64), "synthetic");

    /// <summary>A real training checkpoint of the tiny model (a few KB: every property case reads it whole).</summary>
    private static readonly Lazy<byte[]> Pristine = new(() =>
    {
        string dir = Directory.CreateTempSubdirectory("memopt-pristine").FullName;
        try
        {
            using var model = new TransformerLM(TestDevice.Get(), Config, seed: 3);
            using var optimizer = new AdamW(model.Parameters);
            var progress = new TrainingProgress { Step = 5, DataBatchIndex = 5, LossCurve = [3.1, 3.0, 2.9, 2.8, 2.7], StepMs = [1, 1, 1, 1, 1] };
            var state = new CheckpointState(5, 10, 5, 1, "constant", 1e-3f, "periodic", DateTime.UnixEpoch);
            return File.ReadAllBytes(TrainingCheckpoint.Save(dir, model, optimizer, Training, Data, progress, state, keep: 2));
        }
        finally { Directory.Delete(dir, recursive: true); }
    });

    private string Write(byte[] bytes)
    {
        string path = Path.Combine(_dir, $"{Guid.NewGuid():N}.safetensors");
        File.WriteAllBytes(path, bytes);
        return path;
    }

    [Fact]
    public void The_pristine_checkpoint_loads_with_its_state()
    {
        var c = TrainingCheckpoint.Load(Write(Pristine.Value));
        Assert.Equal(5, c.Step);
        Assert.Equal(Config, c.Model);
        Assert.Equal(Data, c.Data);
        Assert.Equal([3.1, 3.0, 2.9, 2.8, 2.7], c.Progress().LossCurve);
        c.CheckMatches(Config, Training, Data);
    }

    [Property(MaxTest = 300)]
    public void A_checkpoint_truncated_at_any_offset_is_rejected_naming_the_file(PositiveInt cut)
    {
        var bytes = Pristine.Value;
        string path = Write(bytes[..(cut.Get % bytes.Length)]);   // every strict prefix, the empty file included
        var e = Assert.ThrowsAny<InvalidDataException>(() => TrainingCheckpoint.Load(path));
        Assert.Contains(path, e.Message);
    }

    [Property(MaxTest = 300)]
    public void A_checkpoint_with_any_single_byte_altered_is_rejected_naming_the_file(PositiveInt at, byte xor)
    {
        var bytes = (byte[])Pristine.Value.Clone();
        // Half the cases hit the 8-byte length and the JSON header (metadata, names, shapes, the checksum's digits),
        // half the data; any non-zero xor.
        int header = 8 + (int)BitConverter.ToUInt64(bytes, 0);
        int i = at.Get % 2 == 0 ? at.Get / 2 % header : header + at.Get / 2 % (bytes.Length - header);
        bytes[i] ^= xor == 0 ? (byte)0x01 : xor;
        string path = Write(bytes);
        var e = Assert.ThrowsAny<InvalidDataException>(() => TrainingCheckpoint.Load(path));
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void Each_kind_of_damage_gets_its_own_message()
    {
        var bytes = Pristine.Value;
        string Problem(byte[] b) => Assert.ThrowsAny<InvalidDataException>(() => TrainingCheckpoint.Load(Write(b))).Message;
        Assert.Contains("only 5 bytes (truncated?)", Problem(bytes[..5]));
        Assert.Contains("truncated", Problem(bytes[..(bytes.Length / 2)]));
        var flipped = (byte[])bytes.Clone();
        flipped[^1] ^= 0x80;
        Assert.Contains("checksum mismatch", Problem(flipped));
        // A digit of the step count in the metadata: the JSON stays valid, only the checksum can tell.
        var text = System.Text.Encoding.ASCII.GetString(bytes);
        int step = text.IndexOf("\\u0022step\\u0022:5", StringComparison.Ordinal);
        if (step < 0) step = text.IndexOf("\\\"step\\\":5", StringComparison.Ordinal);
        Assert.True(step > 0, "the step is in the metadata");
        var altered = (byte[])bytes.Clone();
        altered[text.IndexOf('5', step)] = (byte)'7';
        Assert.Contains("checksum mismatch", Problem(altered));
        Assert.Throws<FileNotFoundException>(() => TrainingCheckpoint.Load(Path.Combine(_dir, "missing.safetensors")));
    }

    [Fact]
    public void Weights_only_files_are_not_training_checkpoints()
    {
        using var model = new TransformerLM(TestDevice.Get(), Config, seed: 3);
        string path = Path.Combine(_dir, "weights.safetensors");
        ModelCheckpoint.Save(path, model, new Dictionary<string, string> { ["memopt.config"] = "{}" });
        var e = Assert.Throws<InvalidDataException>(() => TrainingCheckpoint.Load(path));
        Assert.Contains(path, e.Message);
        Assert.Contains("model weights only", e.Message);
    }

    [Theory]
    [InlineData("model.d_model", "another architecture")]
    [InlineData("model.layers", "another architecture")]
    [InlineData("model.seq_len", "another architecture")]
    [InlineData("model.vocab_size", "another architecture")]
    [InlineData("data.tokenizer_fingerprint", "another tokenizer")]
    [InlineData("data.vocab_size", "another tokenizer")]
    [InlineData("data.train_sha256", "corpus")]
    [InlineData("training.batch_size", "the options the run started with")]
    [InlineData("training.learning_rate", "the options the run started with")]
    public void A_checkpoint_that_does_not_fit_the_run_is_refused_naming_file_and_field(string field, string hint)
    {
        string path = Write(Pristine.Value);
        var c = TrainingCheckpoint.Load(path);
        var (config, training, data) = field switch
        {
            "model.d_model" => (Config with { DModel = 12 }, Training, Data),
            "model.layers" => (Config with { Layers = 3 }, Training, Data),
            "model.seq_len" => (Config with { SeqLen = 8 }, Training, Data),
            "model.vocab_size" => (Config with { VocabSize = 14 }, Training, Data),
            "data.tokenizer_fingerprint" => (Config, Training, Data with { TokenizerFingerprint = "0000000000000001" }),
            "data.vocab_size" => (Config, Training, Data with { VocabSize = 299 }),
            "data.train_sha256" => (Config, Training, Data with { TrainSha256 = new string('8', 64) }),
            "training.batch_size" => (Config, Training with { BatchSize = 3 }, Data),
            _ => (Config, Training with { LearningRate = 2e-3f }, Data),
        };
        var e = Assert.Throws<CheckpointMismatchException>(() => c.CheckMatches(config, training, data));
        Assert.Equal(field, e.Field);
        Assert.Contains(path, e.Message);
        Assert.Contains(field, e.Message);
        Assert.Contains(hint, e.Message);
    }

    [Fact]
    public void Options_that_do_not_change_the_math_may_change_on_resume()
    {
        var c = TrainingCheckpoint.Load(Write(Pristine.Value));
        c.CheckMatches(Config, Training with
        {
            Technique = "renamed", EvalEvery = 3, EvalBatches = 1, SaveEvery = 2, KeepCheckpoints = 5, DetectAnomaly = true,
            SkipNonFinite = true, GradientCheckpointing = true, CheckpointScope = CheckpointScope.Mlp, CheckGradients = false,
        }, Data with { Source = "/moved/corpus" });
    }

    [Fact]
    public void Restoring_into_another_architecture_names_the_tensor()
    {
        var c = TrainingCheckpoint.Load(Write(Pristine.Value));
        using var wider = new TransformerLM(TestDevice.Get(), Config with { DFF = 32 }, seed: 1);
        using var optimizer = new AdamW(wider.Parameters);
        var e = Assert.Throws<InvalidDataException>(() => c.Restore(wider, optimizer));
        Assert.Contains("mlp.fc.weight", e.Message);
        Assert.Contains(c.Path, e.Message);
    }

    [Fact]
    public void A_weights_file_with_altered_metadata_is_rejected_too()
    {
        using var model = new TransformerLM(TestDevice.Get(), Config, seed: 3);
        string path = Path.Combine(_dir, "weights.safetensors");
        ModelCheckpoint.Save(path, model, new Dictionary<string, string> { ["memopt.config"] = "d_model 8" });
        var bytes = File.ReadAllBytes(path);
        int at = System.Text.Encoding.ASCII.GetString(bytes).IndexOf("d_model 8", StringComparison.Ordinal) + 8;
        bytes[at] = (byte)'9';
        File.WriteAllBytes(path, bytes);
        Assert.Contains("checksum mismatch", Assert.Throws<InvalidDataException>(() => ModelCheckpoint.Load(path, model)).Message);
    }
}
