using FsCheck;
using FsCheck.Xunit;
using Memopt.Autograd;
using Memopt.Model;
using Memopt.Model.Checkpoints;
using Memopt.Tests.Harness;

namespace Memopt.Tests.Model;

public class CheckpointTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("memopt-ckpt").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string SavedModel(out TransformerLM model, ModelConfig? config = null)
    {
        model = new TransformerLM(TestDevice.Get(), config ?? TransformerLMTests.Tiny(), seed: 21);
        var path = Path.Combine(_dir, $"{Guid.NewGuid():N}.safetensors");
        ModelCheckpoint.Save(path, model, new Dictionary<string, string> { ["memopt.config"] = "tiny" });
        return path;
    }

    [Fact]
    public void Saved_weights_load_into_a_fresh_model_and_give_identical_logits()
    {
        var path = SavedModel(out var original);
        using var _ = original;
        using var copy = new TransformerLM(TestDevice.Get(), TransformerLMTests.Tiny(), seed: 99);
        ModelCheckpoint.Load(path, copy);
        var (ids, targets) = TransformerLMTests.Batch(TestDevice.Get(), 2, 6, 13, 22);
        using var _ids = ids;
        using var _t = targets;
        using var noGrad = Tape.NoGrad();
        using var a = original.Logits(ids, new AttentionSettings(null), ForwardContext.Evaluation);
        using var b = copy.Logits(ids, new AttentionSettings(null), ForwardContext.Evaluation);
        Assert.Equal(a.Value.ToFloatArray(), b.Value.ToFloatArray());
        Assert.Empty(Directory.GetFiles(_dir, "*.tmp", SearchOption.AllDirectories));
    }

    [Property(MaxTest = 40)]
    public void A_checkpoint_truncated_anywhere_is_rejected_never_loaded(PositiveInt cut)
    {
        var path = SavedModel(out var model);
        using var _ = model;
        var bytes = File.ReadAllBytes(path);
        int length = cut.Get % bytes.Length;          // 0 .. size-1: every strict prefix
        File.WriteAllBytes(path, bytes[..length]);
        var e = Assert.ThrowsAny<InvalidDataException>(() => SafeTensors.Load(path));
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void A_flipped_data_byte_fails_the_checksum()
    {
        var path = SavedModel(out var model);
        using var _ = model;
        var bytes = File.ReadAllBytes(path);
        bytes[^3] ^= 0x40;
        File.WriteAllBytes(path, bytes);
        var e = Assert.Throws<InvalidDataException>(() => SafeTensors.Load(path));
        Assert.Contains("checksum", e.Message);
    }

    [Fact]
    public void A_checkpoint_of_another_architecture_is_rejected_naming_the_tensor()
    {
        var path = SavedModel(out var model);
        using var _ = model;
        using var wider = new TransformerLM(TestDevice.Get(), TransformerLMTests.Tiny() with { DFF = 32 }, seed: 1);
        var e = Assert.Throws<InvalidDataException>(() => ModelCheckpoint.Load(path, wider));
        Assert.Contains("mlp.fc.weight", e.Message);
        using var deeper = new TransformerLM(TestDevice.Get(), TransformerLMTests.Tiny() with { Layers = 3 }, seed: 1);
        Assert.Contains("blocks.2", Assert.Throws<InvalidDataException>(() => ModelCheckpoint.Load(path, deeper)).Message);
    }

    [Fact]
    public void The_file_is_standard_safetensors_with_an_aligned_json_header()
    {
        var path = SavedModel(out var model);
        using var _ = model;
        var bytes = File.ReadAllBytes(path);
        long n = BitConverter.ToInt64(bytes, 0);
        Assert.Equal(0, n % 8);
        var header = System.Text.Json.JsonDocument.Parse(bytes.AsMemory(8, (int)n));
        var wte = header.RootElement.GetProperty("wte.weight");
        Assert.Equal("F32", wte.GetProperty("dtype").GetString());
        Assert.Equal(new[] { 13, 8 }, wte.GetProperty("shape").EnumerateArray().Select(e => e.GetInt32()));
        Assert.False(header.RootElement.TryGetProperty("lm_head.weight", out var _h), "a tied head is stored once, as wte.weight");
        Assert.Equal("tiny", header.RootElement.GetProperty("__metadata__").GetProperty("memopt.config").GetString());
    }
}
