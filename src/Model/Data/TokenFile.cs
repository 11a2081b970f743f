using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace Memopt.Model.Data;

/// <summary>What a cached token file must have been made from: anything else is stale and gets rebuilt.</summary>
public readonly record struct TokenFileKey(byte[] CorpusKey, ulong TokenizerFingerprint, int VocabSize, SplitName Split);

/// <summary>
/// One tokenized split on disk. Layout (little-endian), a 128-byte header then the tokens:
/// <code>
///   0  8  magic "MEMOTOKS"            64  8  token count N
///   8  4  format version (1)          72 32  SHA-256 of the payload
///  12  4  bytes per token (2 or 4)   104 16  reserved (0)
///  16  8  tokenizer fingerprint      120  8  first 8 bytes of SHA-256 of header bytes 0..119
///  24  4  vocab size
///  28  4  split (0 train, 1 val, 2 test)
///  32 32  corpus key (SHA-256 of corpus content/generator, split seed and format)
/// 128 ..  N tokens: uint16 when vocab size ≤ 65536, else int32
/// </code>
/// Reading checks the magic, version, header hash, every key field, the file length against N and the payload hash, and
/// reports the first failure as a <see cref="DataException"/> that names the file. Writing is atomic.
/// </summary>
public static class TokenFile
{
    public const int HeaderBytes = 128;
    public const int FormatVersion = 1;
    private static ReadOnlySpan<byte> Magic => "MEMOTOKS"u8;

    public static int BytesPerToken(int vocabSize) => vocabSize <= 65536 ? 2 : 4;

    public static void Write(string path, ReadOnlySpan<int> tokens, TokenFileKey key)
    {
        int width = BytesPerToken(key.VocabSize);
        var payload = new byte[(long)tokens.Length * width];
        if (width == 2)
            for (int i = 0; i < tokens.Length; i++) BinaryPrimitives.WriteUInt16LittleEndian(payload.AsSpan(2 * i), checked((ushort)tokens[i]));
        else if (BitConverter.IsLittleEndian) MemoryMarshal.AsBytes(tokens).CopyTo(payload);
        else for (int i = 0; i < tokens.Length; i++) BinaryPrimitives.WriteInt32LittleEndian(payload.AsSpan(4 * i), tokens[i]);

        var header = new byte[HeaderBytes];
        Magic.CopyTo(header);
        BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(8), FormatVersion);
        BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(12), width);
        BinaryPrimitives.WriteUInt64LittleEndian(header.AsSpan(16), key.TokenizerFingerprint);
        BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(24), key.VocabSize);
        BinaryPrimitives.WriteInt32LittleEndian(header.AsSpan(28), (int)key.Split);
        key.CorpusKey.AsSpan(0, 32).CopyTo(header.AsSpan(32));
        BinaryPrimitives.WriteInt64LittleEndian(header.AsSpan(64), tokens.Length);
        SHA256.HashData(payload).CopyTo(header.AsSpan(72));
        SHA256.HashData(header.AsSpan(0, 120)).AsSpan(0, 8).CopyTo(header.AsSpan(120));
        AtomicFile.Write(path, s => { s.Write(header); s.Write(payload); });
    }

    /// <summary>The tokens of a valid file made from <paramref name="key"/>; a <see cref="DataException"/> naming the file and the problem otherwise.</summary>
    public static int[] Read(string path, TokenFileKey key)
    {
        if (!File.Exists(path)) throw new DataException($"{path}: token cache file not found");
        byte[] bytes = File.ReadAllBytes(path);
        if (bytes.Length < HeaderBytes) throw new DataException($"{path}: truncated ({bytes.Length} bytes, shorter than the {HeaderBytes}-byte header)");
        var header = bytes.AsSpan(0, HeaderBytes);
        if (!header[..8].SequenceEqual(Magic)) throw new DataException($"{path}: not a memopt token file (bad magic)");
        int version = BinaryPrimitives.ReadInt32LittleEndian(header[8..]);
        if (version != FormatVersion) throw new DataException($"{path}: token file format version {version}, expected {FormatVersion}");
        if (!SHA256.HashData(header[..120]).AsSpan(0, 8).SequenceEqual(header[120..128])) throw new DataException($"{path}: corrupt header (header checksum mismatch)");
        int width = BinaryPrimitives.ReadInt32LittleEndian(header[12..]);
        ulong fingerprint = BinaryPrimitives.ReadUInt64LittleEndian(header[16..]);
        int vocabSize = BinaryPrimitives.ReadInt32LittleEndian(header[24..]);
        var split = (SplitName)BinaryPrimitives.ReadInt32LittleEndian(header[28..]);
        long count = BinaryPrimitives.ReadInt64LittleEndian(header[64..]);
        if (fingerprint != key.TokenizerFingerprint || vocabSize != key.VocabSize)
            throw new DataException($"{path}: made by another tokenizer (fingerprint {fingerprint:x16}, vocab {vocabSize}; expected {key.TokenizerFingerprint:x16}, vocab {key.VocabSize})");
        if (!header.Slice(32, 32).SequenceEqual(key.CorpusKey.AsSpan(0, 32))) throw new DataException($"{path}: made from another corpus or split seed");
        if (split != key.Split) throw new DataException($"{path}: holds split {split}, expected {key.Split}");
        if (width != BytesPerToken(vocabSize)) throw new DataException($"{path}: {width} bytes per token, expected {BytesPerToken(vocabSize)}");
        long expectedLength = HeaderBytes + count * width;
        if (count < 0 || bytes.Length != expectedLength)
            throw new DataException($"{path}: truncated or padded ({bytes.Length} bytes; the header says {count} tokens = {expectedLength} bytes)");
        var payload = bytes.AsSpan(HeaderBytes);
        if (!SHA256.HashData(payload).AsSpan().SequenceEqual(header.Slice(72, 32))) throw new DataException($"{path}: corrupt (payload checksum mismatch)");
        var tokens = new int[count];
        if (width == 2) for (int i = 0; i < tokens.Length; i++) tokens[i] = BinaryPrimitives.ReadUInt16LittleEndian(payload[(2 * i)..]);
        else for (int i = 0; i < tokens.Length; i++) tokens[i] = BinaryPrimitives.ReadInt32LittleEndian(payload[(4 * i)..]);
        return tokens;
    }
}
