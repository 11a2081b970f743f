using FsCheck;
using FsCheck.Xunit;
using Memopt.Model.Data;

namespace Memopt.Tests.Data;

public class BatchIteratorTests
{
    private static int[] Stream(int n) => Enumerable.Range(0, n).ToArray();

    [Property(MaxTest = 100)]
    public void Epoch_covers_whole_batches_of_distinct_sequences(PositiveInt tokens, PositiveInt batch, PositiveInt seqLen, ulong seed)
    {
        int t = seqLen.Get % 17 + 1, b = batch.Get % 7 + 1;
        int n = tokens.Get % 2000 + b * t + 1; // at least one batch
        var it = new BatchIterator(Stream(n), b, t, seed);
        int sequences = (n - 1) / t;
        Assert.Equal(sequences, it.SequenceCount);
        Assert.Equal(sequences / b, it.BatchesPerEpoch); // the last partial batch is dropped
        var starts = new HashSet<int>();
        for (int k = 0; k < it.BatchesPerEpoch; k++)
        {
            Assert.Equal(new BatchPosition(0, k), it.Position);
            var batch1 = it.Next();
            for (int r = 0; r < b; r++)
            {
                int start = batch1.Inputs[r * t];
                Assert.True(start % t == 0, $"sequence starts at {start}, not a multiple of T = {t}");
                Assert.True(starts.Add(start), $"sequence {start} twice in one epoch");
                for (int j = 0; j < t; j++)
                {
                    Assert.Equal(start + j, batch1.Inputs[r * t + j]);
                    Assert.Equal(start + j + 1, batch1.Targets[r * t + j]); // targets: inputs shifted by one
                }
            }
        }
        Assert.Equal(it.BatchesPerEpoch * b, starts.Count);
        Assert.Equal(new BatchPosition(1, 0), it.Position);
    }

    [Fact]
    public void Shuffle_is_deterministic_by_seed_and_differs_between_epochs()
    {
        var tokens = Stream(10_001);
        List<int> Order(ulong seed, int batches, BatchPosition start = default)
        {
            var it = new BatchIterator(tokens, 4, 10, seed, start: start);
            return Enumerable.Range(0, batches).SelectMany(_ => { var x = it.Next(); return Enumerable.Range(0, 4).Select(r => x.Inputs[r * 10]); }).ToList();
        }
        var a = Order(1, 500);
        Assert.Equal(a, Order(1, 500));
        Assert.NotEqual(a, Order(2, 500));
        Assert.NotEqual(a.Take(1000), a.Skip(1000).Take(1000)); // epoch 0 vs epoch 1 (250 batches each)
        Assert.NotEqual(a.Take(1000), a.Take(1000).Order()); // actually shuffled
    }

    [Fact]
    public void Restored_position_continues_with_the_same_batches()
    {
        var tokens = Stream(5_000);
        var it = new BatchIterator(tokens, 3, 7, 42);
        for (int i = 0; i < 300; i++) it.Next(); // into epoch 1 (238 batches per epoch)
        var saved = it.Position;
        Assert.Equal(1, saved.Epoch);
        var expected = Enumerable.Range(0, 5).Select(_ => it.Next()).ToList();
        var resumed = new BatchIterator(tokens, 3, 7, 42, start: saved);
        foreach (var e in expected)
        {
            var got = resumed.Next();
            Assert.Equal(e.Inputs, got.Inputs);
            Assert.Equal(e.Position, got.Position);
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => it.Restore(new BatchPosition(0, it.BatchesPerEpoch)));
    }

    [Fact]
    public void Unshuffled_iteration_is_in_stream_order()
    {
        var it = new BatchIterator(Stream(101), 2, 10, 0, shuffle: false);
        Assert.Equal(5, it.BatchesPerEpoch);
        var first = it.Next();
        Assert.Equal((0, 10), (first.Inputs[0], first.Inputs[10]));
        Assert.Equal(20, it.Next().Inputs[0]);
    }

    [Fact]
    public void Too_small_split_is_reported_with_the_numbers()
    {
        var e = Assert.Throws<DataException>(() => new BatchIterator(Stream(100), 8, 16, 0, splitName: "val"));
        Assert.Equal("val split is too small for one batch: 100 tokens make 6 sequences of 16+1 tokens (stride 16), " +
                     "fewer than the batch size 8 (needs at least 129 tokens)", e.Message);
        _ = new BatchIterator(Stream(129), 8, 16, 0); // exactly one batch
    }
}
