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
/// Memopt adds a metadata entry "memopt.sha256" over the data section, checked on load, so a truncated or altered
/// file is rejected instead of loaded.
/// </summary>
public static class SafeTensors
{
    public const string ChecksumKey = "memopt.sha256";

    public static void Save(string path, IReadOnlyList<NamedTensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var header = new JsonObject();
        long offset = 0;
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
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
            sha.AppendData(t.Data);
        }
        var meta = new JsonObject();
        foreach (var (k, v) in metadata ?? new Dictionary<string, string>()) meta[k] = v;
        meta[ChecksumKey] = Convert.ToHexString(sha.GetHashAndReset()).ToLowerInvariant();
        header["__metadata__"] = meta;

        var json = Encoding.UTF8.GetBytes(header.ToJsonString());
        int padded = (json.Length + 7) / 8 * 8;           // the data section starts 8-byte aligned
        AtomicFile.Write(path, s =>
        {
            Span<byte> len = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)padded);
            s.Write(len);
            s.Write(json);
            for (int i = json.Length; i < padded; i++) s.WriteByte((byte)' ');
            foreach (var t in tensors) s.Write(t.Data);
        });
    }

    public sealed record Loaded(IReadOnlyList<NamedTensor> Tensors, IReadOnlyDictionary<string, string> Metadata);

    /// <summary>Reads and verifies a file; any inconsistency throws <see cref="InvalidDataException"/> naming the file.</summary>
    public static Loaded Load(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"checkpoint '{path}' does not exist", path);
        var bytes = File.ReadAllBytes(path);
        InvalidDataException Bad(string why) => new($"checkpoint '{path}' is not a valid safetensors file: {why}");
        if (bytes.Length < 8) throw Bad($"only {bytes.Length} bytes (truncated?)");
        ulong n = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        if (n > (ulong)(bytes.Length - 8)) throw Bad($"header claims {n} bytes but the file has {bytes.Length - 8} after the length (truncated?)");
        JsonObject header;
        try
        {
            header = JsonNode.Parse(Encoding.UTF8.GetString(bytes, 8, (int)n)) as JsonObject ?? throw Bad("header is not a JSON object");
        }
        catch (JsonException e)
        {
            throw Bad($"header is not valid JSON ({e.Message})");
        }
        long dataStart = 8 + (long)n;
        long dataLength = bytes.Length - dataStart;
        var metadata = new Dictionary<string, string>();
        var tensors = new List<NamedTensor>();
        long covered = 0;
        foreach (var (name, node) in header)
        {
            if (name == "__metadata__")
            {
                foreach (var (k, v) in node!.AsObject()) metadata[k] = v!.GetValue<string>();
                continue;
            }
            try
            {
                var o = node!.AsObject();
                string dtype = o["dtype"]!.GetValue<string>();
                int[] shape = o["shape"]!.AsArray().Select(d => d!.GetValue<int>()).ToArray();
                var offs = o["data_offsets"]!.AsArray();
                long begin = offs[0]!.GetValue<long>(), end = offs[1]!.GetValue<long>();
                if (begin < 0 || end < begin || end > dataLength)
                    throw Bad($"tensor '{name}' spans bytes {begin}..{end} of a {dataLength}-byte data section (truncated?)");
                long expected = shape.Aggregate(1L, (a, d) => a * d) * ElementSize(dtype);
                if (end - begin != expected) throw Bad($"tensor '{name}' {string.Join("x", shape)} {dtype} needs {expected} bytes, spans {end - begin}");
                tensors.Add(new NamedTensor(name, dtype, shape, bytes.AsSpan((int)(dataStart + begin), (int)(end - begin)).ToArray()));
                covered += end - begin;
            }
            catch (Exception e) when (e is InvalidOperationException or NullReferenceException or FormatException)
            {
                throw Bad($"tensor '{name}' has a malformed header entry ({e.Message})");
            }
        }
        if (covered != dataLength) throw Bad($"tensors cover {covered} bytes but the data section has {dataLength}");
        if (metadata.TryGetValue(ChecksumKey, out var want))
        {
            // Hash in the order the tensors were written, which is data-offset order.
            using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            sha.AppendData(bytes, (int)dataStart, (int)dataLength);
            var got = Convert.ToHexString(sha.GetHashAndReset()).ToLowerInvariant();
            if (got != want) throw Bad($"checksum mismatch (stored {want[..12]}…, computed {got[..12]}…): the file was altered or damaged");
        }
        return new Loaded(tensors, metadata);
    }

    public static int ElementSize(string dtype) => dtype switch
    {
        "F32" or "I32" => 4,
        "BF16" or "F16" => 2,
        "F64" or "I64" => 8,
        _ => throw new ArgumentException($"safetensors: unsupported dtype '{dtype}'"),
    };
}
