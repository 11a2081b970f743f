using System.Runtime.InteropServices;
using System.Security.Cryptography;
using Memopt.Model.Data;

namespace Memopt.Model.Checkpoints;

/// <summary>
/// What a training checkpoint records about its data, so a resumed run is refused when its data differ: the tokenizer
/// (name, fingerprint of its exact merges/encoding, vocabulary), the sequence length, and the SHA-256 of the training
/// split's token stream — which pins the corpus, the split seed and the tokenizer at once. <see cref="Source"/> is for
/// messages only (a corpus moved to another path is the same data).
/// </summary>
public sealed record DataIdentity(string Tokenizer, string TokenizerFingerprint, int VocabSize, int SeqLen, long TrainTokens, string TrainSha256, string Source)
{
    public static DataIdentity Of(PreparedData data) => new(
        data.Tokenizer.Name, data.Tokenizer.Fingerprint.ToString("x16"), data.Tokenizer.VocabSize, data.Stats.SeqLen,
        data.Train.LongLength, HashTokens(data.Train), data.Stats.Source);

    /// <summary>SHA-256 of the tokens as little-endian int32.</summary>
    public static string HashTokens(int[] tokens)
    {
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("token hashing assumes a little-endian host");
        return Convert.ToHexStringLower(SHA256.HashData(MemoryMarshal.AsBytes(tokens.AsSpan())));
    }
}
