using Memopt.Model.Data;

namespace Memopt.Runner.Bench;

/// <summary>
/// Uniformly random tokens over the model's whole vocabulary, as PyTorch's reference (benchmarks/pytorch) trains on
/// without --tokens: the step benchmark's `--random-tokens`, valid for time and memory only. No corpus is generated,
/// no tokenizer trained; the splits are plain arrays of the length the benchmark needs.
/// </summary>
public static class RandomTokenData
{
    public static PreparedData Create(int vocab, int seqLen, int sequences, ulong seed)
    {
        var rng = new DeterministicRandom(seed);
        int[] Split(int count)
        {
            var tokens = new int[(long)count * seqLen + 1];
            for (int i = 0; i < tokens.Length; i++) tokens[i] = rng.NextInt(vocab);
            return tokens;
        }
        int[] train = Split(sequences), val = Split(1), test = Split(1);
        var split = (int[] t) => new SplitStats(1, t.Length, BatchIterator.CountSequences(t.Length, seqLen));
        return new PreparedData
        {
            Tokenizer = new NoTokenizer(vocab),
            Train = train, Val = val, Test = test,
            Stats = new DataStats
            {
                Source = "random tokens", TokenizerName = "random", VocabSize = vocab, SeqLen = seqLen,
                Train = split(train), Val = split(val), Test = split(test),
            },
        };
    }

    /// <summary>Token ids without text: the trainer only asks a tokenizer for its vocabulary size.</summary>
    private sealed class NoTokenizer(int vocab) : ITextTokenizer
    {
        public int VocabSize => vocab;
        public string Name => "random";
        public ulong Fingerprint => 0;
        public int[] Encode(string text) => throw new NotSupportedException("random tokens have no text");
        public string Decode(ReadOnlySpan<int> ids) => throw new NotSupportedException("random tokens have no text");
    }
}
