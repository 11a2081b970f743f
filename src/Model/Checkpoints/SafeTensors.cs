using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Memopt.Model.Checkpoints;

/// <summary>One named tensor as it goes to or comes from a safetensors file: dtype "F32", "BF16" or "I32", raw little-endian bytes.</summary>
public sealed record NamedTensor(string Name, string DType, int[] Shape, byte[] Data);

/// <summary>
/// The safetensors format (https://huggingface.co/docs/safetensors), so PyTorch reads Memopt checkpoints with
/// safetensors.torch.load_file: 8 bytes little-endian header length N, N bytes of JSON
/// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {string: string}}, then the concatenated data.
/// Memopt adds a metadata entry "memopt.file_sha256": the SHA-256 of every byte of the file, computed with this
/// entry's own 64 hex digits written as '0' (the digits are patched in afterwards, same length). A truncated file, or
/// one with any byte altered (length, header, metadata, data, padding, the checksum itself), is rejected on load
/// instead of loaded. Files written before carry "memopt.sha256" over the data section only; that is still verified.
/// </summary>
public static class SafeTensors
{
    /// <summary>Whole-file checksum (see the class comment); written by <see cref="Save"/>.</summary>
    public const string FileChecksumKey = "memopt.file_sha256";
    /// <summary>Data-section checksum of files written before the whole-file one; verified when present.</summary>
    public const string ChecksumKey = "memopt.sha256";
    private const int HexDigits = 64;
    private static readonly byte[] ChecksumMarker = Encoding.UTF8.GetBytes($"\"{FileChecksumKey}\":\"");

    public static void Save(string path, IReadOnlyList<NamedTensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var header = new JsonObject();
        long offset = 0;
        foreach (var t in tensors)
        {
            long expected = t.Shape.Aggregate(1L, (a, d) => a * d) * ElementSize(t.DType);
            if (expected != t.Data.Length)
                throw new ArgumentException($"safetensors: tensor '{t.Name}' {string.Join("x", t.Shape)} {t.DType} needs {expected} bytes, has {t.Data.Length}");
            header[t.Name] = new JsonObject
            {
                ["dtype"] = t.DType,
                ["shape"] = new JsonArray(t.Shape.Select(d => (JsonNode)d).ToArray()),
                ["data_offsets"] = new JsonArray(offset, offset + t.Data.Length),
            };
            offset += t.Data.Length;
        }
        var meta = new JsonObject();
        foreach (var (k, v) in metadata ?? new Dictionary<string, string>())
            if (k != FileChecksumKey && k != ChecksumKey) meta[k] = v;
        meta[FileChecksumKey] = new string('0', HexDigits);   // placeholder, patched below
        header["__metadata__"] = meta;

        var json = Encoding.UTF8.GetBytes(header.ToJsonString());
        int padded = (json.Length + 7) / 8 * 8;           // the data section starts 8-byte aligned
        var head = new byte[8 + padded];
        BinaryPrimitives.WriteUInt64LittleEndian(head, (ulong)padded);
        json.CopyTo(head, 8);
        head.AsSpan(8 + json.Length).Fill((byte)' ');
        int digits = ChecksumDigitsAt(head) ?? throw new InvalidOperationException("safetensors: checksum placeholder not found in the header");

        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        sha.AppendData(head);
        foreach (var t in tensors) sha.AppendData(t.Data);
        Encoding.ASCII.GetBytes(Convert.ToHexStringLower(sha.GetHashAndReset())).CopyTo(head, digits);
        AtomicFile.Write(path, s =>
        {
            s.Write(head);
            foreach (var t in tensors) s.Write(t.Data);
        });
    }

    /// <summary>Offset of the 64 checksum digits in <paramref name="head"/> (length prefix + header), or null when the entry is absent.</summary>
    private static int? ChecksumDigitsAt(ReadOnlySpan<byte> head)
    {
        // Inside a JSON string a quote is escaped (\"), so the unescaped marker "memopt.file_sha256":" can only be the key itself.
        int at = head.LastIndexOf(ChecksumMarker);
        return at < 0 ? null : at + ChecksumMarker.Length;
    }

    public sealed record Loaded(IReadOnlyList<NamedTensor> Tensors, IReadOnlyDictionary<string, string> Metadata);

