using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace Memopt.Model.Data;

/// <summary>
/// Byte-level BPE: ids 0..255 are the bytes, id 256+r is the r-th merge (left, right) → bytes(left)+bytes(right).
/// Encoding: split the text with <see cref="PreTokenizer"/>, turn each piece into UTF-8 bytes and apply merges in rank
/// order (lowest first) inside the piece. Decoding concatenates token bytes and decodes UTF-8, so any well-formed
/// Unicode text round-trips exactly (a lone UTF-16 surrogate is not representable in UTF-8 and comes back as U+FFFD).
/// <para>
/// Files (UTF-8 text, '\n' line ends), written by <see cref="Save"/>:
/// <c>NAME.merges</c>: first line <c>#memopt-bpe-merges v1 pretokenizer=gpt2-like-v1 vocab=V</c>, then V−256 lines
/// "left right" (decimal ids), line r giving token 256+r. This file alone defines the tokenizer.
/// <c>NAME.vocab</c>: first line <c>#memopt-bpe-vocab v1 vocab=V</c>, then V lines "id TAB bytes-as-hex TAB readable form"
/// (the readable form is for people and ignored); on load it is checked against the merges.
/// </para>
/// Thread-safe: encoding caches piece → ids in a concurrent dictionary.
/// </summary>
public sealed class BpeTokenizer : ITextTokenizer
{
    private const string MergesHeader = "#memopt-bpe-merges v1";
    private const string VocabHeader = "#memopt-bpe-vocab v1";
    private const int MaxCachedPieces = 1 << 20;

    private readonly (int Left, int Right)[] _merges;
    private readonly byte[][] _tokenBytes;
    private readonly Dictionary<long, int> _rank; // (left << 32 | right) → merge rank
    private readonly ConcurrentDictionary<string, int[]> _cache = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, int[]>.AlternateLookup<ReadOnlySpan<char>> _cacheBySpan;
    private int _cachedPieces;

    public int VocabSize => 256 + _merges.Length;
    public string Name => $"bpe-{VocabSize}";
    public ulong Fingerprint { get; }
    public IReadOnlyList<(int Left, int Right)> Merges => _merges;

    public BpeTokenizer(IReadOnlyList<(int Left, int Right)> merges)
    {
        _merges = [.. merges];
        _tokenBytes = new byte[VocabSize][];
        for (int b = 0; b < 256; b++) _tokenBytes[b] = [(byte)b];
        _rank = new Dictionary<long, int>(_merges.Length, PairKeyComparer.Instance);
        for (int r = 0; r < _merges.Length; r++)
        {
            var (l, rt) = _merges[r];
            int id = 256 + r;
            if ((uint)l >= (uint)id || (uint)rt >= (uint)id)
                throw new ArgumentException($"merge {r} ({l} {rt}) refers to a token that does not exist before token {id}");
            if (!_rank.TryAdd(Key(l, rt), r)) throw new ArgumentException($"merge {r} ({l} {rt}) is listed twice");
            _tokenBytes[id] = [.. _tokenBytes[l], .. _tokenBytes[rt]];
        }
        _cacheBySpan = _cache.GetAlternateLookup<ReadOnlySpan<char>>();
        Fingerprint = ComputeFingerprint(_merges);
    }

    public ReadOnlySpan<byte> TokenBytes(int id) => _tokenBytes[id];

    public int[] Encode(string text)
    {
        var ids = new List<int>(text.Length / 3 + 4);
        EncodeTo(text, ids);
        return [.. ids];
    }

    public void EncodeTo(ReadOnlySpan<char> text, List<int> ids)
    {
        for (int i = 0; i < text.Length;)
        {
            int end = PreTokenizer.PieceEnd(text, i);
            ids.AddRange(EncodePiece(text[i..end]));
            i = end;
        }
    }

    private int[] EncodePiece(ReadOnlySpan<char> piece)
    {
        if (_cacheBySpan.TryGetValue(piece, out var cached)) return cached;
        var bytes = new byte[Encoding.UTF8.GetByteCount(piece)];
        Encoding.UTF8.GetBytes(piece, bytes);
        int[] ids = MergePiece(bytes);
        // ConcurrentDictionary.Count takes every lock: keep an approximate count of our own
        if (Volatile.Read(ref _cachedPieces) < MaxCachedPieces && _cacheBySpan.TryAdd(piece, ids)) Interlocked.Increment(ref _cachedPieces);
        return ids;
    }

    /// <summary>
    /// Applies merges to one piece: repeatedly merge every occurrence (left to right) of the adjacent pair of lowest rank.
    /// Merging all occurrences at once is exact: a pair created by merge r contains token 256+r, so its rank is > r.
    /// </summary>
    private int[] MergePiece(byte[] bytes)
    {
        var s = new int[bytes.Length];
        for (int i = 0; i < s.Length; i++) s[i] = bytes[i];
        int n = s.Length;
        while (n > 1)
        {
            int best = int.MaxValue;
            for (int i = 0; i + 1 < n; i++)
                if (_rank.TryGetValue(Key(s[i], s[i + 1]), out int r) && r < best) best = r;
            if (best == int.MaxValue) break;
            var (l, rt) = _merges[best];
            int w = 0;
            for (int i = 0; i < n; i++)
            {
                if (i + 1 < n && s[i] == l && s[i + 1] == rt) { s[w++] = 256 + best; i++; }
                else s[w++] = s[i];
            }
            n = w;
        }
        return n == s.Length ? s : s[..n];
    }

