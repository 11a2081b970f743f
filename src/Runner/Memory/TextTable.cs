using System.Text;

namespace Memopt.Runner.Memory;

/// <summary>A plain-text table for the console (and logs): columns padded to their widest cell, numbers right-aligned.</summary>
public sealed class TextTable(params string[] headers)
{
    private readonly List<string[]> _rows = new();

    public TextTable Row(params object?[] cells)
    {
        if (cells.Length != headers.Length) throw new ArgumentException($"table row has {cells.Length} cells, the table {headers.Length} columns");
        _rows.Add(cells.Select(c => c?.ToString() ?? "").ToArray());
        return this;
    }

    public override string ToString()
    {
        var widths = headers.Select((h, i) => Math.Max(h.Length, _rows.Count == 0 ? 0 : _rows.Max(r => r[i].Length))).ToArray();
        // A column is right-aligned when every non-empty cell starts with a digit, a sign or a dash placeholder.
        var right = headers.Select((_, i) => _rows.Count > 0 && _rows.All(r => r[i].Length == 0 || char.IsDigit(r[i][0]) || r[i][0] is '-' or '+' or '—')).ToArray();
        var lines = new List<string>();
        void Line(string[] cells)
        {
            var sb = new StringBuilder("  ");
            for (int i = 0; i < cells.Length; i++)
            {
                sb.Append(right[i] ? cells[i].PadLeft(widths[i]) : cells[i].PadRight(widths[i]));
                if (i < cells.Length - 1) sb.Append("  ");
            }
            lines.Add(sb.ToString().TrimEnd());
        }
        Line(headers);
        Line(widths.Select(w => new string('-', w)).ToArray());
        foreach (var r in _rows) Line(r);
        return string.Join('\n', lines);
    }
}
