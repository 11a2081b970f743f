using System.Diagnostics;
using System.Globalization;
using System.Text;
using Memopt.Tensors;

namespace Memopt.Model.Memory;

/// <summary>
/// Writes a device's memory timeline as a Chrome trace-event file ({"traceEvents":[...]}, opens in Perfetto and
/// chrome://tracing): a counter track ("ph":"C") per memory category plus tracked and reserved totals, updated at every
/// allocation, free and retag; a slice ("ph":"X") per phase (setup, forward, backward, recompute, optimizer,
/// evaluation) on one track; and a slice per op on another — each op's forward (from the previous op boundary to the
/// op's Tape.Record) and each node's backward (around the node's backward call), with the op, layer and phase in args.
/// A recompute's forward slices nest inside the checkpoint's backward slice.
/// GPU work is asynchronous, so at every slice boundary the writer synchronizes the device before reading the clock:
/// slice durations are real kernel time (plus launch overhead), and tracing slows the run down.
/// Events are streamed to a temporary file next to the target and renamed over it when the trace stops (atomic); the
/// trace stops by itself after <c>steps</c> optimizer steps (the end of an optimizer phase) or <c>maxEvents</c> events.
/// </summary>
public sealed class ChromeTrace : IMemoryListener, IDisposable
{
    private const int Pid = 1, CounterTid = 0, PhaseTid = 1, OpTid = 2;
    private readonly ComputeDevice _device;
    private readonly MemoryTracker _tracker;
    private readonly string _path;
    private readonly string _temp;
    private readonly StreamWriter _writer;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private readonly int _steps;
    private readonly long _maxEvents;
    private readonly Stack<(string Op, double Begin, int Layer, Phase Phase)> _backward = new();
    private readonly StringBuilder _line = new(256);
    private double _lastTs;
    private double _opBoundary;
    private double _phaseStart;
    private long _reservedWritten = -1;
    private bool _first = true;
    private bool _stopped;

    private ChromeTrace(ComputeDevice device, string path, int steps, long maxEvents)
    {
        _device = device;
        _tracker = device.Tracker;
        _path = Path.GetFullPath(path);
        _steps = steps;
        _maxEvents = maxEvents;
        Directory.CreateDirectory(Path.GetDirectoryName(_path)!);
        _temp = $"{_path}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}";
        _writer = new StreamWriter(new FileStream(_temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16), new UTF8Encoding(false));
        _writer.Write("{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n");
        Metadata("process_name", CounterTid, "memopt " + device.Name);
        Metadata("thread_name", PhaseTid, "phases");
        Metadata("thread_name", OpTid, "ops (forward, backward, recompute)");
        foreach (var c in MemoryCategories.All) Counter(c.Label(), _tracker.LiveOf(c));
        Counter("tracked_total", _tracker.Live);
        WriteReserved();
        _tracker.Listener = this;
    }

    /// <summary>Events written so far (counters, slices, markers).</summary>
    public long Events { get; private set; }
    public int StepsTraced { get; private set; }
    public bool Truncated { get; private set; }
    public string PathWritten => _path;

    /// <summary>Starts tracing <paramref name="device"/>'s tracker into <paramref name="path"/> (it becomes the tracker's listener).</summary>
    public static ChromeTrace Start(ComputeDevice device, string path, int steps = 3, long maxEvents = 2_000_000)
    {
        if (steps <= 0) throw new ArgumentException($"--trace-steps must be > 0, got {steps}");
        if (maxEvents <= 0) throw new ArgumentException($"trace: the event cap must be > 0, got {maxEvents}");
        if (device.Tracker.Listener is not null) throw new InvalidOperationException("trace: the device's tracker already has a listener");
        return new ChromeTrace(device, path, steps, maxEvents);
    }

    /// <summary>Closes open slices, ends the JSON, and renames the file into place. Further events are ignored.</summary>
    public void Stop()
    {
        if (_stopped) return;
        _stopped = true;
        if (ReferenceEquals(_tracker.Listener, this)) _tracker.Listener = null;
        try
        {
            double now = Now(sync: true);
            while (_backward.Count > 0)
            {
                var open = _backward.Pop();
                Slice(OpTid, open.Op, open.Begin, now, open.Layer, open.Phase, "backward (unfinished)");
            }
            if (now > _phaseStart) Slice(PhaseTid, _tracker.Phase.Label(), _phaseStart, now, -1, _tracker.Phase, null);
            _writer.Write("\n]}\n");
            _writer.Flush();
            ((FileStream)_writer.BaseStream).Flush(flushToDisk: true);
            _writer.Dispose();
            File.Move(_temp, _path, overwrite: true);
        }
        catch
        {
            _writer.Dispose();
            try { File.Delete(_temp); } catch (IOException) { }
            throw;
        }
    }

    public void Dispose() => Stop();

    void IMemoryListener.OnAllocate(MemoryTracker tracker, Allocation a)
    {
        if (_stopped) return;
        Counter(a.Category.Label(), tracker.LiveOf(a.Category));
        Counter("tracked_total", tracker.Live);
        WriteReserved();
        CheckCap();
    }

    void IMemoryListener.OnFree(MemoryTracker tracker, Allocation a)
    {
        if (_stopped) return;
        Counter(a.Category.Label(), tracker.LiveOf(a.Category));
        Counter("tracked_total", tracker.Live);
        CheckCap();
    }

