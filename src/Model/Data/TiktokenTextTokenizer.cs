using System.Security.Cryptography;
using System.Text;
using Microsoft.ML.Tokenizers;

namespace Memopt.Model.Data;

/// <summary>
/// A pretrained OpenAI encoding through Microsoft.ML.Tokenizers 2.0.1 (data from the Cl100kBase / O200kBase packages,
/// nothing downloaded). <see cref="VocabSize"/> is the largest id, special tokens included, plus one (cl100k_base:
/// 100277, o200k_base: 200019); text that spells a special token such as "&lt;|endoftext|&gt;" encodes to its id.
/// </summary>
public sealed class TiktokenTextTokenizer : ITextTokenizer
{
    public const string Cl100k = "cl100k_base";
    public const string O200k = "o200k_base";

    private readonly TiktokenTokenizer _tokenizer;

    public int VocabSize { get; }
    public string Name { get; }
    public ulong Fingerprint { get; }

    public TiktokenTextTokenizer(string encoding)
    {
        Name = encoding;
        _tokenizer = TiktokenTokenizer.CreateForEncoding(encoding);
        // Regular ids are 0..n−1 and the special tokens sit above them, so the largest special id bounds the vocabulary.
        int maxSpecial = _tokenizer.SpecialTokens?.Values.DefaultIfEmpty(-1).Max() ?? -1;
        VocabSize = Math.Max(maxSpecial + 1, encoding == Cl100k ? 100256 : encoding == O200k ? 199998 : 0);
        string dataVersion = typeof(TiktokenTokenizer).Assembly.GetName().Version?.ToString() ?? "?";
        Fingerprint = BitConverter.ToUInt64(SHA256.HashData(Encoding.UTF8.GetBytes($"tiktoken {encoding} vocab={VocabSize} tokenizers={dataVersion}")), 0);
    }

    public int[] Encode(string text) => [.. _tokenizer.EncodeToIds(text)];

    public string Decode(ReadOnlySpan<int> ids) => _tokenizer.Decode(ids.ToArray());
}
