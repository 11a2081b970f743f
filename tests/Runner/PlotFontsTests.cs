using System.Diagnostics;
using Memopt.Runner;
using Memopt.Runner.Experiments;
using Memopt.Runner.Plots;
using ScottPlot;
using SkiaSharp;

namespace Memopt.Tests.Runner;

/// <summary>
/// The plots' embedded font: the resources are real typefaces, ScottPlot resolves every label to them after
/// registration, and text shows up in the PNG — also on a machine without system fonts (the H100 host's bug).
/// </summary>
public class PlotFontsTests : IDisposable
{
    /// <summary>A title of ~12 characters at 16–18 px leaves hundreds of dark anti-aliased pixels; 50 means some text was drawn.</summary>
    private const int MinTextPixels = 50;

    private readonly string _dir = Directory.CreateTempSubdirectory("memopt-fonts").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void The_embedded_resources_are_DejaVu_Sans_regular_and_bold_with_the_glyphs_plots_use()
    {
        using var regular = PlotFonts.Load(PlotFonts.RegularResource);
        using var bold = PlotFonts.Load(PlotFonts.BoldResource);
        foreach (var face in new[] { regular, bold })
        {
            Assert.Equal("DejaVu Sans", face.FamilyName);
            Assert.True(face.GlyphCount > 1000, $"{face.FamilyName}: only {face.GlyphCount} glyphs");
            Assert.True(face.ContainsGlyphs("peak 2.25 GiB at 4420.3 ms — backward, µ×≤"), "a character of the plots' text has no glyph");
        }
        Assert.True(bold.FontStyle.Weight >= (int)SKFontStyleWeight.Bold, $"bold face has weight {bold.FontStyle.Weight}");
        Assert.True(regular.FontStyle.Weight < (int)SKFontStyleWeight.SemiBold, $"regular face has weight {regular.FontStyle.Weight}");
        Assert.Throws<InvalidOperationException>(() => PlotFonts.Load("Memopt.Runner.Fonts.Missing.ttf"));
        using var license = typeof(PlotFonts).Assembly.GetManifestResourceStream("Memopt.Runner.Fonts.LICENSE-DejaVu.txt");
        Assert.NotNull(license); // the license travels with the fonts
    }

    [Fact]
    public void After_registration_every_label_resolves_to_the_embedded_typefaces()
    {
        PlotFonts.EnsureRegistered();
        PlotFonts.EnsureRegistered(); // idempotent: one resolver pair, not two
        Assert.Equal(PlotFonts.Family, Fonts.Default);
        Assert.Equal(2, Fonts.FontResolvers.Count(r => r.GetType().DeclaringType == typeof(PlotFonts)));
        Assert.Same(PlotFonts.Regular, Fonts.GetTypeface(Fonts.Default, bold: false, italic: false));
        Assert.Same(PlotFonts.Bold, Fonts.GetTypeface(Fonts.Default, bold: true, italic: false));
        // A name the system cannot supply (on the H100 host: every name) falls back to the embedded face, not an empty one.
        Assert.Same(PlotFonts.Regular, Fonts.GetTypeface("No Such Font 7f3a", bold: false, italic: false));

        var plot = new Plot();
        plot.Title("title");
        plot.XLabel("x");
        plot.YLabel("y");
        var line = plot.Add.ScatterLine(new double[] { 0, 1 }, new double[] { 0, 1 });
        line.LegendText = "series";
        var text = plot.Add.Text("peak", 0.5, 0.5);
        plot.ShowLegend();
        plot.GetImage(400, 300).Dispose(); // render once: styles are final
        foreach (var (what, font) in new[]
                 {
                     ("title", plot.Axes.Title.Label.FontName), ("x label", plot.Axes.Bottom.Label.FontName),
                     ("y label", plot.Axes.Left.Label.FontName), ("x ticks", plot.Axes.Bottom.TickLabelStyle.FontName),
                     ("y ticks", plot.Axes.Left.TickLabelStyle.FontName), ("legend item", line.LegendItems.Single().LabelStyle.FontName),
                     ("manual legend item", new LegendItem().LabelStyle.FontName), ("text", text.LabelStyle.FontName),
                 })
            Assert.True(font == PlotFonts.Family, $"{what} uses font '{font}', not {PlotFonts.Family}");
        Assert.True(string.IsNullOrEmpty(plot.Legend.FontName), $"the legend overrides its items' font with '{plot.Legend.FontName}'");
    }

    [Fact]
    public void A_rendered_plot_has_text_pixels_above_its_data_area()
    {
        PlotFonts.EnsureRegistered();
        string path = Path.Combine(_dir, "titled.png");
        var plot = new Plot();
        plot.Title("Memory title");
        plot.Add.ScatterLine(new double[] { 0, 1 }, new double[] { 0, 1 });
        plot.SavePng(path, 500, 300);
        int top = (int)plot.RenderManager.LastRender.DataRect.Top - 3; // the band above the data area's frame holds only the title
        Assert.True(top > 10, $"no room for a title: the data area starts at row {top + 3}");
        Assert.True(DarkPixels(path, 0, top) >= MinTextPixels, $"no title text above the data area (rows 0–{top}) of {path}");
    }

    /// <summary>
    /// The bug itself: memopt run with /usr/share/fonts hidden (a private mount namespace, as on the H100 host, which
    /// has no fonts) still draws its title. Needs Linux and the right to unshare a mount namespace (root); skipped otherwise.
    /// </summary>
    [Fact]
    public void Without_system_fonts_a_memory_plot_still_has_its_title()
    {
        if (!OperatingSystem.IsLinux() || !File.Exists("/usr/bin/unshare") || Run("/usr/bin/unshare", ["-m", "true"]).Code != 0)
            Assert.Skip("needs Linux and `unshare -m` (root) to hide the system fonts");
        string empty = Directory.CreateDirectory(Path.Combine(_dir, "no-fonts")).FullName, png = Path.Combine(_dir, "memory.png");
        string memopt = $"'{ChildProgram.DotnetHost()}' '{typeof(Program).Assembly.Location}'";
        string script = $"mount --bind '{empty}' /usr/share/fonts && [ -z \"$(ls -A /usr/share/fonts)\" ] && exec {memopt} memory --device cpu --layers 1 " +
                        $"--d-model 16 --heads 2 --d-ff 32 --seq-len 16 --vocab-size 300 --batch-size 4 --plot '{png}'";
        var (code, output) = Run("/usr/bin/unshare", ["-m", "sh", "-c", script]);
        Assert.True(code == 0, output);
        Assert.True(DarkPixels(png, 0, 22) >= MinTextPixels, $"no title text in rows 0–22 of {png}"); // MemoryPlot's title band at 1200×650
    }

    private static (int Code, string Output) Run(string file, string[] args)
    {
        var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) start.ArgumentList.Add(a);
        using var p = Process.Start(start)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        string stderr = p.StandardError.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, stdout.Result + stderr);
    }

    /// <summary>Pixels darker than mid-grey in rows [<paramref name="fromRow"/>, <paramref name="toRow"/>) of a PNG.</summary>
    internal static int DarkPixels(string png, int fromRow, int toRow)
    {
        using var bitmap = SKBitmap.Decode(png) ?? throw new InvalidDataException($"{png} is not an image");
        int n = 0;
        for (int y = fromRow; y < Math.Min(toRow, bitmap.Height); y++)
            for (int x = 0; x < bitmap.Width; x++)
            {
                var c = bitmap.GetPixel(x, y);
                if (c.Alpha > 128 && c.Red + c.Green + c.Blue < 3 * 128) n++;
            }
        return n;
    }
}
