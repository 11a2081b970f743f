using Memopt.Kernels;
using Memopt.Tests.Harness;

namespace Memopt.Tests.Kernels;

public class LaunchTests
{
    [Fact]
    public void Auto_path_is_cooperative_exactly_on_cuda_and_scopes_nest_and_restore()
    {
        var dev = TestDevice.Get();
        Assert.Equal(dev.IsCuda, Launch.Cooperative(dev));
        using (Launch.UsePath(KernelPath.Portable))
        {
            Assert.False(Launch.Cooperative(dev));
            using (Launch.UsePath(KernelPath.Cooperative)) Assert.True(Launch.Cooperative(dev));
            Assert.False(Launch.Cooperative(dev));
        }
        Assert.Equal(dev.IsCuda, Launch.Cooperative(dev));
    }

    [Fact]
    public void A_path_chosen_in_one_async_flow_does_not_leak_into_another()
    {
        var dev = TestDevice.Get();
        using var chosen = new ManualResetEventSlim();
        using var checkedOther = new ManualResetEventSlim();
        var holder = Task.Run(() =>
        {
            using (Launch.UsePath(KernelPath.Cooperative))
            {
                chosen.Set();
                checkedOther.Wait();
            }
        });
        chosen.Wait();
        bool other = Task.Run(() => Launch.Cooperative(dev)).Result;
        checkedOther.Set();
        holder.Wait();
        Assert.Equal(dev.IsCuda, other);
    }

    [Theory]
    [InlineData(1, 32)]
    [InlineData(64, 32)]
    [InlineData(65, 64)]
    [InlineData(100, 64)]
    [InlineData(600, 256)]
    public void Row_groups_are_a_power_of_two_of_at_least_half_the_row_capped_by_the_device(int cols, int preferred)
    {
        var dev = TestDevice.Get();
        var config = Launch.Row(dev, 7, cols);
        Assert.Equal(7, config.GridDim.X);
        Assert.Equal(Math.Min(preferred, dev.MaxGroupSize), config.GroupDim.X);
    }
}
