using Memopt.Tensors;

namespace Memopt.Model.Checkpoints;

/// <summary>
/// A model's weights as a safetensors file: one F32 entry per parameter under its name (wte.weight,
/// blocks.0.attn.qkv.weight, ...), shapes in PyTorch's convention (Linear weights [out, in]), and the model
/// configuration as JSON in the metadata. A tied head has no lm_head.weight entry (it is wte.weight).
/// </summary>
public static class ModelCheckpoint
{
    public static void Save(string path, TransformerLM model, IReadOnlyDictionary<string, string> metadata)
    {
        var tensors = model.Parameters.Select(p => new NamedTensor(p.Name, "F32", p.Value.Shape.Dims.ToArray(), p.Value.ToRawArray())).ToList();
        SafeTensors.Save(path, tensors, metadata);
    }

    /// <summary>Loads weights into a model of the same architecture; any missing, extra or mis-shaped tensor is an error naming it.</summary>
    public static void Load(string path, TransformerLM model)
    {
        var file = SafeTensors.Load(path);
        var byName = file.Tensors.ToDictionary(t => t.Name);
        foreach (var p in model.Parameters)
        {
            if (!byName.Remove(p.Name, out var t))
                throw new InvalidDataException($"checkpoint '{path}' has no tensor '{p.Name}' (a checkpoint of another architecture?)");
            if (t.DType != "F32" || !t.Shape.SequenceEqual(p.Value.Shape.Dims))
                throw new InvalidDataException($"checkpoint '{path}': '{p.Name}' is {t.DType} {Shape.Format(t.Shape)}, the model expects F32 {p.Value.Shape}");
            p.Value.CopyFromRaw(t.Data);
        }
        if (byName.Count > 0)
            throw new InvalidDataException($"checkpoint '{path}' has tensors this model lacks: {string.Join(", ", byName.Keys.Take(5))} (another architecture?)");
        model.RefreshBf16Copies(); // a bf16 model's matmul weights follow the loaded masters
    }
}
