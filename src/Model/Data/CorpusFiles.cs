using System.Security.Cryptography;
using System.Text;

namespace Memopt.Model.Data;

/// <summary>
/// The input files of <c>--data PATH</c>: the file itself, or every .txt and .jsonl file under a directory (recursive,
/// sorted by ordinal relative path; other files are ignored), and the SHA-256 of their names and contents that keys the cache.
/// </summary>
public sealed class CorpusFiles
{
    public string Root { get; }
    public IReadOnlyList<string> Files { get; }

    private CorpusFiles(string root, IReadOnlyList<string> files) { Root = root; Files = files; }

    public static bool IsSupported(string path) =>
        path.EndsWith(".txt", StringComparison.OrdinalIgnoreCase) || path.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase);

    public static CorpusFiles Find(string path)
    {
        string full = Path.GetFullPath(path);
        if (File.Exists(full))
        {
            if (!IsSupported(full)) throw new DataException($"{path}: unsupported file type (expected .txt or .jsonl)");
            return new CorpusFiles(full, [full]);
        }
        if (!Directory.Exists(full)) throw new DataException($"{path}: no such file or directory");
        var files = Directory.EnumerateFiles(full, "*", SearchOption.AllDirectories)
            .Where(IsSupported)
            .OrderBy(f => Path.GetRelativePath(full, f).Replace('\\', '/'), StringComparer.Ordinal)
            .ToList();
        if (files.Count == 0) throw new DataException($"{path}: directory contains no .txt or .jsonl files");
        return new CorpusFiles(full, files);
    }

    /// <summary>SHA-256 over (relative name, length, content) of every file in order, as lowercase hex.</summary>
    public string ContentHash()
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[1 << 20];
        foreach (string file in Files)
        {
            string name = File.Exists(Root) ? Path.GetFileName(file) : Path.GetRelativePath(Root, file).Replace('\\', '/');
            using var stream = File.OpenRead(file);
            hash.AppendData(Encoding.UTF8.GetBytes($"{name}\0{stream.Length}\0"));
            int n;
            while ((n = stream.Read(buffer)) > 0) hash.AppendData(buffer, 0, n);
        }
        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }

    public string Describe() => Files.Count == 1 ? Files[0] : $"{Root} ({Files.Count} files)";
}
