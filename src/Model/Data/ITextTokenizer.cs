namespace Memopt.Model.Data;

/// <summary>Text ↔ token ids. Encode then Decode returns the input exactly for any well-formed Unicode text.</summary>
public interface ITextTokenizer
{
    /// <summary>Ids are in [0, VocabSize): the size of the model's embedding and output layers.</summary>
    int VocabSize { get; }
    /// <summary>Short name for reports and cache file names, e.g. "bpe-10000", "cl100k_base".</summary>
    string Name { get; }
    /// <summary>Identifies the exact tokenizer (for a trained BPE: its merges), so a token cache built by another one is detected.</summary>
    ulong Fingerprint { get; }
    int[] Encode(string text);
    string Decode(ReadOnlySpan<int> ids);
}
