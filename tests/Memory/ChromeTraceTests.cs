using System.Text.Json;
using Memopt.Autograd;
using Memopt.Autograd.Optim;
using Memopt.Model;
using Memopt.Model.Memory;
using Memopt.Model.Training;
using Memopt.Runner.Memory;
using Memopt.Tensors;
using Memopt.Tests.Model;

namespace Memopt.Tests.Memory;

/// <summary>The Chrome trace: valid JSON, well-formed slices, counters that never go negative and end at the tracker's live bytes.</summary>
[Collection(MeasuredTrainingCollection.Name)]
public class ChromeTraceTests(MeasuredTraining run) : IDisposable
{
    /// <summary>ts and dur are written to 0.001 µs each, so a nested slice's end may pass its parent's by that rounding.</summary>
    private const double RoundingUs = 0.002;

    private readonly string _dir = Directory.CreateTempSubdirectory("memopt-trace").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    internal sealed record Trace(JsonElement[] Events, Dictionary<string, long> LastCounter, JsonElement[] Slices);

    /// <summary>Parses a trace file and checks what every trace must satisfy; returns its events for further checks.</summary>
    internal static Trace Validate(string path)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        var events = doc.RootElement.GetProperty("traceEvents").EnumerateArray().Select(e => e.Clone()).ToArray();
        Assert.NotEmpty(events);
        var last = new Dictionary<string, long>();
        double previousCounterTs = double.NegativeInfinity;
        foreach (var e in events)
        {
            string ph = e.GetProperty("ph").GetString()!;
            Assert.True(e.TryGetProperty("name", out _) && e.TryGetProperty("pid", out _) && e.TryGetProperty("tid", out _), $"event without name/pid/tid: {e}");
            Assert.Contains(ph, new[] { "C", "X", "M", "i" });
            if (ph == "M") continue;
            double ts = e.GetProperty("ts").GetDouble();
            Assert.True(ts >= 0, $"negative timestamp: {e}");
            if (ph == "C")
            {
                Assert.True(ts >= previousCounterTs, $"counter timestamps go back: {previousCounterTs} then {e}");
                previousCounterTs = ts;
                long bytes = e.GetProperty("args").GetProperty("bytes").GetInt64();
                Assert.True(bytes >= 0, $"negative counter: {e}");
                last[e.GetProperty("name").GetString()!] = bytes;
            }
            if (ph == "X") Assert.True(e.GetProperty("dur").GetDouble() >= 0, $"negative duration: {e}");
        }
        var slices = events.Where(e => e.GetProperty("ph").GetString() == "X").ToArray();
        // On each track, slices are disjoint or nested (what trace viewers require of complete events).
        foreach (var track in slices.GroupBy(e => e.GetProperty("tid").GetInt32()))
        {
            var open = new Stack<(double Begin, double End, string Name)>();
            foreach (var s in track.OrderBy(e => e.GetProperty("ts").GetDouble()).ThenByDescending(e => e.GetProperty("dur").GetDouble()))
            {
                double begin = s.GetProperty("ts").GetDouble(), end = begin + s.GetProperty("dur").GetDouble();
                while (open.Count > 0 && open.Peek().End <= begin + RoundingUs) open.Pop();
                if (open.Count > 0)
                    Assert.True(end <= open.Peek().End + RoundingUs, $"slice {s.GetProperty("name")} [{begin}, {end}] overlaps {open.Peek().Name} [{open.Peek().Begin}, {open.Peek().End}] without nesting");
                open.Push((begin, end, s.GetProperty("name").GetString()!));
            }
        }
        Assert.Empty(Directory.GetFiles(Path.GetDirectoryName(Path.GetFullPath(path))!, "*.tmp*"));
        return new Trace(events, last, slices);
    }

    [Fact]
    public void A_step_traced_by_hand_ends_with_counters_equal_to_the_live_bytes()
    {
        var dev = run.Device;
        dev.ReleaseCachedMemory();
        string path = Path.Combine(_dir, "step.json");
        var tracker = dev.Tracker;
        var config = MeasuredTraining.Small;
        var trace = ChromeTrace.Start(dev, path, steps: 5);
        var expected = new Dictionary<string, long>();
        using (var model = new TransformerLM(dev, config, seed: 3))
        using (var adam = new AdamW(model.Parameters))
        {
            var (ids, targets) = TransformerLMTests.Batch(dev, 3, config.SeqLen, config.VocabSize, 4);
            using (ids)
            using (targets)
            {
                using (var tape = new Tape())
                {
                    Var loss;
                    using (tracker.EnterPhase(Phase.Forward)) loss = model.Loss(ids, targets, new AttentionSettings(null), new ForwardContext(true, 1, 0));
                    using (loss) tape.Backward(loss);
                }
                using (tracker.EnterPhase(Phase.Optimizer)) adam.Step();
                trace.Stop();
                foreach (var c in MemoryCategories.All) expected[c.Label()] = tracker.LiveOf(c);
                expected["tracked_total"] = tracker.Live;
            }
        }
        Assert.Null(tracker.Listener);
        var t = Validate(path);
        foreach (var (name, bytes) in expected) Assert.True(t.LastCounter[name] == bytes, $"{name}: last counter {t.LastCounter[name]}, live {bytes}");
        Assert.True(expected["parameters"] > 0 && expected["optimizer_state"] > 0);
        // Op slices carry the op, its layer and phase; every forward op of a block shows up, and backward of the same ops.
        var ops = t.Slices.Where(s => s.GetProperty("tid").GetInt32() == 2).ToArray();
        foreach (var op in new[] { "ln1", "attn.qkv", "attn.scores", "attn.softmax", "mlp.fc", "lm_head", "cross_entropy" })
        {
            Assert.Contains(ops, s => s.GetProperty("name").GetString() == op && s.GetProperty("args").GetProperty("pass").GetString() == "forward");
            Assert.Contains(ops, s => s.GetProperty("name").GetString() == op && s.GetProperty("args").GetProperty("pass").GetString() == "backward");
        }
        Assert.Contains(ops, s => s.GetProperty("name").GetString() == "mlp.fc" && s.GetProperty("args").GetProperty("layer").GetInt32() == 1);
        var phases = t.Slices.Where(s => s.GetProperty("tid").GetInt32() == 1).Select(s => s.GetProperty("name").GetString()).ToHashSet();
        Assert.Superset(new HashSet<string?> { "setup", "forward", "backward", "optimizer" }, phases);
    }

    [Fact]
    public void Training_trace_stops_after_the_requested_steps_and_nests_the_recompute_in_the_backward()
    {
        var dev = run.Device;
        dev.ReleaseCachedMemory();
        string path = Path.Combine(_dir, "train.json");
        var options = new TrainingOptions { BatchSize = 2, Steps = 3, GradientCheckpointing = true, CheckpointEvery = 2 };
        ChromeTrace trace;
        using (trace = ChromeTrace.Start(dev, path, steps: 2))
        {
            MemoryMeasurement.Run(dev, MeasuredTraining.Small, options, run.Data, seed: 1, recordTimeline: false);
            Assert.Null(dev.Tracker.Listener); // detached after step 2, while the trainer went on
            Assert.True(File.Exists(path), "the trace is in place as soon as it stops");
        }
        Assert.Equal(2, trace.StepsTraced);
        var t = Validate(path);
        Assert.Equal(2, t.Events.Count(e => e.GetProperty("ph").GetString() == "i"));
        // Every allocation of the traced steps is freed again except what persists across steps.
        var prediction = MemoryModel.Predict(MeasuredTraining.Small, MeasuredTraining.SettingsFor(options));
        long persistent = MemoryCategories.All.Where(c => c is MemoryCategory.Parameters or MemoryCategory.Gradients or MemoryCategory.OptimizerState or MemoryCategory.Data)
            .Sum(c => prediction.AtPeak[c]);
        Assert.Equal(persistent, t.LastCounter["tracked_total"]);
        Assert.Equal(prediction.PeakBytes, t.Events.Where(e => e.GetProperty("ph").GetString() == "C" && e.GetProperty("name").GetString() == "tracked_total")
            .Max(e => e.GetProperty("args").GetProperty("bytes").GetInt64()));
        var recompute = t.Slices.Where(s => s.GetProperty("cat").GetString() == "recompute").ToArray();
        Assert.NotEmpty(recompute);
        Assert.All(recompute, s => Assert.Equal(0, s.GetProperty("args").GetProperty("layer").GetInt32())); // block 0 of 2 (every 2nd)
        Assert.Contains(t.Slices, s => s.GetProperty("name").GetString() == "blocks.0.checkpoint" && s.GetProperty("cat").GetString() == "backward");
    }

    [Fact]
    public void Memory_plot_writes_a_png()
    {
        string path = Path.Combine(_dir, "plot.png");
        var p = MemoryModel.Predict(MeasuredTraining.Small, new MemoryModelSettings { BatchSize = 4, RecordTimeline = true });
        MemoryPlot.Save(path, "test", "event", [MemoryPlot.FromTimeline("predicted", p.Timeline), MemoryPlot.FromTimeline("again", p.Timeline)]);
        var bytes = File.ReadAllBytes(path);
        Assert.True(bytes.Length > 1000 && bytes[1] == 'P' && bytes[2] == 'N' && bytes[3] == 'G', "not a PNG");
        Assert.Throws<ArgumentException>(() => MemoryPlot.Save(path, "empty", "event", []));
    }
}
