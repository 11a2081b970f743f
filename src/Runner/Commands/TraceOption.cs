using Memopt.Model.Memory;
using Memopt.Tensors;

namespace Memopt.Runner.Commands;

/// <summary>--trace PATH / --trace-steps N, shared by `train` and `memory`: a Chrome trace of the device's memory and ops.</summary>
public static class TraceOption
{
    /// <summary>Starts tracing the device when --trace is given (before the model is built, so its parameters are on the counters).</summary>
    public static ChromeTrace? Start(TrainOptions o, ComputeDevice device)
    {
        if (o.Trace is null) return null;
        try
        {
            return ChromeTrace.Start(device, o.Trace, o.TraceSteps);
        }
        catch (Exception e) when (e is ArgumentException or IOException or UnauthorizedAccessException)
        {
            throw new UserError($"--trace {o.Trace}: {e.Message}", e);
        }
    }

    /// <summary>Ends the trace (if the run had fewer steps than --trace-steps) and says where it is.</summary>
    public static void Finish(ChromeTrace? trace)
    {
        if (trace is null) return;
        trace.Stop();
        Console.WriteLine($"trace    {trace.PathWritten} ({trace.Events:N0} events, {trace.StepsTraced} steps{(trace.Truncated ? ", truncated" : "")}; open in https://ui.perfetto.dev)");
    }

    public static void Validate(TrainOptions o)
    {
        if (o.Trace is not null && o.TraceSteps <= 0) throw new UserError($"--trace-steps must be > 0, got {o.TraceSteps}");
    }
}
