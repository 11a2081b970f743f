namespace Memopt.Model.Data;

/// <summary>Where a <see cref="BatchIterator"/> stands: the next batch it yields is batch <see cref="BatchIndex"/> of <see cref="Epoch"/>.</summary>
public readonly record struct BatchPosition(int Epoch, int BatchIndex);

/// <summary>B sequences of T inputs and their T targets (the inputs shifted by one token), row-major B×T.</summary>
public sealed record Batch(int[] Inputs, int[] Targets, int BatchSize, int SeqLen, BatchPosition Position);

/// <summary>
/// Batches of one split's token stream. The stream is cut into non-overlapping sequences of T+1 tokens with stride T:
/// sequence i is tokens [iT, iT+T], its inputs are the first T and its targets the last T, so consecutive sequences share
/// one boundary token and every token after the first is a target exactly once per epoch. S = ⌊(N−1)/T⌋ sequences; the
/// tail that does not fill one is unused.
/// Each epoch visits the sequences in an order shuffled by (seed, epoch) — or in stream order with shuffle off, for
/// evaluation — in ⌊S/B⌋ batches; the last partial batch is dropped. The position (epoch, batch index) can be read and
/// restored, so a resumed run continues with exactly the batches it would have seen.
/// </summary>
public sealed class BatchIterator
{
    private readonly int[] _tokens;
    private readonly ulong _seed;
    private readonly bool _shuffle;
    private int[]? _order;
    private int _orderEpoch = -1;

    public int BatchSize { get; }
    public int SeqLen { get; }
    public int SequenceCount { get; }
    public int BatchesPerEpoch { get; }
    /// <summary>The position of the next batch.</summary>
    public BatchPosition Position { get; private set; }

    public BatchIterator(int[] tokens, int batchSize, int seqLen, ulong seed, bool shuffle = true, string splitName = "split", BatchPosition start = default)
    {
        if (batchSize < 1 || seqLen < 1) throw new ArgumentOutOfRangeException(nameof(batchSize), $"batch size ({batchSize}) and sequence length ({seqLen}) must be positive");
        _tokens = tokens;
        _seed = seed;
        _shuffle = shuffle;
        BatchSize = batchSize;
        SeqLen = seqLen;
        SequenceCount = CountSequences(tokens.Length, seqLen);
        BatchesPerEpoch = SequenceCount / batchSize;
        if (BatchesPerEpoch == 0)
            throw new DataException($"{splitName} split is too small for one batch: {tokens.Length} tokens make {SequenceCount} sequences of " +
                                    $"{seqLen}+1 tokens (stride {seqLen}), fewer than the batch size {batchSize} " +
                                    $"(needs at least {(long)batchSize * seqLen + 1} tokens)");
        Restore(start);
    }

    /// <summary>Sequences of T+1 tokens with stride T in a stream of <paramref name="tokens"/> tokens: ⌊(N−1)/T⌋.</summary>
    public static int CountSequences(long tokens, int seqLen) => tokens <= seqLen ? 0 : (int)Math.Min(int.MaxValue, (tokens - 1) / seqLen);

    public void Restore(BatchPosition position)
    {
        if (position.Epoch < 0 || position.BatchIndex < 0 || position.BatchIndex >= BatchesPerEpoch)
            throw new ArgumentOutOfRangeException(nameof(position), $"position {position} is outside epochs ≥ 0, batch index in [0, {BatchesPerEpoch})");
        Position = position;
    }

    public Batch Next()
    {
        var inputs = new int[BatchSize * SeqLen];
        var targets = new int[BatchSize * SeqLen];
        var at = Position;
        Next(inputs, targets);
        return new Batch(inputs, targets, BatchSize, SeqLen, at);
    }

    /// <summary>Fills B×T inputs and targets with the next batch and advances (into the next epoch after the last batch).</summary>
    public void Next(Span<int> inputs, Span<int> targets)
    {
        int n = BatchSize * SeqLen;
        if (inputs.Length < n || targets.Length < n) throw new ArgumentException($"inputs and targets need {BatchSize}×{SeqLen} = {n} elements");
        var order = OrderOf(Position.Epoch);
        for (int b = 0; b < BatchSize; b++)
        {
            int sequence = order is null ? Position.BatchIndex * BatchSize + b : order[Position.BatchIndex * BatchSize + b];
            var source = _tokens.AsSpan(sequence * SeqLen, SeqLen + 1);
            source[..SeqLen].CopyTo(inputs.Slice(b * SeqLen, SeqLen));
            source[1..].CopyTo(targets.Slice(b * SeqLen, SeqLen));
        }
        Position = Position.BatchIndex + 1 < BatchesPerEpoch ? Position with { BatchIndex = Position.BatchIndex + 1 } : new BatchPosition(Position.Epoch + 1, 0);
    }

    /// <summary>The sequence order of an epoch (null: stream order).</summary>
    private int[]? OrderOf(int epoch)
    {
        if (!_shuffle) return null;
        if (_orderEpoch != epoch)
        {
            _order ??= new int[SequenceCount];
            for (int i = 0; i < _order.Length; i++) _order[i] = i;
            DeterministicRandom.ForStream(_seed, 0x65706F6368000000UL + (ulong)epoch).Shuffle(_order.AsSpan()); // "epoch" + n
            _orderEpoch = epoch;
        }
        return _order;
    }
}
