using System.Diagnostics;

namespace Memopt.Tensors;

/// <summary>One live device allocation as the tracker sees it.</summary>
public sealed class Allocation
{
    internal Allocation(long id, long bytes, MemoryCategory category, string op, int layer, Shape shape, DType dtype, Phase phase)
    {
        Id = id; Bytes = bytes; Category = category; Op = op; Layer = layer; Shape = shape; DType = dtype; Phase = phase;
    }
    public long Id { get; }
    public long Bytes { get; }
    public MemoryCategory Category { get; internal set; }
    public string Op { get; }
    public int Layer { get; }
    public Shape Shape { get; }
    public DType DType { get; }
    public Phase Phase { get; }
    public override string ToString() => $"{Op} {Category.Label()} layer {Layer} {Shape} {DType.Name()} {ByteSize.Format(Bytes)}";
}

public enum MemoryEventKind { Allocate, Free, Retag }

/// <summary>An entry of the timeline. <see cref="LiveBytes"/> is the tracked total right after the event.</summary>
public readonly record struct MemoryEvent(
    long AllocationId, MemoryEventKind Kind, MemoryCategory Category, string Op, int Layer,
    long Bytes, double TimeMs, Phase Phase, long LiveBytes);

/// <summary>Bytes per category at one moment.</summary>
public sealed record MemoryBreakdown(long Total, IReadOnlyDictionary<MemoryCategory, long> ByCategory)
{
    public override string ToString() =>
        $"{ByteSize.Format(Total)} (" + string.Join(", ", ByCategory.Where(kv => kv.Value > 0)
            .OrderByDescending(kv => kv.Value).Select(kv => $"{kv.Key.Label()} {ByteSize.Format(kv.Value)}")) + ")";
}

/// <summary>
/// Accounts for every device byte the engine holds. Live bytes are what tensors use ("allocated" in PyTorch's terms);
/// reserved bytes are what the caching pool holds from the driver (live + cached free blocks). Peaks are kept overall,
/// per category, per phase, and as the category breakdown at the moment of the overall peak.
/// </summary>
public sealed class MemoryTracker
{
    private readonly long[] _live = new long[MemoryCategories.All.Length];
    private readonly long[] _peak = new long[MemoryCategories.All.Length];
    private long[] _atPeak = new long[MemoryCategories.All.Length];
    private readonly long[] _peakByPhase = new long[MemoryCategories.Phases.Length];
    private readonly Dictionary<long, Allocation> _liveAllocations = new();
    private List<Allocation> _peakAllocations = new();
    private readonly List<MemoryEvent> _timeline = new();
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private long _nextId = 1;

    /// <summary>Upper bound on reserved device bytes; past it an allocation throws <see cref="OutOfDeviceMemoryException"/>.</summary>
    public long? Budget { get; set; }

    public long Live { get; private set; }
    public long Peak { get; private set; }
    public long Reserved { get; private set; }
    public long PeakReserved { get; private set; }
    private Phase _phase = Phase.Setup;

    public Phase Phase
    {
        get => _phase;
        set
        {
            if (value == _phase) return;
            var previous = _phase;
            _phase = value;
            Listener?.OnPhaseChanged(this, previous, value);
        }
    }

    public int Layer { get; set; } = -1;

    /// <summary>Observer of every event (the Chrome trace); null when nothing listens.</summary>
    public IMemoryListener? Listener { get; set; }

    /// <summary>Timeline recording; off by default so long runs do not grow without bound. At most <see cref="TimelineCapacity"/> events are kept.</summary>
    public bool RecordTimeline { get; set; }
    public int TimelineCapacity { get; set; } = 4_000_000;
    public bool TimelineTruncated { get; private set; }
    public IReadOnlyList<MemoryEvent> Timeline => _timeline;

    /// <summary>Keep a copy of the live allocation list whenever the peak rises (for "what is alive at the peak").</summary>
    public bool RecordPeakAllocations { get; set; }
    public IReadOnlyList<Allocation> PeakAllocations => _peakAllocations;

    public IReadOnlyCollection<Allocation> LiveAllocations => _liveAllocations.Values;
    public long LiveOf(MemoryCategory c) => _live[(int)c];
    public long PeakOf(MemoryCategory c) => _peak[(int)c];
    public long PeakDuring(Phase p) => _peakByPhase[(int)p];