    void IMemoryListener.OnRetag(MemoryTracker tracker, Allocation a, MemoryCategory previous)
    {
        if (_stopped) return;
        Counter(previous.Label(), tracker.LiveOf(previous));
        Counter(a.Category.Label(), tracker.LiveOf(a.Category));
        CheckCap();
    }

    void IMemoryListener.OnPhaseChanged(MemoryTracker tracker, Phase previous, Phase next)
    {
        if (_stopped) return;
        double now = Now(sync: true);
        Slice(PhaseTid, previous.Label(), _phaseStart, now, -1, previous, null);
        _phaseStart = now;
        _opBoundary = now;
        if (previous == Phase.Optimizer)
        {
            StepsTraced++;
            Instant($"step {StepsTraced} done", now);
            if (StepsTraced >= _steps) Stop();
        }
        CheckCap();
    }

    void IMemoryListener.OnOpForward(MemoryTracker tracker, string op)
    {
        if (_stopped) return;
        double now = Now(sync: true);
        var phase = tracker.Phase;
        Slice(OpTid, op, _opBoundary, now, tracker.Layer, phase, phase == Phase.Recompute ? "recompute" : "forward");
        _opBoundary = now;
        CheckCap();
    }

    void IMemoryListener.OnBackwardBegin(MemoryTracker tracker, string op)
    {
        if (_stopped) return;
        _backward.Push((op, Now(sync: true), tracker.Layer, tracker.Phase));
    }

    void IMemoryListener.OnBackwardEnd(MemoryTracker tracker, string op)
    {
        if (_stopped || _backward.Count == 0) return;
        double now = Now(sync: true);
        var open = _backward.Pop();
        Slice(OpTid, open.Op, open.Begin, now, open.Layer, open.Phase, "backward");
        _opBoundary = now;
        CheckCap();
    }

    /// <summary>Microseconds since the trace started, never going back (with a device synchronization first at slice boundaries).</summary>
    private double Now(bool sync)
    {
        if (sync) _device.Synchronize();
        double us = _clock.Elapsed.TotalMicroseconds;
        if (us < _lastTs) us = _lastTs;
        _lastTs = us;
        return us;
    }

    private void CheckCap()
    {
        if (Events < _maxEvents || _stopped) return;
        Truncated = true;
        Instant($"trace truncated after {Events} events", Now(sync: false));
        Stop();
    }

    private void WriteReserved()
    {
        long reserved = _tracker.Reserved;
        if (reserved == _reservedWritten) return;
        _reservedWritten = reserved;
        Counter("pool_reserved", reserved);
    }

    private void Counter(string name, long bytes)
    {
        var b = Begin();
        b.Append("{\"name\":\"").Append(name).Append("\",\"ph\":\"C\",\"ts\":");
        Ts(b, Now(sync: false));
        b.Append(",\"pid\":").Append(Pid).Append(",\"tid\":").Append(CounterTid).Append(",\"args\":{\"bytes\":").Append(bytes).Append("}}");
        Flush();
    }

    private void Slice(int tid, string name, double begin, double end, int layer, Phase phase, string? pass)
    {
        var b = Begin();
        b.Append("{\"name\":\"");
        Escape(b, name);
        b.Append("\",\"cat\":\"").Append(tid == PhaseTid ? "phase" : pass).Append("\",\"ph\":\"X\",\"ts\":");
        Ts(b, begin);
        b.Append(",\"dur\":");
        Ts(b, Math.Max(0, end - begin));
        b.Append(",\"pid\":").Append(Pid).Append(",\"tid\":").Append(tid).Append(",\"args\":{\"phase\":\"").Append(phase.Label()).Append('"');
        if (tid == OpTid) b.Append(",\"layer\":").Append(layer).Append(",\"pass\":\"").Append(pass).Append('"');
        b.Append("}}");
        Flush();
    }

    private void Instant(string name, double ts)
    {
        var b = Begin();
        b.Append("{\"name\":\"");
        Escape(b, name);
        b.Append("\",\"ph\":\"i\",\"s\":\"g\",\"ts\":");
        Ts(b, ts);
        b.Append(",\"pid\":").Append(Pid).Append(",\"tid\":").Append(PhaseTid).Append('}');
        Flush();
    }

    private void Metadata(string kind, int tid, string name)
    {
        var b = Begin();
        b.Append("{\"name\":\"").Append(kind).Append("\",\"ph\":\"M\",\"pid\":").Append(Pid).Append(",\"tid\":").Append(tid).Append(",\"args\":{\"name\":\"");
        Escape(b, name);
        b.Append("\"}}");
        Flush();
    }

    private StringBuilder Begin()
    {
        _line.Clear();
        if (!_first) _line.Append(",\n");
        _first = false;
        return _line;
    }

    private void Flush()
    {
        _writer.Write(_line);
        Events++;
    }

    private static void Ts(StringBuilder b, double us) => b.Append(us.ToString("0.###", CultureInfo.InvariantCulture));

    private static void Escape(StringBuilder b, string s)
    {
        foreach (char ch in s)
        {
            if (ch is '"' or '\\') b.Append('\\').Append(ch);
            else if (ch < ' ') b.Append("\\u").Append(((int)ch).ToString("x4", CultureInfo.InvariantCulture));
            else b.Append(ch);
        }
    }
}
