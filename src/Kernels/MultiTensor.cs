using ILGPU;
using ILGPU.Runtime;
using Memopt.Tensors;

namespace Memopt.Kernels;

/// <summary>
/// Multi-tensor launches: one launch works on up to <see cref="Capacity"/> tensors of a list (the optimizer's
/// parameters, gradients and moments), so a pass over a model's 53 parameter tensors takes 4 launches instead of 53.
/// ILGPU kernels cannot follow a pointer table in device memory, so the tensors travel in the launch's parameter
/// block: a fixed-capacity struct of slots (<see cref="TensorSlots{T}"/>), each slot one tensor's ArrayViews (16 bytes
/// apiece on CUDA: pointer and length), plus where each tensor's groups end. The Adam slot (five views and two flags,
/// 88 bytes) makes a 16-slot block about 1.5 KB, well inside CUDA's 4 KB of kernel parameters.
/// Work decomposition: every tensor keeps the grid it would get as a launch of its own (<see cref="Launch.Elementwise"/>
/// over its elements), and a batch's grid is those grids one after another. A group finds its tensor by walking the
/// ≤ 16 group ends once (<see cref="TensorSlots{T}.ShareOf"/>; nothing is searched per element), then runs the
/// single-tensor kernel's grid-stride loop over that tensor: the same elements on the same threads in the same order as
/// one launch per tensor. Results therefore equal the per-tensor launches' bit for bit, and so do the gradient norm's
/// partial sums, slot for slot (its workspace keeps its size, which the memory model predicts byte-exactly).
/// </summary>
public static class MultiTensor
{
    /// <summary>Tensors per launch (the number of slot fields of <see cref="TensorSlots{T}"/>).</summary>
    public const int Capacity = 16;

    /// <summary>One launch: tensors First … First + Count − 1 of the list, tensor k with a grid of Groups[k] groups.</summary>
    public sealed record Batch(int First, int[] Groups, int GroupSize)
    {
        public int Count => Groups.Length;
        public int TotalGroups { get; } = checked(Groups.Sum());
        public KernelConfig Config => new(TotalGroups, GroupSize);

        /// <summary>
        /// The launch's slots: slot k is <paramref name="slotOf"/>(First + k) with its group range. Unused slots repeat
        /// slot 0 (so every view passed is a real one; no group ever reads them).
        /// </summary>
        public TensorSlots<T> Slots<T>(Func<int, T> slotOf) where T : struct
        {
            var items = new T[Capacity];
            var ends = new int[Capacity];
            int end = 0;
            for (int k = 0; k < Capacity; k++)
            {
                if (k < Count)
                {
                    items[k] = slotOf(First + k);
                    end += Groups[k];
                }
                else items[k] = items[0];
                ends[k] = end;
            }
            return new TensorSlots<T>(items, ends, Count);
        }
    }

    /// <summary>The launches of a pass over tensors of <paramref name="numels"/> elements, in list order.</summary>
    public static IReadOnlyList<Batch> Plan(ComputeDevice device, IReadOnlyList<long> numels) =>
        Plan(numels, n => Launch.Elementwise(device, n));

    /// <summary>
    /// The same plan from any per-tensor launch shape: <paramref name="launchOf"/>(n) is the launch a tensor of n
    /// elements would get alone (the memory model passes its mirror of <see cref="Launch.Elementwise"/>).
    /// </summary>
    public static IReadOnlyList<Batch> Plan(IReadOnlyList<long> numels, Func<long, KernelConfig> launchOf)
    {
        var batches = new List<Batch>((numels.Count + Capacity - 1) / Capacity);
        for (int first = 0; first < numels.Count; first += Capacity)
        {
            var groups = new int[Math.Min(Capacity, numels.Count - first)];
            int groupSize = 0;
            for (int k = 0; k < groups.Length; k++)
            {
                var config = launchOf(numels[first + k]);
                if (k > 0 && config.GroupDim.X != groupSize)
                    throw new InvalidOperationException($"multi-tensor launch: group sizes {groupSize} and {config.GroupDim.X} in one batch");
                groups[k] = config.GridDim.X;
                groupSize = config.GroupDim.X;
            }
            batches.Add(new Batch(first, groups, groupSize));
        }
        return batches;
    }
}

