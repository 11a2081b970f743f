using System.Text;

namespace Memopt.Model;

/// <summary>
/// Writes a file so that readers see either the old file or the complete new one, never a half-written file: the data
/// goes to a unique temporary file in the same directory, is flushed to disk, and is then renamed over the target
/// (rename within a directory is atomic). On any failure the temporary file is deleted.
/// </summary>
public static class AtomicFile
{
    public static void Write(string path, Action<Stream> write) => WriteThroughPath(path, temp =>
    {
        using var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16);
        write(stream);
        stream.Flush(flushToDisk: true);
    });

    /// <summary>
    /// The same for a library that saves to a path itself (ScottPlot's SavePng): <paramref name="writeTemp"/> creates the
    /// file at the temporary path it is given, which ends in <paramref name="tempSuffix"/> (e.g. ".png", for libraries
    /// that choose the format by extension); then it is renamed over <paramref name="path"/>.
    /// </summary>
    public static void WriteThroughPath(string path, Action<string> writeTemp, string tempSuffix = "")
    {
        string full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        string temp = $"{full}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}{tempSuffix}";
        try
        {
            writeTemp(temp);
            File.Move(temp, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(temp); } catch (IOException) { } // best effort; the original exception matters
            throw;
        }
    }

    public static void WriteAllText(string path, string text) =>
        Write(path, s => s.Write(new UTF8Encoding(false).GetBytes(text)));
}
