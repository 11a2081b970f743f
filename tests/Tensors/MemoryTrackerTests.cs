using Memopt.Tensors;

namespace Memopt.Tests.Tensors;

public class MemoryTrackerTests
{
    private static ComputeDevice NewDevice(long? limit = null) => ComputeDevice.Create(DeviceKind.Cpu, limit);

    [Fact]
    public void Known_allocation_sequence_gives_known_live_and_peak_per_category()
    {
        using var dev = NewDevice();
        var t = dev.Tracker;
        var p = Tensor.Empty(dev, new Shape(1000), DType.F32, MemoryCategory.Parameters, "w");          // 4000
        var a1 = Tensor.Empty(dev, new Shape(10, 100), DType.F32, MemoryCategory.Activations, "a1");   // 4000
        var a2 = Tensor.Empty(dev, new Shape(500), DType.BF16, MemoryCategory.Activations, "a2");      // 1000
        Assert.Equal(9000, t.Live);
        Assert.Equal(5000, t.LiveOf(MemoryCategory.Activations));
        a1.Dispose();
        var s = Tensor.Empty(dev, new Shape(2, 2, 2), DType.F32, MemoryCategory.AttentionScores, "s"); // 32
        Assert.Equal(5032, t.Live);
        Assert.Equal(9000, t.Peak);
        Assert.Equal(5000, t.PeakOf(MemoryCategory.Activations));
        Assert.Equal(1000, t.LiveOf(MemoryCategory.Activations));
        Assert.Equal(32, t.PeakOf(MemoryCategory.AttentionScores));
        // The breakdown at the overall peak is the moment a2 arrived: params 4000 + activations 5000.
        var atPeak = t.AtPeak();
        Assert.Equal(4000, atPeak.ByCategory[MemoryCategory.Parameters]);
        Assert.Equal(5000, atPeak.ByCategory[MemoryCategory.Activations]);
        Assert.Equal(0, atPeak.ByCategory[MemoryCategory.AttentionScores]);
        p.Dispose(); a2.Dispose(); s.Dispose();
        Assert.Equal(0, t.Live);
        Assert.Empty(t.LiveAllocations);
    }

    [Fact]
    public void Peaks_are_kept_per_phase_and_reset_to_what_is_live()
    {
        using var dev = NewDevice();
        var t = dev.Tracker;
        using var w = Tensor.Empty(dev, new Shape(100), DType.F32, MemoryCategory.Parameters, "w");
        using (t.EnterPhase(Phase.Forward))
        {
            using var a = Tensor.Empty(dev, new Shape(300), DType.F32, MemoryCategory.Activations, "a");
        }
        using (t.EnterPhase(Phase.Backward))
        {
            using var g = Tensor.Empty(dev, new Shape(200), DType.F32, MemoryCategory.ActivationGradients, "g");
        }
        Assert.Equal(Phase.Setup, t.Phase);
        Assert.Equal(1600, t.PeakDuring(Phase.Forward));
        Assert.Equal(1200, t.PeakDuring(Phase.Backward));
        t.ResetPeaks();
        Assert.Equal(400, t.Peak);
        Assert.Equal(0, t.PeakDuring(Phase.Forward));
    }

    [Fact]
    public void Timeline_records_allocate_free_and_retag_with_op_layer_and_phase()
    {
        using var dev = NewDevice();
        var t = dev.Tracker;
        t.RecordTimeline = true;
        using (t.EnterPhase(Phase.Forward))
        using (t.InLayer(3))
        {
            var x = Tensor.Empty(dev, new Shape(8), DType.F32, MemoryCategory.Activations, "qkv");
            t.Retag(x.Storage.Allocation, MemoryCategory.SavedForBackward);
            x.Dispose();
        }
        var e = t.Timeline;
        Assert.Equal(3, e.Count);
        Assert.Equal((MemoryEventKind.Allocate, "qkv", 3, Phase.Forward, 32L), (e[0].Kind, e[0].Op, e[0].Layer, e[0].Phase, e[0].LiveBytes));
        Assert.Equal((MemoryEventKind.Retag, MemoryCategory.SavedForBackward), (e[1].Kind, e[1].Category));
        Assert.Equal((MemoryEventKind.Free, MemoryCategory.SavedForBackward, 0L), (e[2].Kind, e[2].Category, e[2].LiveBytes));
        Assert.True(e[0].TimeMs <= e[2].TimeMs);
    }