/// <summary>
/// Where one thread works in a multi-tensor launch: its tensor's slot, its first element and its grid stride (the
/// single-tensor kernel's Grid.GlobalIndex.X and Grid.DimX·Group.DimX, had the tensor been launched alone).
/// </summary>
public readonly struct ThreadShare
{
    public readonly int Slot;
    public readonly long First;
    public readonly long Stride;

    public ThreadShare(int slot, long first, long stride)
    {
        Slot = slot;
        First = first;
        Stride = stride;
    }
}

/// <summary>
/// Up to <see cref="MultiTensor.Capacity"/> tensors as one kernel argument: a slot value per tensor (its views and
/// flags) and the exclusive end of each tensor's groups in the launch grid. Fixed fields, not an array, because a
/// kernel argument cannot hold a managed array; a slot is picked by a switch (once per thread, never per element).
/// Built on the host by <see cref="MultiTensor.Batch.Slots{T}"/>.
/// </summary>
public readonly struct TensorSlots<T> where T : struct
{
    // Public because ILGPU's generated launchers read every field of a kernel argument.
    public readonly T S0, S1, S2, S3, S4, S5, S6, S7, S8, S9, S10, S11, S12, S13, S14, S15;
    public readonly int E0, E1, E2, E3, E4, E5, E6, E7, E8, E9, E10, E11, E12, E13, E14, E15;
    /// <summary>Slots in use (1 … Capacity).</summary>
    public readonly int Count;

    /// <param name="items">Capacity slot values</param>
    /// <param name="ends">Capacity exclusive group ends (non-decreasing)</param>
    public TensorSlots(T[] items, int[] ends, int count)
    {
        if (items.Length != MultiTensor.Capacity || ends.Length != MultiTensor.Capacity || count < 1 || count > MultiTensor.Capacity)
            throw new ArgumentException($"tensor slots: {items.Length} items, {ends.Length} ends and count {count} for capacity {MultiTensor.Capacity}");
        (S0, S1, S2, S3, S4, S5, S6, S7) = (items[0], items[1], items[2], items[3], items[4], items[5], items[6], items[7]);
        (S8, S9, S10, S11, S12, S13, S14, S15) = (items[8], items[9], items[10], items[11], items[12], items[13], items[14], items[15]);
        (E0, E1, E2, E3, E4, E5, E6, E7) = (ends[0], ends[1], ends[2], ends[3], ends[4], ends[5], ends[6], ends[7]);
        (E8, E9, E10, E11, E12, E13, E14, E15) = (ends[8], ends[9], ends[10], ends[11], ends[12], ends[13], ends[14], ends[15]);
        Count = count;
    }

    /// <summary>Slot k's value.</summary>
    public T Get(int k) => k switch
    {
        0 => S0, 1 => S1, 2 => S2, 3 => S3, 4 => S4, 5 => S5, 6 => S6, 7 => S7,
        8 => S8, 9 => S9, 10 => S10, 11 => S11, 12 => S12, 13 => S13, 14 => S14, _ => S15,
    };

    /// <summary>The exclusive end of slot k's groups.</summary>
    public int End(int k) => k switch
    {
        0 => E0, 1 => E1, 2 => E2, 3 => E3, 4 => E4, 5 => E5, 6 => E6, 7 => E7,
        8 => E8, 9 => E9, 10 => E10, 11 => E11, 12 => E12, 13 => E13, 14 => E14, _ => E15,
    };

    /// <summary>
    /// The share of thread <paramref name="thread"/> of group <paramref name="group"/> (groups of
    /// <paramref name="groupSize"/>): the slot whose groups hold the group (a walk over ≤ Capacity ends), the thread's
    /// first element in that tensor and the tensor's grid stride.
    /// </summary>
    public ThreadShare ShareOf(int group, int thread, int groupSize)
    {
        int k = 0;
        while (k < Count - 1 && group >= End(k)) k++;
        int firstGroup = k == 0 ? 0 : End(k - 1);
        return new ThreadShare(k, (long)(group - firstGroup) * groupSize + thread, (long)(End(k) - firstGroup) * groupSize);
    }
}
