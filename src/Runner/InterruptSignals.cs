using System.Runtime.InteropServices;

namespace Memopt.Runner;

/// <summary>
/// Ctrl-C (SIGINT) and SIGTERM for a long run. The first signal only cancels <see cref="Token"/>: the trainer finishes
/// the step it is in, writes a checkpoint and partial metrics, and the command exits with 128 + the signal number
/// (130 or 143). A second signal exits at once with that code, writing nothing more. Registered through
/// <see cref="PosixSignalRegistration"/> (SIGINT is also Ctrl-C / Ctrl-Break on Windows); disposing restores the
/// default handling.
/// </summary>
public sealed class InterruptSignals : IDisposable
{
    private readonly CancellationTokenSource _cts = new();
    private readonly TextWriter _log;
    private readonly PosixSignalRegistration[] _registrations;
    private int _signal;

    private InterruptSignals(TextWriter log)
    {
        _log = log;
        _registrations =
        [
            PosixSignalRegistration.Create(PosixSignal.SIGINT, On),
            PosixSignalRegistration.Create(PosixSignal.SIGTERM, On),
        ];
    }

    public static InterruptSignals Install(TextWriter log) => new(log);

    public CancellationToken Token => _cts.Token;
    /// <summary>The POSIX number of the first signal received (2 SIGINT, 15 SIGTERM), or 0.</summary>
    public int Signal => Volatile.Read(ref _signal);
    /// <summary>128 + the signal number: the conventional exit code of a process stopped by it.</summary>
    public int ExitCode => Signal == 15 ? Commands.ExitCodes.Terminated : Commands.ExitCodes.Interrupted;
    public string SignalName => Signal == 15 ? "SIGTERM" : "SIGINT";

    private void On(PosixSignalContext context)
    {
        context.Cancel = true;   // no default termination: we stop cleanly, or exit ourselves below
        int number = context.Signal == PosixSignal.SIGTERM ? 15 : 2;
        if (Interlocked.CompareExchange(ref _signal, number, 0) == 0)
        {
            _log.WriteLine($"memopt: {SignalName} received: finishing the current step, then writing a checkpoint and the partial metrics " +
                           "(signal again to exit at once without them)");
            _cts.Cancel();
            return;
        }
        _log.WriteLine($"memopt: second signal: exiting now; nothing more is written");
        _log.Flush();
        Environment.Exit(128 + number);
    }

    public void Dispose()
    {
        foreach (var r in _registrations) r.Dispose();
        _cts.Dispose();
    }
}
