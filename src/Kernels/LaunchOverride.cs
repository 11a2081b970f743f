namespace Memopt.Kernels;

/// <summary>
/// A launch choice forced for the kernels of this logical thread of execution (an AsyncLocal, so concurrently running
/// tests and benchmarks do not see each other's choice) until the scope <see cref="Use"/> returns is disposed; the
/// default value means "not forced". Kernel paths, tensor-core tiles and SIMT plans are forced this way.
/// </summary>
public sealed class LaunchOverride<T>
{
    private readonly AsyncLocal<T> _value = new();

    public T Value => _value.Value!;

    public IDisposable Use(T value)
    {
        var previous = _value.Value;
        _value.Value = value;
        return new Scope(_value, previous);
    }

    private sealed class Scope(AsyncLocal<T> value, T? previous) : IDisposable
    {
        public void Dispose() => value.Value = previous;
    }
}
