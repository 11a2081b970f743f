using System.Linq.Expressions;
using System.Reflection;

namespace Memopt.Tensors;

/// <summary>
/// Sees every kernel launch on a device while it is the device's <see cref="ComputeDevice.LaunchListener"/>: called on
/// the launching thread right before and right after the launch call. Launches are asynchronous (when the call returns
/// the kernel may still be running), so a profiler that wants one kernel's time synchronizes in both.
/// </summary>
public interface IKernelLaunchListener
{
    /// <param name="kernel">The key the kernel was loaded under (<see cref="ComputeDevice.Kernel{TDelegate}"/>), e.g. "layernorm.fwd".</param>
    void Launching(ComputeDevice device, string kernel);
    void Launched(ComputeDevice device, string kernel);
}

/// <summary>
/// A loaded kernel's launcher wrapped so that it tells the device's listener about each launch. Built once per kernel
/// (an expression tree, because every kernel's launcher has its own argument list) and only while a listener is set:
/// without one, <see cref="ComputeDevice.Kernel{TDelegate}"/> returns the plain launcher.
/// </summary>
internal static class ObservedLauncher
{
    private static readonly MethodInfo Launching = typeof(ComputeDevice).GetMethod(nameof(ComputeDevice.NotifyLaunching), BindingFlags.Instance | BindingFlags.NonPublic)!;
    private static readonly MethodInfo Launched = typeof(ComputeDevice).GetMethod(nameof(ComputeDevice.NotifyLaunched), BindingFlags.Instance | BindingFlags.NonPublic)!;

    public static TDelegate Wrap<TDelegate>(ComputeDevice device, string kernel, TDelegate launch) where TDelegate : Delegate
    {
        var invoke = typeof(TDelegate).GetMethod("Invoke")!;
        var args = invoke.GetParameters().Select(p => Expression.Parameter(p.ParameterType, p.Name)).ToArray();
        var self = Expression.Constant(device);
        var name = Expression.Constant(kernel);
        var body = Expression.Block(
            Expression.Call(self, Launching, name),
            Expression.Invoke(Expression.Constant(launch), args),
            Expression.Call(self, Launched, name));
        return Expression.Lambda<TDelegate>(body, args).Compile();
    }
}
