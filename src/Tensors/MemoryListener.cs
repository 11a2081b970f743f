namespace Memopt.Tensors;

/// <summary>
/// Observes a <see cref="MemoryTracker"/> (the Chrome trace writer): every allocation, free and retag, phase changes,
/// and the op boundaries the tape reports. Called synchronously on the allocating thread after the tracker has updated
/// its counts; with no listener set the tracker and the tape pay one null check per event.
/// </summary>
public interface IMemoryListener
{
    void OnAllocate(MemoryTracker tracker, Allocation allocation);
    void OnFree(MemoryTracker tracker, Allocation allocation);
    void OnRetag(MemoryTracker tracker, Allocation allocation, MemoryCategory previous);
    void OnPhaseChanged(MemoryTracker tracker, Phase previous, Phase next);
    /// <summary>An op's forward has launched its work (Tape.Record, called whether or not the op is recorded).</summary>
    void OnOpForward(MemoryTracker tracker, string op);
    /// <summary>The tape is about to run a node's backward (the tracker's layer and phase are the node's).</summary>
    void OnBackwardBegin(MemoryTracker tracker, string op);
    void OnBackwardEnd(MemoryTracker tracker, string op);
}