    /// <summary>
    /// Reads and verifies a file; any inconsistency throws <see cref="InvalidDataException"/> naming the file. The
    /// whole-file checksum is checked first, so damage anywhere is reported as such. A file without a checksum (one
    /// written by another tool) loads unless <paramref name="requireChecksum"/>; one that carries memopt metadata but
    /// no checksum entry (the entry's own bytes were damaged) never does.
    /// </summary>
    public static Loaded Load(string path, bool requireChecksum = false)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"checkpoint '{path}' does not exist", path);
        var bytes = File.ReadAllBytes(path);
        InvalidDataException Bad(string why) => new($"checkpoint '{path}' is not a valid safetensors file: {why}");
        if (bytes.Length < 8) throw Bad($"only {bytes.Length} bytes (truncated?)");
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        if (n > (ulong)(bytes.Length - 8)) throw Bad($"header claims {n} bytes but the file has {bytes.Length - 8} after the length (truncated?)");
        long dataStart = 8 + (long)n;
        bool verified = false;
        if (ChecksumDigitsAt(bytes.AsSpan(0, (int)dataStart)) is int digits)
        {
            VerifyFileChecksum(bytes, digits, Bad);
            verified = true;
        }
        JsonObject header;
        try
        {
            header = JsonNode.Parse(Encoding.UTF8.GetString(bytes, 8, (int)n)) as JsonObject ?? throw Bad("header is not a JSON object");
        }
        catch (Exception e) when (e is JsonException or ArgumentException or InvalidOperationException)
        {
            throw Bad($"header is not valid JSON ({e.Message})");
        }
        long dataLength = bytes.Length - dataStart;
        var metadata = new Dictionary<string, string>();
        var tensors = new List<NamedTensor>();
        long covered = 0;
        foreach (var (name, node) in header)
        {
            try
            {
                if (name == "__metadata__")
                {
                    foreach (var (k, v) in node!.AsObject()) metadata[k] = v!.GetValue<string>();
                    continue;
                }
                var o = node!.AsObject();
                string dtype = o["dtype"]!.GetValue<string>();
                int[] shape = o["shape"]!.AsArray().Select(d => d!.GetValue<int>()).ToArray();
                var offs = o["data_offsets"]!.AsArray();
                long begin = offs[0]!.GetValue<long>(), end = offs[1]!.GetValue<long>();
                if (begin < 0 || end < begin || end > dataLength)
                    throw Bad($"tensor '{name}' spans bytes {begin}..{end} of a {dataLength}-byte data section (truncated?)");
                if (shape.Any(d => d < 0)) throw Bad($"tensor '{name}' has a negative dimension ({string.Join("x", shape)})");
                long expected = shape.Aggregate(1L, (a, d) => a * d) * ElementSize(dtype);
                if (end - begin != expected) throw Bad($"tensor '{name}' {string.Join("x", shape)} {dtype} needs {expected} bytes, spans {end - begin}");
                tensors.Add(new NamedTensor(name, dtype, shape, bytes.AsSpan((int)(dataStart + begin), (int)(end - begin)).ToArray()));
                covered += end - begin;
            }
            catch (Exception e) when (e is InvalidOperationException or NullReferenceException or FormatException or ArgumentException or OverflowException)
            {
                throw Bad($"{(name == "__metadata__" ? "the metadata" : $"tensor '{name}'")} has a malformed header entry ({e.Message})");
            }
        }
        if (covered != dataLength) throw Bad($"tensors cover {covered} bytes but the data section has {dataLength}");
        if (!verified && metadata.TryGetValue(ChecksumKey, out var want))
        {
            // The older data-section checksum, in the order the tensors were written (data-offset order).
            using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            sha.AppendData(bytes, (int)dataStart, (int)dataLength);
            var got = Convert.ToHexStringLower(sha.GetHashAndReset());
            if (got != want) throw Bad($"checksum mismatch (stored {want[..Math.Min(12, want.Length)]}…, computed {got[..12]}…): the file was altered or damaged");
            verified = true;
        }
        if (!verified && (requireChecksum || metadata.Keys.Any(k => k.StartsWith("memopt.", StringComparison.Ordinal))))
            throw Bad($"no {FileChecksumKey} entry: the file was altered or damaged (memopt writes one into every file)");
        return new Loaded(tensors, metadata);
    }

    /// <summary>SHA-256 of the whole file with the stored digits read as '0' must equal the stored digits.</summary>
    private static void VerifyFileChecksum(byte[] bytes, int digits, Func<string, InvalidDataException> bad)
    {
        if (digits + HexDigits + 1 > bytes.Length || bytes[digits + HexDigits] != (byte)'"')
            throw bad($"malformed {FileChecksumKey} entry (truncated or altered?)");
        string stored = Encoding.ASCII.GetString(bytes, digits, HexDigits);
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        sha.AppendData(bytes, 0, digits);
        sha.AppendData(Encoding.ASCII.GetBytes(new string('0', HexDigits)));
        sha.AppendData(bytes, digits + HexDigits, bytes.Length - digits - HexDigits);
        string computed = Convert.ToHexStringLower(sha.GetHashAndReset());
        if (computed != stored)
            throw bad($"checksum mismatch (stored {Printable(stored[..12])}…, computed {computed[..12]}…): the file was truncated, altered or damaged");
    }

    private static string Printable(string s) => string.Concat(s.Select(c => c is >= ' ' and <= '~' ? c : '?'));

    public static int ElementSize(string dtype) => dtype switch
    {
        "F32" or "I32" => 4,
        "BF16" or "F16" => 2,
        "F64" or "I64" => 8,
        _ => throw new ArgumentException($"safetensors: unsupported dtype '{dtype}'"),
    };
}
