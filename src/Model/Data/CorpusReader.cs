using System.Text;
using System.Text.Json;

namespace Memopt.Model.Data;

/// <summary>
/// Reads the documents of <c>--data</c> files.
/// <list type="bullet">
/// <item>.txt (UTF-8, optional BOM, CRLF read as LF): split into paragraphs at blank lines (lines of only spaces/tabs);
///   each paragraph is one document, so a file without blank lines is a single document. Lines inside a paragraph keep
///   their text and their single newlines.</item>
/// <item>.jsonl (Speakleash shape): each non-blank line is one document, the "text" string of a JSON object. A line
///   that is not valid JSON / UTF-8, not an object, or has no non-empty "text" string is counted as bad, reported, and
///   skipped. Blank lines are ignored.</item>
/// </list>
/// A file that is empty or yields no document is an error naming the file: every given file is expected to contribute.
/// </summary>
public static class CorpusReader
{
    private const int MaxBadLineExamples = 5;
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    public static Corpus Read(CorpusFiles files)
    {
        var documents = new List<string>();
        var badExamples = new List<string>();
        int badLines = 0;
        foreach (string file in files.Files)
        {
            if (file.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase)) badLines += ReadJsonl(file, documents, badExamples);
            else ReadText(file, documents);
        }
        return new Corpus { Documents = documents, BadLines = badLines, BadLineExamples = badExamples, Description = files.Describe() };
    }

    public static void ReadText(string file, List<string> documents)
    {
        byte[] bytes = File.ReadAllBytes(file);
        int offset = bytes.Length >= 3 && bytes[0] == 0xEF && bytes[1] == 0xBB && bytes[2] == 0xBF ? 3 : 0;
        string text;
        try { text = StrictUtf8.GetString(bytes, offset, bytes.Length - offset); }
        catch (DecoderFallbackException e)
        {
            throw new DataException($"{file}: not valid UTF-8 (at byte {offset + e.Index})", e);
        }
        if (string.IsNullOrWhiteSpace(text)) throw new DataException($"{file}: file is empty (no text)");
        documents.AddRange(SplitParagraphs(text.Replace("\r\n", "\n")));
    }

    /// <summary>Paragraphs of <paramref name="text"/>: maximal runs of non-blank lines, joined by '\n'.</summary>
    public static IEnumerable<string> SplitParagraphs(string text)
    {
        var paragraph = new StringBuilder();
        foreach (var line in text.Split('\n'))
        {
            if (line.AsSpan().Trim(" \t\r\f\v").IsEmpty)
            {
                if (paragraph.Length > 0) { yield return paragraph.ToString(); paragraph.Clear(); }
                continue;
            }
            if (paragraph.Length > 0) paragraph.Append('\n');
            paragraph.Append(line);
        }
        if (paragraph.Length > 0) yield return paragraph.ToString();
    }

    /// <summary>Appends the documents of a .jsonl file; returns its number of bad lines.</summary>
    public static int ReadJsonl(string file, List<string> documents, List<string> badExamples)
    {
        int bad = 0, before = documents.Count;
        long nonBlank = 0;
        string? firstProblem = null;
        Utf8LineReader.ForEachLine(file, (lineNumber, line) =>
        {
            if (IsBlank(line.Span)) return;
            nonBlank++;
            string? problem = TryReadText(line, out string? text);
            if (problem is null) { documents.Add(text!); return; }
            bad++;
            firstProblem ??= $"line {lineNumber}: {problem}";
            if (badExamples.Count < MaxBadLineExamples) badExamples.Add($"{file}:{lineNumber}: {problem}");
        });
        if (nonBlank == 0) throw new DataException($"{file}: file is empty (no JSON lines)");
        if (documents.Count == before) throw new DataException($"{file}: no documents: all {bad} lines are malformed ({firstProblem})");
        return bad;
    }

    /// <summary>null when the line is a JSON object with a non-empty "text" string, else why not.</summary>
    private static string? TryReadText(ReadOnlyMemory<byte> line, out string? text)
    {
        text = null;
        try
        {
            using var json = JsonDocument.Parse(line);
            if (json.RootElement.ValueKind != JsonValueKind.Object) return $"not a JSON object ({json.RootElement.ValueKind})";
            if (!json.RootElement.TryGetProperty("text", out var value)) return "no \"text\" field";
            if (value.ValueKind != JsonValueKind.String) return $"\"text\" is not a string ({value.ValueKind})";
            text = value.GetString();
            if (string.IsNullOrWhiteSpace(text)) return "empty \"text\"";
            return null;
        }
        catch (JsonException e) { return $"bad JSON ({e.Message.Split('.')[0]})"; }
        catch (InvalidOperationException) { return "invalid UTF-8 in \"text\""; }
        catch (ArgumentException) { return "invalid UTF-8"; }
    }

    private static bool IsBlank(ReadOnlySpan<byte> line)
    {
        foreach (byte b in line) if (b is not ((byte)' ' or (byte)'\t' or (byte)'\r')) return false;
        return true;
    }
}
