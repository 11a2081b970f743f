using System.Globalization;
using System.Text;
using Memopt.Runner.Memory;

namespace Memopt.Runner.Bench;

/// <summary>A <see cref="StepProfile"/> as text: the kernel sum against the step, the phases, and the top kernels.</summary>
public static class ProfileReport
{
    public static string Format(StepProfile p, int top)
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        string clock = p.KernelDeviceMs is null ? "host clock around each synchronized launch" : "device clock (stream markers)";
        double outside = p.StepMs - p.KernelMs;
        string notKernels = outside >= 0
            ? string.Create(inv, $"{outside:F2} ms ({100 * outside / p.StepMs:F1}%) is not kernel time (launch gaps, host work, copies, memsets, read-backs)")
            : "the kernels alone took longer than the unprofiled step (run-to-run noise, or kernels slower when run one at a time)";
        sb.AppendLine(string.Create(inv,
            $"  profile of one step ({p.Launches} launches, each synchronized; {clock}): kernels {p.KernelMs:F2} ms = {100 * p.KernelMs / p.StepMs:F1}% " +
            $"of the unprofiled {p.StepMs:F2} ms step; ") + notKernels);
        if (p.KernelDeviceMs is double device && p.Launches > 0)
            sb.AppendLine(string.Create(inv,
                $"  host clock around the synchronized launches: {p.KernelWallMs:F2} ms, {(p.KernelWallMs - device) * 1000 / p.Launches:F1} µs per launch over the device time " +
                $"(launch call + synchronization round trip); the profiled step took {p.ProfiledStepMs:F2} ms"));
        sb.AppendLine("  by phase: " + string.Join(", ", p.PhaseMs.OrderByDescending(kv => kv.Value).Select(kv =>
            string.Create(inv, $"{kv.Key} {kv.Value:F2} ms ({100 * kv.Value / p.StepMs:F1}%)"))));
        var table = new TextTable("kernel", "phase", "calls", "ms", "% of step", "µs/call", "host ms");
        foreach (var k in p.Kernels.Take(top))
        {
            double ms = k.DeviceMs ?? k.WallMs;
            table.Row(k.Kernel, k.Phase, k.Calls, ms.ToString("F3", inv), k.PercentOfStep.ToString("F1", inv),
                (ms * 1000 / k.Calls).ToString("F1", inv), k.WallMs.ToString("F3", inv));
        }
        sb.Append(table);
        if (p.Kernels.Count > top)
        {
            var rest = p.Kernels.Skip(top).ToList();
            sb.Append(string.Create(inv, $"\n  … {rest.Count} more (kernel, phase) pairs: {rest.Sum(k => k.DeviceMs ?? k.WallMs):F3} ms in {rest.Sum(k => k.Calls)} launches"));
        }
        return sb.ToString();
    }
}
