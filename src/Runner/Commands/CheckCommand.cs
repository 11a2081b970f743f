using System.Globalization;
using CommandLine;
using Memopt.Kernels;
using Memopt.Runner.Checks;
using Memopt.Runner.Checks.Cases;
using Memopt.Tensors;

namespace Memopt.Runner.Commands;

[Verb("check", HelpText = "Check every kernel against its CPU reference and time it (device-synchronized, warm-up, median).")]
public sealed class CheckOptions : DeviceOptions
{
    [Option("kernel", HelpText = "Only families or cases whose name contains this text (e.g. matmul, gelu.forward).")]
    public string? Kernel { get; set; }

    [Option("repeats", Default = 5, HelpText = "Timed repeats per kernel (the median is reported).")]
    public int Repeats { get; set; } = 5;

    [Option("seed", Default = 1, HelpText = "Seed for the random inputs.")]
    public int Seed { get; set; } = 1;

    [Option("path", Default = "auto", HelpText = "Kernel path: auto (cooperative on CUDA, portable on the CPU), cooperative or portable.")]
    public string Path { get; set; } = "auto";
}

public static class CheckCommand
{
    public static IEnumerable<KernelCase> AllCases() =>
        ElementwiseCases.All().Concat(MatMulCases.All()).Concat(NormCases.All()).Concat(LossCases.All());

    public static int Run(CheckOptions options)
    {
        if (options.Repeats <= 0) throw new UserError($"--repeats {options.Repeats}: must be > 0");
        if (!Enum.TryParse<KernelPath>(options.Path, ignoreCase: true, out var path))
            throw new UserError($"--path '{options.Path}': expected auto, cooperative or portable");
        using var pathScope = Launch.UsePath(path);
        using var device = options.OpenDevice();
        var cases = AllCases().Where(c => options.Kernel is null || $"{c.Family}.{c.Name}".Contains(options.Kernel, StringComparison.OrdinalIgnoreCase)).ToList();
        if (cases.Count == 0) throw new UserError($"--kernel '{options.Kernel}' matches no kernel");
        var info = device.Info();
        Console.WriteLine($"memopt check on {info.Kind}: {info.Name}, {cases.Count} kernels, {(Launch.Cooperative(device) ? "cooperative" : "portable")} path, median of {options.Repeats}");
        Console.WriteLine($"{"kernel",-34} {"size",-22} {"error",10} {"tol",8} {"device ms",10} {"ref ms",9} {"GB/s",8} {"GFLOP/s",9}  result");
        int failed = 0;
        foreach (var c in cases)
        {
            CaseResult r;
            try
            {
                r = KernelCheckRunner.Run(device, c, options.Seed, options.Repeats);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                failed++;
                Console.WriteLine($"{c.Family + "." + c.Name,-34} FAILED: {e.GetType().Name}: {e.Message}");
                continue;
            }
            if (!r.Passed) failed++;
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{c.Family + "." + c.Name,-34} {r.Size,-22} {r.Error,10:E2} {c.Tolerance,8:E0} {r.DeviceMs,10:F3} {r.ReferenceMs,9:F1} {r.GBps,8:F1} {(r.Flops > 0 ? r.GFlops.ToString("F1", CultureInfo.InvariantCulture) : "-"),9}  {(r.Passed ? "ok" : "FAIL")}"));
        }
        Console.WriteLine($"{cases.Count - failed} passed, {failed} failed; tracked peak {ByteSize.Format(device.Tracker.Peak)}, reserved peak {ByteSize.Format(device.Tracker.PeakReserved)}");
        return failed == 0 ? 0 : 1;
    }
}
