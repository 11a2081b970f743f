using System.Globalization;
using System.Text.RegularExpressions;

namespace Memopt.Tensors;

/// <summary>Parses and prints byte counts: "24GiB", "512 MB", "1.5G", "4096".</summary>
public static partial class ByteSize
{
    [GeneratedRegex(@"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(i?)B?\s*$", RegexOptions.IgnoreCase)]
    private static partial Regex Pattern();

    public static long Parse(string text)
    {
        var m = Pattern().Match(text);
        if (!m.Success) throw new FormatException($"'{text}' is not a byte size (examples: 24GiB, 512MB, 1.5G, 4096)");
        double value = double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        int power = "KMGT".IndexOf(char.ToUpperInvariant(m.Groups[2].Value.FirstOrDefault('\0'))) + 1;
        // "G" alone and "GiB" are binary; "GB" is decimal, as disk vendors and nvidia-smi's MB differ.
        bool binary = m.Groups[3].Value.Length > 0 || !text.TrimEnd().EndsWith("B", StringComparison.OrdinalIgnoreCase);
        double unit = Math.Pow(binary ? 1024 : 1000, power);
        double bytes = value * unit;
        if (bytes <= 0) throw new FormatException($"'{text}': a byte size must be > 0");
        return (long)bytes;
    }

    public static string Format(long bytes)
    {
        string[] units = ["B", "KiB", "MiB", "GiB", "TiB"];
        double v = bytes;
        int u = 0;
        while (Math.Abs(v) >= 1024 && u < units.Length - 1) { v /= 1024; u++; }
        return u == 0 ? $"{bytes} B" : v.ToString(v >= 100 ? "F0" : v >= 10 ? "F1" : "F2", CultureInfo.InvariantCulture) + " " + units[u];
    }
}
