using ILGPU;
using ILGPU.Runtime;
using Memopt.Tensors;

namespace Memopt.Kernels;

/// <summary>
/// A kernel that only keeps the device busy: one thread runs a chain of <c>iterations</c> dependent multiply-adds
/// x ← x·a + b (a chain, so no iteration can start before the previous one ends: the time grows linearly with the count)
/// and stores x in <c>sink[0]</c> so the chain cannot be optimized away. No other memory is touched.
/// Why: a profiler that times one kernel between two stream markers on an idle stream also times the host's launch call
/// (the first marker is reached at once, the kernel only once the host has submitted it). Launched right before the
/// first marker, a blocker longer than that launch call keeps the stream busy until the kernel is queued, so the
/// markers bracket the kernel alone (the blocking-kernel technique of nvbench).
/// </summary>
public static class StreamBlocker
{
    public const float A = 0.999999f, B = 1e-6f;

    /// <summary>Queues the chain on the device's default stream; <paramref name="sink"/> is one float32.</summary>
    public static void Launch(Tensor sink, int iterations)
    {
        Check.DType("stream_blocker", sink, DType.F32, "sink");
        Check.That(iterations >= 0, "stream_blocker", $"iterations {iterations} must be ≥ 0");
        var device = sink.Device;
        var k = device.Kernel("stream_blocker.spin", acc => acc.LoadStreamKernel<ArrayView<float>, int>(SpinKernel));
        k(Kernels.Launch.SingleThread(device), sink.F32, iterations);
    }

    private static void SpinKernel(ArrayView<float> sink, int iterations)
    {
        if (Grid.GlobalIndex.X != 0) return;
        float x = 1f;
        for (int i = 0; i < iterations; i++) x = x * A + B;
        sink[0] = x;
    }

    public static class Reference
    {
        /// <summary>The value the chain stores (float64; the device's float32 rounding, or a fused multiply-add, differs in the last bits).</summary>
        public static double Final(int iterations)
        {
            double x = 1;
            for (int i = 0; i < iterations; i++) x = x * A + B;
            return x;
        }
    }
}
