using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Algorithms.ScanReduceOperations;
using ILGPU.Runtime;
using Memopt.Tensors;

namespace Memopt.Kernels;

/// <summary>
/// Global L2 norm over a list of float32 tensors, ‖(g_1, …, g_k)‖₂ = √(Σ_i Σ_j g_ij²), and clipping by it
/// (PyTorch's clip_grad_norm_: coefficient maxNorm/(norm + 1e-6), applied when it is below 1).
/// Memory flow: multi-tensor launches (<see cref="MultiTensor"/>: up to 16 tensors each, every tensor with the grid a
/// launch of its own would get) write each group's partial sum of squares into its own slot of a single workspace
/// buffer, tensor after tensor (no atomics, so the result is deterministic); one single-group launch adds all slots in a
/// fixed order; the host reads back that one float. (Bitwise repeatable in the portable form and on CUDA with groups
/// of ≤ 256 threads: ILGPU's PTX group reduction shuffles within each warp, then each warp adds atomically into one of
/// 4 shared banks starting from 0, at most two warps per bank, and 0 + a + b = 0 + b + a. The cooperative form forced
/// onto the CPU accelerator is not: ILGPU's CPU group reduction has all threads add atomically into one value.) 53 gradient tensors take 4 partial launches and the finish.
/// Clipping then scales every tensor in place with the same multi-tensor launches (one more pass, 4 launches).
/// That is the cooperative form (group reductions, CUDA). The portable form (<see cref="KernelPath"/>, the CPU
/// accelerator, where a group reduction is an OS-level rendezvous costing more than a launch) gives every thread its
/// own slot instead of every group, and the finishing launch adds the slots on one thread: no reduction anywhere.
/// (Forced onto CUDA it stays correct but not fast: one thread would add a slot per GPU thread.)
/// The slots are laid out exactly as one launch per tensor would lay them out, so the sum, and the workspace's size
/// (WorkspaceShape.GradNormSlots, summed per tensor), are those of per-tensor launches.
/// </summary>
public static class GradNorm
{
    private const string Op = "grad_norm";
    /// <summary>PyTorch's guard against dividing by a zero norm.</summary>
    public const float Epsilon = 1e-6f;

    /// <summary>√(Σ over every element of every tensor of x²); 0 for an empty list.</summary>
    public static float Global(IReadOnlyList<Tensor> tensors) => (float)Math.Sqrt(SumOfSquares(tensors));

    /// <summary>
    /// Scales every tensor by <see cref="Coefficient"/> when that is below 1 and returns the norm before clipping.
    /// A non-finite norm (inf/NaN gradients) leaves the tensors untouched and is returned as is, so the caller can
    /// skip the step (PyTorch would multiply by 0 or NaN instead).
    /// </summary>
    public static float Clip(IReadOnlyList<Tensor> tensors, float maxNorm)
    {
        if (!(maxNorm > 0f)) throw new ArgumentOutOfRangeException(nameof(maxNorm), maxNorm, $"{Op}: max norm must be > 0");
        float norm = Global(tensors);
        if (!float.IsFinite(norm)) return norm;
        float coefficient = Coefficient(norm, maxNorm);
        if (coefficient < 1f) Scale(tensors, coefficient);
        return norm;
    }

    /// <summary>min(1, maxNorm / (norm + 1e-6)), in float32 as PyTorch computes it.</summary>
    public static float Coefficient(float norm, float maxNorm) => Math.Min(1f, maxNorm / (norm + Epsilon));

    /// <summary>x ← s·x for every tensor (float32), in multi-tensor launches: each element one float32 multiply.</summary>
    public static void Scale(IReadOnlyList<Tensor> tensors, float s)
    {
        if (tensors.Count == 0) return;
        CheckTensors(tensors);
        var device = tensors[0].Device;
        var k = device.Kernel("grad_norm.scale", acc => acc.LoadStreamKernel<TensorSlots<ArrayView<float>>, float>(ScaleKernel));
        foreach (var batch in Plan(tensors))
            k(batch.Config, batch.Slots(i => tensors[i].F32), s);
    }

