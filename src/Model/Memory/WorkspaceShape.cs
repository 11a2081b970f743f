using Memopt.Kernels;
using Memopt.Tensors;

namespace Memopt.Model.Memory;

/// <summary>
/// The launch facts that decide how much scratch (category workspace) the kernels rent: whether the cooperative (CUDA)
/// or the portable (CPU accelerator) kernels run, the number of multiprocessors and the largest group, and for the
/// bf16 GEMMs whether the tensor-core path runs (CUDA, compute capability ≥ 8: <see cref="TensorCoreGemm.WhyNotOn"/>)
/// and with it the deep tiles (more than 48 KB of shared memory per group: <see cref="TensorCoreGemm.DeepAvailable"/>).
/// The formulas repeat the kernels' own launch arithmetic (BiasAdd.Backward, LayerNorm.Backward, GradNorm.SumOfSquares,
/// CrossEntropy.Forward) or call it (<see cref="TensorCoreGemm.PlanOf"/>, <see cref="MatMul.SplitKWorkspace"/> for the SIMT
/// GEMM), so the workspace predicted is byte-exact for a given device.
/// </summary>
/// <param name="Fp32Matmul">How GEMMs of two fp32 operands run (<see cref="ComputeDevice.Fp32Matmul"/>): on the tensor cores under TF32 and
/// 3xTF32, whose split-K plan differs from the SIMT kernel's.</param>
public sealed record WorkspaceShape(bool Cooperative, bool IsCuda, int Multiprocessors, int MaxGroupSize, bool TensorCores = false, bool DeepTiles = false,
    Fp32Matmul Fp32Matmul = Fp32Matmul.Ieee)
{
    /// <summary>NVIDIA H100 80GB HBM3 (`memopt info`: 132 multiprocessors, 1024 threads per group, compute capability 9.0; deep tiles available).</summary>
    public static readonly WorkspaceShape H100 = new(true, true, 132, 1024, TensorCores: true, DeepTiles: true);

    /// <summary>ILGPU's CPU accelerator as ComputeDevice opens it: one multiprocessor of 4 warps of 4 threads.</summary>
    public static readonly WorkspaceShape CpuAccelerator = new(false, false, 1, 16);

    /// <summary>The device's shape. On a GPU with tensor cores this runs the deep-tile probe (once per device) if no GEMM has yet.</summary>
    public static WorkspaceShape Of(ComputeDevice device)
    {
        bool tensorCores = TensorCoreGemm.WhyNotOn(device) is null;
        return new(Launch.Cooperative(device), device.IsCuda, device.Multiprocessors, device.MaxGroupSize,
            tensorCores, tensorCores && TensorCoreGemm.DeepAvailable(device), device.Fp32Matmul);
    }

    private int Group(int preferred = 256) => Math.Min(preferred, MaxGroupSize);

    /// <summary>Launch.Elementwise's grid size.</summary>
    public long ElementwiseGroups(long work, int preferred = 256)
    {
        int group = Group(preferred);
        long maxGroups = IsCuda ? Multiprocessors * 32L : Math.Max(1, Multiprocessors);
        return Math.Clamp((work + group - 1) / group, 1, maxGroups);
    }

    /// <summary>BiasAdd.Backward's partial column sums [row blocks, cols] for dy [rows, cols]; null when one pass suffices.</summary>
    public Shape? BiasBackwardPartials(long rows, int cols)
    {
        if (!Cooperative) return null;
        int group = Group();
        int width = 1;
        while (width < cols && width < group) width *= 2;
        int chunks = (cols + width - 1) / width;
        long maxBlocks = Math.Max(1, (rows + 63) / 64);
        long wantGroups = IsCuda ? Multiprocessors * 8L : Math.Max(1, Multiprocessors);
        long blocks = Math.Clamp(wantGroups / chunks, 1, maxBlocks);
        if (blocks * chunks > int.MaxValue) blocks = int.MaxValue / chunks;
        long rowsPerBlock = (rows + blocks - 1) / blocks;
        blocks = (rows + rowsPerBlock - 1) / rowsPerBlock;
        return blocks == 1 ? null : new Shape((int)blocks, cols);
    }

    /// <summary>LayerNorm.Backward's per-chunk weight and bias partials [2, chunks, cols] (cooperative path only).</summary>
    public Shape? LayerNormBackwardPartials(long rows, int cols)
    {
        if (!Cooperative) return null;
        long rowsPerChunk = Math.Max(32, (rows + 255) / 256);
        long chunks = (rows + rowsPerChunk - 1) / rowsPerChunk;
        return new Shape(2, (int)chunks, cols);
    }

    /// <summary>
    /// Partial sums GradNorm.SumOfSquares keeps for one tensor of n elements. Its multi-tensor launches (16 tensors
    /// each) give every tensor the grid a launch of its own would get, so the workspace is this, summed over tensors.
    /// </summary>
    public long GradNormSlots(long n)
    {
        long groups = ElementwiseGroups(n);
        return Cooperative ? groups : groups * Group();
    }
}