    public MemoryBreakdown Current() => Breakdown(Live, _live);
    public MemoryBreakdown AtPeak() => Breakdown(Peak, _atPeak);
    public MemoryBreakdown PeakPerCategory() => Breakdown(Peak, _peak);

    private static MemoryBreakdown Breakdown(long total, long[] values) =>
        new(total, MemoryCategories.All.ToDictionary(c => c, c => values[(int)c]));

    public double NowMs => _clock.Elapsed.TotalMilliseconds;

    public Allocation OnAllocate(long bytes, MemoryCategory category, string op, Shape shape, DType dtype)
    {
        var a = new Allocation(_nextId++, bytes, category, op, Layer, shape, dtype, Phase);
        _liveAllocations.Add(a.Id, a);
        _live[(int)category] += bytes;
        Live += bytes;
        if (_live[(int)category] > _peak[(int)category]) _peak[(int)category] = _live[(int)category];
        if (Live > _peakByPhase[(int)Phase]) _peakByPhase[(int)Phase] = Live;
        if (Live > Peak)
        {
            Peak = Live;
            Array.Copy(_live, _atPeak, _live.Length);
            if (RecordPeakAllocations) _peakAllocations = _liveAllocations.Values.ToList();
        }
        Record(a, MemoryEventKind.Allocate, category);
        Listener?.OnAllocate(this, a);
        return a;
    }

    public void OnFree(Allocation a)
    {
        if (!_liveAllocations.Remove(a.Id))
            throw new InvalidOperationException($"memory tracker: allocation {a.Id} ({a}) freed twice");
        _live[(int)a.Category] -= a.Bytes;
        Live -= a.Bytes;
        Record(a, MemoryEventKind.Free, a.Category);
        Listener?.OnFree(this, a);
    }

    /// <summary>Moves a live allocation to another category (an activation the tape keeps becomes saved-for-backward).</summary>
    public void Retag(Allocation a, MemoryCategory category)
    {
        if (a.Category == category) return;
        if (!_liveAllocations.ContainsKey(a.Id))
            throw new InvalidOperationException($"memory tracker: retag of freed allocation {a.Id} ({a})");
        _live[(int)a.Category] -= a.Bytes;
        _live[(int)category] += a.Bytes;
        if (_live[(int)category] > _peak[(int)category]) _peak[(int)category] = _live[(int)category];
        var previous = a.Category;
        a.Category = category;
        Record(a, MemoryEventKind.Retag, category);
        Listener?.OnRetag(this, a, previous);
    }

    internal void OnReserved(long reserved)
    {
        Reserved = reserved;
        if (reserved > PeakReserved) PeakReserved = reserved;
    }

    /// <summary>Peaks restart from what is live now (call between warm-up and measurement, or between runs).</summary>
    public void ResetPeaks()
    {
        Peak = Live;
        PeakReserved = Reserved;
        Array.Copy(_live, _peak, _live.Length);
        Array.Copy(_live, _atPeak, _live.Length);
        Array.Clear(_peakByPhase);
        _peakAllocations = RecordPeakAllocations ? _liveAllocations.Values.ToList() : new();
    }

    public void ClearTimeline()
    {
        _timeline.Clear();
        TimelineTruncated = false;
    }

    private void Record(Allocation a, MemoryEventKind kind, MemoryCategory category)
    {
        if (!RecordTimeline) return;
        if (_timeline.Count >= TimelineCapacity) { TimelineTruncated = true; return; }
        _timeline.Add(new MemoryEvent(a.Id, kind, category, a.Op, a.Layer, a.Bytes, NowMs, Phase, Live));
    }

    /// <summary>Sets the phase until the returned scope is disposed.</summary>
    public Scope EnterPhase(Phase phase)
    {
        var previous = Phase;
        Phase = phase;
        return new Scope(this, previous, Layer);
    }

    /// <summary>Sets the layer index that new allocations are attributed to until the scope is disposed.</summary>
    public Scope InLayer(int layer)
    {
        var previous = Layer;
        Layer = layer;
        return new Scope(this, Phase, previous);
    }

    public readonly struct Scope : IDisposable
    {
        private readonly MemoryTracker _tracker;
        private readonly Phase _phase;
        private readonly int _layer;
        internal Scope(MemoryTracker tracker, Phase phase, int layer) { _tracker = tracker; _phase = phase; _layer = layer; }
        public void Dispose() { _tracker.Phase = _phase; _tracker.Layer = _layer; }
    }
}