    [Fact]
    public void Budget_throws_a_typed_out_of_memory_with_the_breakdown_and_keeps_accounts_intact()
    {
        using var dev = NewDevice(limit: 1 << 20);
        using var w = Tensor.Empty(dev, new Shape(100_000), DType.F32, MemoryCategory.Parameters, "w");        // 400 kB
        using var a = Tensor.Empty(dev, new Shape(100_000), DType.F32, MemoryCategory.Activations, "a");       // 400 kB
        var e = Assert.Throws<OutOfDeviceMemoryException>(() =>
            Tensor.Empty(dev, new Shape(64, 64, 64), DType.F32, MemoryCategory.AttentionScores, "scores"));   // 1 MiB
        Assert.Equal(64 * 64 * 64 * 4, e.Requested);
        Assert.Equal("scores", e.Op);
        Assert.False(e.FromDriver);
        Assert.Equal(400_000, e.Live.ByCategory[MemoryCategory.Parameters]);
        Assert.Equal(400_000, e.Live.ByCategory[MemoryCategory.Activations]);
        Assert.Contains("scores", e.Message);
        Assert.Contains("[64, 64, 64]", e.Message);
        Assert.Equal(800_000, dev.Tracker.Live);
    }

    [Fact]
    public void Pool_reuses_freed_blocks_and_reports_reserved_beside_live()
    {
        using var dev = NewDevice();
        var t = dev.Tracker;
        var a = Tensor.Empty(dev, new Shape(1000), DType.F32, MemoryCategory.Activations, "a");
        a.Dispose();
        Assert.Equal(0, t.Live);
        Assert.Equal(4096, t.Reserved);               // 4000 B rounded up to the 512 B granule, cached
        using var b = Tensor.Empty(dev, new Shape(1000), DType.F32, MemoryCategory.Activations, "b");
        Assert.Equal(4096, t.Reserved);               // the cached block was reused, not a new one
        Assert.Equal(4000, t.Live);
        dev.ReleaseCachedMemory();
        Assert.Equal(4096, t.Reserved);               // b still holds its block
    }

    [Fact]
    public void Budget_gives_cached_blocks_back_before_refusing()
    {
        using var dev = NewDevice(limit: 3 << 20);
        Tensor.Empty(dev, new Shape(1 << 19), DType.F32, MemoryCategory.Workspace, "tmp").Dispose(); // 2 MiB cached
        using var big = Tensor.Empty(dev, new Shape(1 << 19), DType.F32, MemoryCategory.Activations, "big"); // reuses it
        Tensor.Empty(dev, new Shape(200_000), DType.F32, MemoryCategory.Workspace, "odd").Dispose();       // cached 800 kB
        using var other = Tensor.Empty(dev, new Shape(250_000), DType.F32, MemoryCategory.Activations, "other");
        Assert.True(dev.Tracker.Reserved <= 3 << 20);
    }

    [Fact]
    public void A_view_keeps_the_storage_alive_until_the_last_handle_goes()
    {
        using var dev = NewDevice();
        var x = Tensor.Empty(dev, new Shape(4, 4), DType.F32, MemoryCategory.Activations, "x");
        var row = x.View(new Shape(4), offsetElements: 8);
        x.Dispose();
        Assert.Equal(64, dev.Tracker.Live);
        Assert.Throws<ObjectDisposedException>(() => x.F32);
        row.CopyFrom([1f, 2f, 3f, 4f]);
        Assert.Equal([1f, 2f, 3f, 4f], row.ToFloatArray());
        row.Dispose();
        Assert.Equal(0, dev.Tracker.Live);
    }

    [Theory]
    [InlineData("24GiB", 24L << 30)]
    [InlineData("512MiB", 512L << 20)]
    [InlineData("1.5G", 3L << 29)]
    [InlineData("2GB", 2_000_000_000L)]
    [InlineData("4096", 4096L)]
    public void Byte_sizes_parse(string text, long bytes) => Assert.Equal(bytes, ByteSize.Parse(text));

    [Theory]
    [InlineData("")]
    [InlineData("-3GiB")]
    [InlineData("0")]
    [InlineData("lots")]
    public void Bad_byte_sizes_are_rejected_with_the_text(string text)
    {
        var e = Assert.Throws<FormatException>(() => ByteSize.Parse(text));
        Assert.Contains($"'{text}'", e.Message);
    }

    [Fact]
    public void Shapes_reject_non_positive_dimensions_naming_the_shape()
    {
        var e = Assert.Throws<ArgumentException>(() => new Shape(3, 0, 2));
        Assert.Contains("[3, 0, 2]", e.Message);
    }
}
