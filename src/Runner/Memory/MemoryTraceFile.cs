using System.Text.Json;

namespace Memopt.Runner.Memory;

/// <summary>
/// A Chrome trace written by memopt's --trace (see Memopt.Model.Memory.ChromeTrace), read back for plotting: the
/// counter events ("ph":"C", args.bytes) per track — one per memory category plus tracked_total and pool_reserved —,
/// the phase slices ("ph":"X", "cat":"phase"), the op slices (other "X" events, with args layer and pass) and the
/// "step N done" instants. Times are in milliseconds since the trace started (the file has microseconds).
/// Events of other shapes are skipped, so traces from other tools with memory counters also load.
/// </summary>
public sealed class MemoryTraceFile
{
    public const string TrackedTotal = "tracked_total", PoolReserved = "pool_reserved";

    /// <summary>One counter update: the track's value from this time on.</summary>
    public readonly record struct Sample(double Ms, string Track, long Bytes);

    public sealed record Slice(string Name, double BeginMs, double EndMs, string Phase, int Layer, string? Pass);

    /// <summary>Every counter update in time order (stable: events with equal times keep their file order).</summary>
    public required IReadOnlyList<Sample> Samples { get; init; }
    public required IReadOnlyList<Slice> Phases { get; init; }
    public required IReadOnlyList<Slice> Ops { get; init; }
    /// <summary>Times of the "step N done" markers (the end of each traced optimizer step), ascending.</summary>
    public required IReadOnlyList<double> StepEndsMs { get; init; }
    /// <summary>The process name of the trace ("memopt NVIDIA H100 80GB HBM3"), when it has one.</summary>
    public string? ProcessName { get; init; }

    public double EndMs => Math.Max(Samples[^1].Ms, Math.Max(Phases.Count == 0 ? 0 : Phases.Max(p => p.EndMs), StepEndsMs.Count == 0 ? 0 : StepEndsMs[^1]));

    /// <summary>Reads <paramref name="path"/>; throws <see cref="InvalidDataException"/> (message names the file and the problem) or <see cref="FileNotFoundException"/>.</summary>
    public static MemoryTraceFile Read(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: no such file", path);
        JsonDocument doc;
        try
        {
            using var stream = File.OpenRead(path);
            doc = JsonDocument.Parse(stream, new JsonDocumentOptions { AllowTrailingCommas = true });
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not JSON ({e.Message})", e);
        }
        using (doc)
        {
            var root = doc.RootElement;
            // Chrome's two layouts: {"traceEvents":[...]} or a bare array of events.
            JsonElement events = root.ValueKind == JsonValueKind.Array ? root
                : root.ValueKind == JsonValueKind.Object && root.TryGetProperty("traceEvents", out var te) && te.ValueKind == JsonValueKind.Array ? te
                : throw new InvalidDataException($"{path}: not a Chrome trace (no \"traceEvents\" array)");
            return Parse(path, events);
        }
    }

    private static MemoryTraceFile Parse(string path, JsonElement events)
    {
        var samples = new List<Sample>();
        var phases = new List<Slice>();
        var ops = new List<Slice>();
        var stepEnds = new List<double>();
        string? process = null;
        foreach (var e in events.EnumerateArray())
        {
            if (e.ValueKind != JsonValueKind.Object || String(e, "ph") is not { } ph || String(e, "name") is not { } name) continue;
            if (ph == "M")
            {
                if (name == "process_name" && e.TryGetProperty("args", out var margs) && margs.ValueKind == JsonValueKind.Object) process = String(margs, "name");
                continue;
            }
            if (Number(e, "ts") is not double ts) continue;
            double ms = ts / 1000;
            JsonElement args = e.TryGetProperty("args", out var a) && a.ValueKind == JsonValueKind.Object ? a : default;
            switch (ph)
            {
                case "C" when args.ValueKind == JsonValueKind.Object && Number(args, "bytes") is double bytes:
                    samples.Add(new Sample(ms, name, (long)bytes));
                    break;
                case "X":
                    double end = ms + Math.Max(0, Number(e, "dur") ?? 0) / 1000;
                    bool hasArgs = args.ValueKind == JsonValueKind.Object;
                    string phase = (hasArgs ? String(args, "phase") : null) ?? (String(e, "cat") == "phase" ? name : "");
                    var slice = new Slice(name, ms, end, phase, hasArgs && Number(args, "layer") is double layer ? (int)layer : -1, hasArgs ? String(args, "pass") : null);
                    (String(e, "cat") == "phase" ? phases : ops).Add(slice);
                    break;
                case "i" or "I" when name.StartsWith("step ", StringComparison.Ordinal) && name.EndsWith(" done", StringComparison.Ordinal):
                    stepEnds.Add(ms);
                    break;
            }
        }
        if (samples.Count == 0)
            throw new InvalidDataException($"{path}: no memory counter events (\"ph\":\"C\" with args.bytes) — write a trace with `memopt train --trace {Path.GetFileName(path)}`");
        return new MemoryTraceFile
        {
            Samples = samples.OrderBy(s => s.Ms).ToList(), // OrderBy is stable
            Phases = phases.OrderBy(p => p.BeginMs).ToList(),
            Ops = ops.OrderBy(p => p.BeginMs).ToList(),
            StepEndsMs = stepEnds.Order().ToList(),
            ProcessName = process,
        };
    }

    private static string? String(JsonElement e, string property) =>
        e.TryGetProperty(property, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    private static double? Number(JsonElement e, string property) =>
        e.TryGetProperty(property, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : null;
}