    public string Decode(ReadOnlySpan<int> ids)
    {
        int length = 0;
        foreach (int id in ids)
        {
            if ((uint)id >= (uint)VocabSize) throw new ArgumentOutOfRangeException(nameof(ids), $"token id {id} is outside [0, {VocabSize})");
            length += _tokenBytes[id].Length;
        }
        var bytes = new byte[length];
        int at = 0;
        foreach (int id in ids)
        {
            _tokenBytes[id].CopyTo(bytes, at);
            at += _tokenBytes[id].Length;
        }
        return Encoding.UTF8.GetString(bytes);
    }

    public void Save(string vocabPath, string mergesPath)
    {
        var merges = new StringBuilder();
        merges.Append(MergesHeader).Append(" pretokenizer=").Append(PreTokenizer.Version).Append(" vocab=").Append(VocabSize).Append('\n');
        foreach (var (l, r) in _merges) merges.Append(l).Append(' ').Append(r).Append('\n');
        var vocab = new StringBuilder();
        vocab.Append(VocabHeader).Append(" vocab=").Append(VocabSize).Append('\n');
        for (int id = 0; id < VocabSize; id++)
            vocab.Append(id).Append('\t').Append(Convert.ToHexStringLower(_tokenBytes[id])).Append('\t').Append(Readable(_tokenBytes[id])).Append('\n');
        AtomicFile.WriteAllText(mergesPath, merges.ToString());
        AtomicFile.WriteAllText(vocabPath, vocab.ToString());
    }

    /// <summary>Loads a tokenizer saved by <see cref="Save"/>; a missing, malformed or inconsistent file is a <see cref="DataException"/> naming it.</summary>
    public static BpeTokenizer Load(string vocabPath, string mergesPath)
    {
        string[] mergeLines = ReadLines(mergesPath);
        string expectedHeader = $"{MergesHeader} pretokenizer={PreTokenizer.Version} vocab=";
        if (mergeLines.Length == 0 || !mergeLines[0].StartsWith(expectedHeader, StringComparison.Ordinal)
            || !int.TryParse(mergeLines[0].AsSpan(expectedHeader.Length), NumberStyles.None, CultureInfo.InvariantCulture, out int vocabSize))
            throw new DataException($"{mergesPath}: not a memopt BPE merges file of this version (first line must start with \"{expectedHeader}\")");
        if (mergeLines.Length - 1 != vocabSize - 256)
            throw new DataException($"{mergesPath}: header says vocab {vocabSize} but the file has {mergeLines.Length - 1} merges (expected {vocabSize - 256})");
        var merges = new (int, int)[vocabSize - 256];
        for (int r = 0; r < merges.Length; r++)
        {
            var parts = mergeLines[r + 1].Split(' ');
            if (parts.Length != 2 || !int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out int l)
                || !int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int rt))
                throw new DataException($"{mergesPath}:{r + 2}: expected two token ids, got \"{mergeLines[r + 1]}\"");
            merges[r] = (l, rt);
        }
        BpeTokenizer tokenizer;
        try { tokenizer = new BpeTokenizer(merges); }
        catch (ArgumentException e) { throw new DataException($"{mergesPath}: {e.Message}", e); }

        string[] vocabLines = ReadLines(vocabPath);
        if (vocabLines.Length != vocabSize + 1 || vocabLines[0] != $"{VocabHeader} vocab={vocabSize}")
            throw new DataException($"{vocabPath}: expected header \"{VocabHeader} vocab={vocabSize}\" and {vocabSize} token lines (does not match {mergesPath})");
        for (int id = 0; id < vocabSize; id++)
        {
            var parts = vocabLines[id + 1].Split('\t');
            if (parts.Length < 2 || parts[0] != id.ToString(CultureInfo.InvariantCulture)
                || !parts[1].Equals(Convert.ToHexStringLower(tokenizer._tokenBytes[id]), StringComparison.Ordinal))
                throw new DataException($"{vocabPath}:{id + 2}: token {id} does not match the merges in {mergesPath}");
        }
        return tokenizer;
    }

    private static string[] ReadLines(string path)
    {
        if (!File.Exists(path)) throw new DataException($"{path}: tokenizer file not found");
        var text = File.ReadAllText(path, Encoding.UTF8);
        if (text.EndsWith('\n')) text = text[..^1];
        return text.Length == 0 ? [] : text.Split('\n');
    }

    private static string Readable(byte[] bytes)
    {
        var sb = new StringBuilder();
        foreach (byte b in bytes)
        {
            if (b >= 0x21 && b < 0x7F && b != (byte)'\\') sb.Append((char)b);
            else if (b == (byte)' ') sb.Append('\u2423'); // ␣
            else sb.Append("\\x").Append(b.ToString("x2", CultureInfo.InvariantCulture));
        }
        return sb.ToString();
    }

    private static long Key(int left, int right) => ((long)left << 32) | (uint)right;

    private static ulong ComputeFingerprint((int Left, int Right)[] merges)
    {
        var bytes = new byte[8 * merges.Length];
        for (int r = 0; r < merges.Length; r++)
        {
            BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(8 * r), merges[r].Left);
            BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(8 * r + 4), merges[r].Right);
        }
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        sha.AppendData(Encoding.UTF8.GetBytes($"memopt-bpe v1 {PreTokenizer.Version}\n"));
        sha.AppendData(bytes);
        return BinaryPrimitives.ReadUInt64LittleEndian(sha.GetHashAndReset());
    }
}
