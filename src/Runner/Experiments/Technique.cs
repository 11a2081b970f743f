namespace Memopt.Runner.Experiments;

/// <summary>
/// One column of the study's matrix: a family (what --only/--skip name), the run's label (the family plus the window
/// size where it has one) and the train flags that switch it on.
/// </summary>
public sealed record Technique(string Family, string Label, IReadOnlyList<string> Flags, int? WindowSize)
{
    public bool Matches(string name) =>
        name.Equals(Family, StringComparison.OrdinalIgnoreCase) || name.Equals(Label, StringComparison.OrdinalIgnoreCase);
}

/// <summary>The techniques of the study and the matrix a selection of them makes.</summary>
public static class Techniques
{
    public const string Baseline = "baseline";
    public const string Bf16 = "bf16";
    public const string Bf16Flash = "bf16_flash";
    public const string Bf16FlashWindow = "bf16_flash_window";
    public const string Checkpointing = "checkpointing";
    public const string Combined = "combined";
    /// <summary>fp32, naive attention with a sliding-window mask: the window's effect alone (not in the default matrix).</summary>
    public const string Window = "window";

    /// <summary>The study's matrix, in the order runs and reports list them.</summary>
    public static readonly string[] DefaultFamilies = [Baseline, Bf16, Bf16Flash, Bf16FlashWindow, Checkpointing, Combined];
    public static readonly string[] AllFamilies = [.. DefaultFamilies, Window];

    /// <summary>The study's window sizes for sequence length T: T/4 and T/2.</summary>
    public static int[] DefaultWindowSizes(int seqLen) => [Math.Max(1, seqLen / 4), Math.Max(1, seqLen / 2)];

    /// <summary>
    /// The techniques to run: the default matrix, or those named by <paramref name="only"/> (a family or a label, e.g.
    /// <c>window</c> or <c>bf16_flash_window64</c>; the non-default <c>window</c> family only this way), less those named by
    /// <paramref name="skip"/>. "combined" is bf16 + flash + the first window size + gradient checkpointing.
    /// </summary>
    public static IReadOnlyList<Technique> Select(IReadOnlyList<int> windowSizes, IReadOnlyCollection<string> only, IReadOnlyCollection<string> skip)
    {
        if (windowSizes.Count == 0) throw new ArgumentException("--window-sizes needs at least one size");
        foreach (var w in windowSizes)
            if (w <= 0) throw new ArgumentException($"--window-sizes must all be > 0, got {w}");
        var all = AllFamilies.SelectMany(f => Expand(f, windowSizes)).ToList();
        foreach (var name in only.Concat(skip))
            if (!all.Any(t => t.Matches(name)))
                throw new ArgumentException($"unknown technique '{name}' (known: {string.Join(", ", AllFamilies)}, or a label such as {all.First(t => t.WindowSize is not null).Label})");
        var chosen = only.Count > 0
            ? all.Where(t => only.Any(t.Matches))
            : all.Where(t => DefaultFamilies.Contains(t.Family));
        var result = chosen.Where(t => !skip.Any(t.Matches)).ToList();
        if (result.Count == 0) throw new ArgumentException("--only/--skip leave no technique to run");
        return result;
    }

    private static IEnumerable<Technique> Expand(string family, IReadOnlyList<int> windows)
    {
        string[] bf16Flash = ["--bf16", "--flash-attn"];
        switch (family)
        {
            case Baseline: yield return new(family, family, [], null); break;
            case Bf16: yield return new(family, family, ["--bf16"], null); break;
            case Bf16Flash: yield return new(family, family, bf16Flash, null); break;
            case Checkpointing: yield return new(family, family, ["--gradient-checkpointing"], null); break;
            case Bf16FlashWindow:
                foreach (var w in windows.Distinct())
                    yield return new(family, $"{family}{w}", [.. bf16Flash, "--window-size", $"{w}"], w);
                break;
            case Window:
                foreach (var w in windows.Distinct())
                    yield return new(family, $"{family}{w}", ["--window-size", $"{w}"], w);
                break;
            case Combined:
                yield return new(family, family, [.. bf16Flash, "--window-size", $"{windows[0]}", "--gradient-checkpointing"], windows[0]);
                break;
            default: throw new ArgumentException($"unknown technique family '{family}'");
        }
    }

    /// <summary>The technique that the train flags switch on, for a max-batch search run with plain train flags.</summary>
    public static Technique FromFlags(bool bf16, bool flash, int? window, bool checkpointing)
    {
        var flags = new List<string>();
        if (bf16) flags.Add("--bf16");
        if (flash) flags.Add("--flash-attn");
        if (window is int w) flags.AddRange(["--window-size", $"{w}"]);
        if (checkpointing) flags.Add("--gradient-checkpointing");
        string family = (bf16, flash, window is not null, checkpointing) switch
        {
            (false, false, false, false) => Baseline,
            (true, false, false, false) => Bf16,
            (true, true, false, false) => Bf16Flash,
            (true, true, true, false) => Bf16FlashWindow,
            (false, false, false, true) => Checkpointing,
            (true, true, true, true) => Combined,
            (false, false, true, false) => Window,
            _ => "custom",
        };
        string label = family switch
        {
            Bf16FlashWindow or Window => $"{family}{window}",
            "custom" => string.Join('_', flags.Where(f => f.StartsWith("--")).Select(f => f.TrimStart('-').Replace('-', '_'))) + (window is int cw ? $"{cw}" : ""),
            _ => family,
        };
        return new Technique(family, label, flags, window);
    }
}
