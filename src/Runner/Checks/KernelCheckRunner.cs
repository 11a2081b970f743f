using System.Diagnostics;
using Memopt.Tensors;

namespace Memopt.Runner.Checks;

/// <summary>Runs kernel cases: device launch timed with synchronization after warm-up (median of repeats), reference timed once.</summary>
public static class KernelCheckRunner
{
    public static CaseResult Run(ComputeDevice device, KernelCase kernelCase, int seed, int repeats)
    {
        var prepared = kernelCase.Prepare(device, new Random(seed));
        try
        {
            prepared.Run();                 // warm-up: compiles and loads the kernel
            device.Synchronize();
            var times = new double[repeats];
            for (int i = 0; i < repeats; i++)
            {
                var sw = Stopwatch.StartNew();
                prepared.Run();
                device.Synchronize();
                times[i] = sw.Elapsed.TotalMilliseconds;
            }
            Array.Sort(times);
            // The timed runs may accumulate (backward kernels add into their outputs), so run once more on fresh
            // outputs through Error(), which re-prepares what it compares.
            var swRef = Stopwatch.StartNew();
            double error = prepared.Error();
            double refMs = swRef.Elapsed.TotalMilliseconds;
            return new CaseResult(kernelCase, prepared.Size, error, times[repeats / 2], refMs, prepared.Bytes, prepared.Flops);
        }
        finally
        {
            prepared.Resources.Dispose();
        }
    }

    public static double RelativeError(float[] got, double[] want)
    {
        double maxDiff = 0, scale = 0;
        for (int i = 0; i < got.Length; i++)
        {
            if (float.IsNaN(got[i]) || float.IsInfinity(got[i])) return double.PositiveInfinity;
            maxDiff = Math.Max(maxDiff, Math.Abs(got[i] - want[i]));
            scale = Math.Max(scale, Math.Abs(want[i]));
        }
        return maxDiff / (scale + 1e-12);
    }
}

/// <summary>Disposes a set of tensors together.</summary>
public sealed class TensorSet : IDisposable
{
    private readonly List<IDisposable> _items = new();
    public T Add<T>(T item) where T : IDisposable { _items.Add(item); return item; }
    public void Dispose() { foreach (var i in _items) i.Dispose(); _items.Clear(); }
}
