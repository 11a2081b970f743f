namespace Memopt.Model.Data;

public enum SplitName { Train, Val, Test }

/// <summary>
/// The train/val/test split of a corpus by DOCUMENT (85/10/5): documents are shuffled with the seed, the first 85 % go to
/// train, the next 10 % to val, the rest to test; each split then lists its documents in corpus order. Val and test get at
/// least one document each (rounding to nearest otherwise), so a corpus needs at least 3 documents.
/// </summary>
public sealed record CorpusSplit(int[] Train, int[] Val, int[] Test)
{
    public const int TrainPercent = 85, ValPercent = 10, TestPercent = 5;

    public int[] this[SplitName split] => split switch { SplitName.Train => Train, SplitName.Val => Val, _ => Test };

    public static CorpusSplit Make(int documentCount, ulong seed)
    {
        int val = Math.Max(1, (int)(((long)documentCount * ValPercent + 50) / 100));
        int test = Math.Max(1, (int)(((long)documentCount * TestPercent + 50) / 100));
        int train = documentCount - val - test;
        if (train < 1)
            throw new DataException($"corpus has {documentCount} document(s); a train/val/test split needs at least 3 " +
                                    "(a .txt file is split into documents at blank lines)");
        var order = Enumerable.Range(0, documentCount).ToArray();
        DeterministicRandom.ForStream(seed, 0x73706C6974UL).Shuffle(order.AsSpan()); // "split"
        int[] Take(int start, int count)
        {
            var part = order.AsSpan(start, count).ToArray();
            Array.Sort(part);
            return part;
        }
        return new CorpusSplit(Take(0, train), Take(train, val), Take(train + val, test));
    }
}
