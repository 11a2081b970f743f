using Memopt.Tensors;

namespace Memopt.Model.Memory;

/// <summary>One buffer the analytic model predicts: what the tracker records for the matching real allocation.</summary>
public sealed class PredictedTensor
{
    internal PredictedTensor(long id, string op, string name, MemoryCategory category, int layer, Phase phase, Shape shape, DType dtype)
    {
        Id = id; Op = op; Name = name; Category = category; Layer = layer; Phase = phase; Shape = shape; DType = dtype;
        Bytes = shape.Numel * dtype.SizeOf();
    }

    public long Id { get; }
    /// <summary>The op string the tracker records for this allocation (e.g. "attn.qkv", "grad:mlp.fc").</summary>
    public string Op { get; }
    /// <summary>What the tensor is, in words ("qkv", "probs", "d(ln1 out)").</summary>
    public string Name { get; }
    public MemoryCategory Category { get; internal set; }
    public int Layer { get; }
    public Phase Phase { get; }
    public Shape Shape { get; }
    public DType DType { get; }
    public long Bytes { get; }
    internal int Refs = 1;

    public override string ToString() => $"{Name} ({Op}) {Category.Label()} layer {Layer} {Shape} {DType.Name()} {ByteSize.Format(Bytes)}";
}

/// <summary>
/// The model's stand-in for a device: the same bookkeeping as <see cref="MemoryTracker"/> (live and peak bytes overall,
/// per category, per phase, the breakdown and live list at the peak, the timeline) and as the caching pool
/// (block sizes rounded like <c>DeviceMemoryPool.RoundUp</c>, a free list per rounded size), without any memory.
/// </summary>
public sealed class VirtualMemory
{
    private readonly long[] _live = new long[MemoryCategories.All.Length];
    private readonly long[] _peak = new long[MemoryCategories.All.Length];
    private readonly long[] _atPeak = new long[MemoryCategories.All.Length];
    private readonly long[] _peakByPhase = new long[MemoryCategories.Phases.Length];
    private readonly Dictionary<long, PredictedTensor> _liveTensors = new();
    private readonly Dictionary<long, (int Live, int Created)> _blocks = new();
    private readonly List<MemoryEvent> _timeline = new();
    private readonly List<PredictedTensor> _allocated = new();
    private List<PredictedTensor> _peakTensors = new();
    private long _nextId = 1;
    private long _events;

    public VirtualMemory(bool recordTimeline = false, bool recordPeakTensors = true)
    {
        RecordTimeline = recordTimeline;
        RecordPeakTensors = recordPeakTensors;
    }

    public bool RecordTimeline { get; }
    public bool RecordPeakTensors { get; }
    public Phase Phase { get; set; } = Phase.Setup;
    public int Layer { get; set; } = -1;

    public long Live { get; private set; }
    public long Peak { get; private set; }
    /// <summary>Live bytes with every block rounded as the pool rounds it: what a budget (--memory-limit) must hold.</summary>
    public long LiveRounded { get; private set; }
    public long PeakRounded { get; private set; }
    /// <summary>What the caching pool would hold from the driver with no budget pressure: Σ size × most blocks of that size ever live at once.</summary>
    public long Reserved { get; private set; }
    /// <summary>The allocation that set the peak, and the event number it had.</summary>
    public PredictedTensor? PeakSetter { get; private set; }
    public long PeakEvent { get; private set; }

    public IReadOnlyList<MemoryEvent> Timeline => _timeline;
    public IReadOnlyList<PredictedTensor> PeakTensors => _peakTensors;
    public IReadOnlyCollection<PredictedTensor> LiveTensors => _liveTensors.Values;
    /// <summary>Every allocation so far, in order.</summary>
    public IReadOnlyList<PredictedTensor> Allocated => _allocated;
    public long LiveOf(MemoryCategory c) => _live[(int)c];
    public long PeakOf(MemoryCategory c) => _peak[(int)c];
    public long AtPeakOf(MemoryCategory c) => _atPeak[(int)c];
    public long PeakDuring(Phase p) => _peakByPhase[(int)p];

    public PredictedTensor Allocate(Shape shape, DType dtype, MemoryCategory category, string op, string name)
    {
        var t = new PredictedTensor(_nextId++, op, name, category, Layer, Phase, shape, dtype);
        _liveTensors.Add(t.Id, t);
        _allocated.Add(t);
        _live[(int)category] += t.Bytes;
        Live += t.Bytes;
        long size = DeviceMemoryPool.RoundUp(t.Bytes);
        LiveRounded += size;
        if (LiveRounded > PeakRounded) PeakRounded = LiveRounded;
        var (live, created) = _blocks.GetValueOrDefault(size);
        live++;
        if (live > created)
        {
            created = live;
            Reserved += size;
        }
        _blocks[size] = (live, created);
        if (_live[(int)category] > _peak[(int)category]) _peak[(int)category] = _live[(int)category];
        if (Live > _peakByPhase[(int)Phase]) _peakByPhase[(int)Phase] = Live;
        if (Live > Peak)
        {
            Peak = Live;
            Array.Copy(_live, _atPeak, _live.Length);
            PeakSetter = t;
            PeakEvent = _events;
            if (RecordPeakTensors) _peakTensors = _liveTensors.Values.ToList();
        }
        Record(t, MemoryEventKind.Allocate, category);
        return t;
    }

    internal void Retain(PredictedTensor t)
    {
        if (t.Refs <= 0) throw new InvalidOperationException($"memory model: {t} was already released");
        t.Refs++;
    }

    internal void Release(PredictedTensor t)
    {
        if (--t.Refs > 0) return;
        if (!_liveTensors.Remove(t.Id)) throw new InvalidOperationException($"memory model: {t} freed twice");
        _live[(int)t.Category] -= t.Bytes;
        Live -= t.Bytes;
        long size = DeviceMemoryPool.RoundUp(t.Bytes);
        LiveRounded -= size;
        var (live, created) = _blocks[size];
        _blocks[size] = (live - 1, created);
        Record(t, MemoryEventKind.Free, t.Category);
    }

    internal void Retag(PredictedTensor t, MemoryCategory category)
    {
        if (t.Category == category) return;
        _live[(int)t.Category] -= t.Bytes;
        _live[(int)category] += t.Bytes;
        if (_live[(int)category] > _peak[(int)category]) _peak[(int)category] = _live[(int)category];
        t.Category = category;
        Record(t, MemoryEventKind.Retag, category);
    }

    private void Record(PredictedTensor t, MemoryEventKind kind, MemoryCategory category)
    {
        if (RecordTimeline)
            _timeline.Add(new MemoryEvent(t.Id, kind, category, t.Op, t.Layer, t.Bytes, _events, Phase, Live));
        _events++;
    }

    public Scope EnterPhase(Phase phase)
    {
        var previous = Phase;
        Phase = phase;
        return new Scope(this, previous, Layer);
    }

    public Scope InLayer(int layer)
    {
        var previous = Layer;
        Layer = layer;
        return new Scope(this, Phase, previous);
    }

    public readonly struct Scope : IDisposable
    {
        private readonly VirtualMemory _memory;
        private readonly Phase _phase;
        private readonly int _layer;
        internal Scope(VirtualMemory memory, Phase phase, int layer) { _memory = memory; _phase = phase; _layer = layer; }
        public void Dispose() { _memory.Phase = _phase; _memory.Layer = _layer; }
    }
}
