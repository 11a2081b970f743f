namespace Memopt.Model;

public enum PositionEncoding { Sinusoidal, Learned }
public enum NormPlacement { Pre, Post }

/// <summary>
/// Shape of a decoder-only Transformer LM. Presets reproduce the models of the study; every field can be overridden.
/// </summary>
public sealed record ModelConfig
{
    public int VocabSize { get; init; }
    public int DModel { get; init; }
    public int Layers { get; init; }
    public int Heads { get; init; }
    public int DFF { get; init; }
    public int SeqLen { get; init; }
    public bool TiedHead { get; init; } = true;
    public bool HeadBias { get; init; }
    public PositionEncoding Positions { get; init; } = PositionEncoding.Sinusoidal;
    public NormPlacement Norm { get; init; } = NormPlacement.Pre;
    public float Dropout { get; init; }
    public float LayerNormEps { get; init; } = 1e-5f;

    public int HeadDim => DModel / Heads;

    public static readonly IReadOnlyDictionary<string, ModelConfig> Presets = new Dictionary<string, ModelConfig>(StringComparer.OrdinalIgnoreCase)
    {
        // The study's lab model: 2,855,680 parameters.
        ["lab4"] = new() { VocabSize = 12000, DModel = 128, Layers = 4, Heads = 4, DFF = 1024, SeqLen = 256, TiedHead = true },
        // The study's RTX 5090 model (GPT-2 vocabulary, untied head with bias): 28,941,393 parameters.
        ["rtx5090"] = new() { VocabSize = 50257, DModel = 256, Layers = 4, Heads = 8, DFF = 1024, SeqLen = 256, TiedHead = false, HeadBias = true },
        ["tiny"] = new() { VocabSize = 10000, DModel = 256, Layers = 4, Heads = 4, DFF = 1024, SeqLen = 256 },
        ["small"] = new() { VocabSize = 10000, DModel = 512, Layers = 6, Heads = 8, DFF = 2048, SeqLen = 512 },
        // GPT-2-small size.
        ["medium"] = new() { VocabSize = 50257, DModel = 768, Layers = 12, Heads = 12, DFF = 3072, SeqLen = 1024 },
    };

    public static ModelConfig Preset(string name) =>
        Presets.TryGetValue(name, out var c) ? c
            : throw new ArgumentException($"unknown preset '{name}' (known: {string.Join(", ", Presets.Keys)})");

    /// <summary>Throws with a message naming the field when the shape is impossible.</summary>
    public void Validate()
    {
        void Positive(int v, string name) { if (v <= 0) throw new ArgumentException($"model: {name} must be > 0, got {v}"); }
        Positive(VocabSize, "--vocab-size");
        Positive(DModel, "--d-model");
        Positive(Layers, "--layers");
        Positive(Heads, "--heads");
        Positive(DFF, "--d-ff");
        Positive(SeqLen, "--seq-len");
        if (DModel % Heads != 0) throw new ArgumentException($"model: --d-model {DModel} is not divisible by --heads {Heads}");
        if (Dropout < 0 || Dropout >= 1) throw new ArgumentException($"model: --dropout {Dropout} must be in [0, 1)");
    }

    /// <summary>Parameter count from the shapes alone (checked against the allocated parameters in tests).</summary>
    public long ParameterCount()
    {
        long c = DModel, v = VocabSize;
        long perBlock = 2 * (2 * c)                       // two LayerNorms
                        + c * 3 * c + 3 * c               // fused QKV
                        + c * c + c                       // attention output projection
                        + c * DFF + DFF                   // MLP up
                        + DFF * c + c;                    // MLP down
        long total = v * c + Layers * perBlock + 2 * c;   // token embedding, blocks, final LayerNorm
        if (Positions == PositionEncoding.Learned) total += (long)SeqLen * c;
        if (!TiedHead) total += v * c;
        if (HeadBias) total += v;
        return total;
    }

    public override string ToString() =>
        $"vocab {VocabSize}, d_model {DModel}, {Layers} layers, {Heads} heads, d_ff {DFF}, T {SeqLen}, " +
        $"{(TiedHead ? "tied" : "untied")} head{(HeadBias ? " with bias" : "")}, {Positions.ToString().ToLowerInvariant()} positions, " +
        $"{Norm.ToString().ToLowerInvariant()}-norm, dropout {Dropout}";
}
