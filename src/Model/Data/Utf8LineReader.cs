namespace Memopt.Model.Data;

/// <summary>
/// Reads a file as raw UTF-8 lines (split on '\n', a trailing '\r' removed) without decoding, in 1 MiB chunks, so a
/// multi-gigabyte .jsonl streams in constant memory (plus the longest line) and an invalid byte sequence stays a
/// problem of its own line rather than of the whole file.
/// </summary>
public static class Utf8LineReader
{
    /// <summary>Calls <paramref name="onLine"/> with (1-based line number, line bytes); the bytes are valid only during the call.</summary>
    public static void ForEachLine(string path, Action<long, ReadOnlyMemory<byte>> onLine)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
        var buffer = new byte[1 << 20];
        int filled = 0;
        long lineNumber = 0;
        bool first = true;
        while (true)
        {
            if (filled == buffer.Length) Array.Resize(ref buffer, buffer.Length * 2); // a line longer than the buffer
            int read = stream.Read(buffer, filled, buffer.Length - filled);
            int start = 0;
            if (first && read >= 3 && buffer[0] == 0xEF && buffer[1] == 0xBB && buffer[2] == 0xBF) start = 3; // UTF-8 BOM
            first = false;
            int end = filled + read;
            int scan = filled;
            while (true)
            {
                int nl = Array.IndexOf(buffer, (byte)'\n', scan, end - scan);
                if (nl < 0) break;
                Emit(buffer, start, nl, ++lineNumber, onLine);
                start = scan = nl + 1;
            }
            if (read == 0)
            {
                if (start < end) Emit(buffer, start, end, ++lineNumber, onLine);
                return;
            }
            // keep the unfinished line at the front of the buffer
            Buffer.BlockCopy(buffer, start, buffer, 0, end - start);
            filled = end - start;
        }
    }

    private static void Emit(byte[] buffer, int start, int end, long lineNumber, Action<long, ReadOnlyMemory<byte>> onLine)
    {
        if (end > start && buffer[end - 1] == (byte)'\r') end--;
        onLine(lineNumber, new ReadOnlyMemory<byte>(buffer, start, end - start));
    }
}
