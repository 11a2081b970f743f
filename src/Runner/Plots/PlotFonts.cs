using ScottPlot;
using SkiaSharp;

namespace Memopt.Runner.Plots;

/// <summary>
/// The font of every memopt plot: DejaVu Sans (regular and bold), shipped inside memopt.dll (Fonts/, license there).
/// ScottPlot takes its default font from the system through SkiaSharp's font manager; on a host without fonts (the H100
/// machine has no /usr/share/fonts) that is an empty typeface and the PNGs came out with no title, labels, ticks or
/// legend. <see cref="EnsureRegistered"/> puts a resolver for the embedded typefaces in front of ScottPlot's system
/// resolver, makes <see cref="Family"/> ScottPlot's default font, and adds the same resolver last as a fallback for any
/// other font name the system cannot supply, so plots look the same on every machine.
/// Call it before creating a <see cref="Plot"/>: a label takes <c>Fonts.Default</c> when it is constructed.
/// </summary>
public static class PlotFonts
{
    /// <summary>The name plots ask ScottPlot for (not "DejaVu Sans", so a system DejaVu cached under that name is never used instead).</summary>
    public const string Family = "DejaVu Sans (memopt)";

    public const string RegularResource = "Memopt.Runner.Fonts.DejaVuSans.ttf";
    public const string BoldResource = "Memopt.Runner.Fonts.DejaVuSans-Bold.ttf";

    private static readonly Lazy<SKTypeface> RegularFace = new(() => Load(RegularResource));
    private static readonly Lazy<SKTypeface> BoldFace = new(() => Load(BoldResource));
    private static readonly Lock Gate = new();
    private static bool _registered;

    public static SKTypeface Regular => RegularFace.Value;
    public static SKTypeface Bold => BoldFace.Value;

    /// <summary>Registers the embedded font with ScottPlot and makes it the default (once per process; later calls return at once).</summary>
    public static void EnsureRegistered()
    {
        lock (Gate)
        {
            if (_registered) return;
            Fonts.FontResolvers.Insert(0, new EmbeddedFontResolver(anyName: false));
            Fonts.FontResolvers.Add(new EmbeddedFontResolver(anyName: true));
            Fonts.Default = Family;
            Fonts.Sans = Family;
            _registered = true;
        }
    }

    /// <summary>A typeface from one of the assembly's font resources; throws if the resource is missing or not a font.</summary>
    public static SKTypeface Load(string resource)
    {
        using var stream = typeof(PlotFonts).Assembly.GetManifestResourceStream(resource)
            ?? throw new InvalidOperationException($"plot font: resource {resource} is missing from {typeof(PlotFonts).Assembly.GetName().Name}");
        using var copy = new MemoryStream();
        stream.CopyTo(copy);
        using var data = SKData.CreateCopy(copy.GetBuffer().AsSpan(0, (int)copy.Length));
        return SKTypeface.FromData(data) ?? throw new InvalidOperationException($"plot font: resource {resource} is not a font SkiaSharp can read");
    }

    /// <summary>
    /// Answers ScottPlot's typeface requests with the embedded faces: bold for bold weights, regular otherwise (no
    /// italic face is shipped). With <c>anyName</c> it answers every name, else only <see cref="Family"/>.
    /// </summary>
    private sealed class EmbeddedFontResolver(bool anyName) : IFontResolver
    {
        public SKTypeface? CreateTypeface(string fontName, FontWeight weight, FontSlant slant, FontSpacing spacing) =>
            anyName || fontName == Family ? (weight >= FontWeight.SemiBold ? Bold : Regular) : null;

        public SKTypeface? CreateTypeface(string fontName, bool bold, bool italic) =>
            CreateTypeface(fontName, bold ? FontWeight.Bold : FontWeight.Normal, italic ? FontSlant.Italic : FontSlant.Upright, FontSpacing.Normal);
    }
}
