namespace Memopt.Runner.Plots;

/// <summary>Writes a PNG atomically: rendered to a temporary file next to the target, then renamed over it.</summary>
public static class PngFile
{
    /// <summary>Calls <paramref name="render"/> with the temporary path (e.g. <c>p => plot.SavePng(p, w, h)</c>) and renames it to <paramref name="path"/>.</summary>
    public static void Write(string path, Action<string> render)
    {
        string full = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(full)!);
        string temp = $"{full}.tmp-{Environment.ProcessId}.png";
        try
        {
            render(temp);
            File.Move(temp, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(temp); } catch (IOException) { }
            throw;
        }
    }
}
