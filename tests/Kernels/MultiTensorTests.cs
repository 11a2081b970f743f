using FsCheck;
using FsCheck.Xunit;
using ILGPU;
using Memopt.Kernels;
using Memopt.Tests.Harness;

namespace Memopt.Tests.Kernels;

/// <summary>The multi-tensor launch plan and the thread shares it gives, checked on the host (no kernel runs).</summary>
public class MultiTensorTests
{
    [Property(MaxTest = 50)]
    public void Every_element_is_visited_once_by_the_thread_its_own_launch_would_use(PositiveInt count, PositiveInt groupSizePick, int seed)
    {
        // Any launch shape: groups of 1..64 threads, 1..5 groups per tensor, tensors of 1..300 elements.
        var rng = new Random(seed);
        int groupSize = groupSizePick.Get % 64 + 1;
        var numels = Enumerable.Range(0, count.Get % 40).Select(_ => (long)rng.Next(1, 300)).ToArray();
        var groupsOf = numels.Distinct().ToDictionary(n => n, _ => rng.Next(1, 6));
        var plan = MultiTensor.Plan(numels, n => new KernelConfig(groupsOf[n], groupSize));
        Assert.Equal((numels.Length + MultiTensor.Capacity - 1) / MultiTensor.Capacity, plan.Count);
        var visits = numels.Select(n => new int[n]).ToArray();
        foreach (var batch in plan)
        {
            Assert.True(batch.Count is >= 1 and <= MultiTensor.Capacity, $"batch of {batch.Count}");
            var slots = batch.Slots(i => i);
            for (int group = 0; group < batch.TotalGroups; group++)
                for (int thread = 0; thread < groupSize; thread++)
                {
                    var share = slots.ShareOf(group, thread, groupSize);
                    int tensor = slots.Get(share.Slot);
                    // Alone, the tensor's launch would give this thread index and grid stride.
                    int firstGroup = batch.Groups.Take(share.Slot).Sum();
                    Assert.Equal((long)(group - firstGroup) * groupSize + thread, share.First);
                    Assert.Equal((long)groupsOf[numels[tensor]] * groupSize, share.Stride);
                    for (long i = share.First; i < numels[tensor]; i += share.Stride) visits[tensor][i]++;
                }
        }
        for (int t = 0; t < numels.Length; t++)
            Assert.True(visits[t].All(v => v == 1), $"tensor {t} of {numels[t]}: visits {string.Join(",", visits[t].Distinct())}");
    }

    [Fact]
    public void Fifty_three_tensors_make_four_launches_with_each_tensor_s_own_grid()
    {
        var dev = TestDevice.Get();
        var numels = Enumerable.Range(1, 53).Select(i => (long)i * 37).ToArray();
        var plan = MultiTensor.Plan(dev, numels);
        Assert.Equal([0, 16, 32, 48], plan.Select(b => b.First));
        Assert.Equal([16, 16, 16, 5], plan.Select(b => b.Count));
        for (int t = 0; t < numels.Length; t++)
        {
            var alone = Launch.Elementwise(dev, numels[t]);
            var batch = plan[t / MultiTensor.Capacity];
            Assert.Equal(alone.GridDim.X, batch.Groups[t % MultiTensor.Capacity]);
            Assert.Equal(alone.GroupDim.X, batch.GroupSize);
        }
        Assert.Empty(MultiTensor.Plan(dev, []));
    }
}
