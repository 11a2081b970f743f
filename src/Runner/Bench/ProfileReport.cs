using System.Globalization;
using System.Text;
using Memopt.Runner.Memory;

namespace Memopt.Runner.Bench;

/// <summary>A <see cref="StepProfile"/> as text: the kernel sum against the step, the launch cost, the phases, the top kernels.</summary>
public static class ProfileReport
{
    public static string Format(StepProfile p, int top)
    {
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        string clock = p.KernelDeviceMs is null ? "host clock" : "device clock (stream markers)";
        double outside = p.StepMs - p.KernelMs;
        string notKernels = outside >= 0
            ? string.Create(inv, $"{outside:F2} ms ({100 * outside / p.StepMs:F1}%) is not kernel time (launch gaps, host work, copies, memsets, read-backs)")
            : "the kernels alone took longer than the unprofiled step (run-to-run noise, or kernels slower when run one at a time)";
        sb.AppendLine(string.Create(inv,
            $"  profile of one step ({p.Launches} launches, each run alone; {clock}): kernels {p.KernelMs:F2} ms = {100 * p.KernelMs / p.StepMs:F1}% " +
            $"of the unprofiled {p.StepMs:F2} ms step; ") + notKernels);
        if (p.Launches > 0)
            sb.AppendLine(string.Create(inv,
                $"  launch calls on the host: {p.LaunchHostMs:F2} ms, {p.LaunchHostMs * 1000 / p.Launches:F1} µs per launch (the step cannot be shorter than this " +
                $"plus its other host work); profiled step {p.ProfiledStepMs:F2} ms") +
                (p.Uncovered > 0 ? $"; {p.Uncovered} launch call(s) outlasted the stream blocker (their device time may include part of the call)" : ""));
        sb.AppendLine("  by phase: " + string.Join(", ", p.PhaseMs.OrderByDescending(kv => kv.Value).Select(kv =>
            string.Create(inv, $"{kv.Key} {kv.Value:F2} ms ({100 * kv.Value / p.StepMs:F1}%)"))));
        var table = new TextTable("kernel", "phase", "calls", "ms", "% of step", "µs/call", "launch µs/call");
        foreach (var k in p.Kernels.Take(top))
            table.Row(k.Kernel, k.Phase, k.Calls, k.Ms.ToString("F3", inv), k.PercentOfStep.ToString("F1", inv),
                (k.Ms * 1000 / k.Calls).ToString("F1", inv), (k.HostMs * 1000 / k.Calls).ToString("F1", inv));
        sb.Append(table);
        if (p.Kernels.Count > top)
        {
            var others = p.Kernels.Skip(top).ToList();
            sb.Append(string.Create(inv, $"\n  … {others.Count} more (kernel, phase) pairs: {others.Sum(k => k.Ms):F3} ms in {others.Sum(k => k.Calls)} launches"));
        }
        return sb.ToString();
    }
}