    /// <summary>Σ x² over all tensors, summed on the device and read back once (as float32, widened).</summary>
    public static double SumOfSquares(IReadOnlyList<Tensor> tensors)
    {
        if (tensors.Count == 0) return 0;
        CheckTensors(tensors);
        var device = tensors[0].Device;
        bool cooperative = Launch.Cooperative(device);
        var plan = Plan(tensors);
        long slots = plan.Sum(b => SlotsOf(b, cooperative));
        Check.That(slots <= int.MaxValue, Op, $"{tensors.Count} tensors need {slots} partial sums");

        using var partials = Tensor.Empty(device, new Shape((int)slots), DType.F32, MemoryCategory.Workspace, Op + ":partials");
        using var total = Tensor.Empty(device, new Shape(1), DType.F32, MemoryCategory.Workspace, Op + ":total");
        var partial = cooperative
            ? device.Kernel("grad_norm.partial", acc => acc.LoadStreamKernel<TensorSlots<ArrayView<float>>, ArrayView<float>>(PartialKernel))
            : device.Kernel("grad_norm.partial_per_thread", acc => acc.LoadStreamKernel<TensorSlots<ArrayView<float>>, ArrayView<float>>(ThreadPartialKernel));
        var all = partials.F32;
        long offset = 0;
        foreach (var batch in plan)
        {
            long count = SlotsOf(batch, cooperative);
            partial(batch.Config, batch.Slots(i => tensors[i].F32), all.SubView(offset, count));
            offset += count;
        }
        if (cooperative)
        {
            var finish = device.Kernel("grad_norm.finish", acc => acc.LoadStreamKernel<ArrayView<float>, int, ArrayView<float>>(FinishKernel));
            finish(new KernelConfig(1, Launch.GroupSize(device)), all, (int)slots, total.F32);
        }
        else
        {
            var finish = device.Kernel("grad_norm.finish_single_thread", acc => acc.LoadStreamKernel<ArrayView<float>, int, ArrayView<float>>(FinishSingleThreadKernel));
            finish(Launch.SingleThread(device), all, (int)slots, total.F32);
        }
        return total.ToFloatArray()[0];
    }

    private static void CheckTensors(IReadOnlyList<Tensor> tensors)
    {
        for (int i = 0; i < tensors.Count; i++)
        {
            Check.DType(Op, tensors[i], DType.F32, $"tensor {i}");
            Check.That(ReferenceEquals(tensors[i].Device, tensors[0].Device), Op, $"tensor {i} {tensors[i].Shape} lives on another device than tensor 0");
        }
    }

    private static IReadOnlyList<MultiTensor.Batch> Plan(IReadOnlyList<Tensor> tensors) =>
        MultiTensor.Plan(tensors[0].Device, tensors.Select(t => t.Numel).ToArray());

    /// <summary>Partial sums a launch writes: one per group (cooperative) or one per thread (portable).</summary>
    private static long SlotsOf(MultiTensor.Batch batch, bool cooperative) =>
        cooperative ? batch.TotalGroups : (long)batch.TotalGroups * batch.GroupSize;

    private static void ScaleKernel(TensorSlots<ArrayView<float>> slots, float s)
    {
        var share = slots.ShareOf(Grid.IdxX, Group.IdxX, Group.DimX);
        var x = slots.Get(share.Slot);
        long n = x.Length;
        for (long i = share.First; i < n; i += share.Stride) x[i] = s * x[i];
    }

    /// <summary>The portable partial: partials[thread] = Σ x² over this thread's grid-stride share of its tensor.</summary>
    private static void ThreadPartialKernel(TensorSlots<ArrayView<float>> slots, ArrayView<float> partials)
    {
        int group = Grid.IdxX;
        int tid = Group.IdxX;
        int threads = Group.DimX;
        var share = slots.ShareOf(group, tid, threads);
        var x = slots.Get(share.Slot);
        partials[(long)group * threads + tid] = Reduce.StridedSum(x, share.First, x.Length, share.Stride, squares: true);
    }

    /// <summary>The portable finish: global thread 0 adds every slot in order; every other thread returns.</summary>
    private static void FinishSingleThreadKernel(ArrayView<float> partials, int count, ArrayView<float> total)
    {
        if (Grid.GlobalIndex.X != 0) return;
        total[0] = Reduce.StridedSum(partials, 0, count, 1);
    }

    /// <summary>partials[group] = Σ x² over this group's grid-stride share of its tensor (<see cref="Reduce.StridedSum"/>); every group writes its slot.</summary>
    private static void PartialKernel(TensorSlots<ArrayView<float>> slots, ArrayView<float> partials)
    {
        int group = Grid.IdxX;
        int tid = Group.IdxX;
        var share = slots.ShareOf(group, tid, Group.DimX);
        var x = slots.Get(share.Slot);
        float s = Reduce.StridedSum(x, share.First, x.Length, share.Stride, squares: true);
        float groupSum = GroupExtensions.Reduce<float, AddFloat>(s);
        if (tid == 0) partials[group] = groupSum;
    }

    /// <summary>One group: total[0] = Σ partials, in a fixed order (each thread's strided share through <see cref="Reduce.StridedSum"/>).</summary>
    private static void FinishKernel(ArrayView<float> partials, int count, ArrayView<float> total)
    {
        int tid = Group.IdxX;
        float s = Reduce.StridedSum(partials, tid, count, Group.DimX);
        float sum = GroupExtensions.Reduce<float, AddFloat>(s);
        if (tid == 0) total[0] = sum;
    }

    public static class Reference
    {
        public static double Global(IEnumerable<double[]> tensors) => Math.Sqrt(tensors.Sum(t => t.Sum(v => v * v)));
    }
}
