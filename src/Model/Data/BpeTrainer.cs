using System.Runtime.InteropServices;
using System.Text;

namespace Memopt.Model.Data;

/// <summary>
/// Trains a byte-level BPE (<see cref="BpeTokenizer"/>) of exactly <c>vocabSize</c> tokens on a set of texts.
/// <list type="number">
/// <item>Count the pre-tokenizer pieces of all texts (in parallel): the corpus becomes a list of distinct words with
///   frequencies, each a sequence of byte ids. Merges never cross pieces, so this is all training needs.</item>
/// <item>Count adjacent pairs (weighted by word frequency) and remember which words contain each pair.</item>
/// <item>Repeatedly merge the most frequent pair (ties: the smaller (left, right) ids, so training is deterministic),
///   updating only the words that contain it and the pair counts that change (a lazy max-heap holds candidates; stale
///   entries are skipped when popped).</item>
/// </list>
/// Fails with a <see cref="DataException"/> when the texts run out of pairs before the vocabulary is full.
/// </summary>
public static class BpeTrainer
{
    public const int MinVocabSize = 256;

    public static BpeTokenizer Train(IReadOnlyList<string> texts, int vocabSize)
    {
        if (vocabSize < MinVocabSize) throw new DataException($"BPE vocab size must be at least {MinVocabSize} (the byte tokens), got {vocabSize}");
        var (words, frequencies) = CountWords(texts);
        return new BpeTokenizer(Merge(words, frequencies, vocabSize - 256));
    }

    /// <summary>Distinct pieces (as byte ids, in ordinal order of the piece text) and their frequencies.</summary>
    public static (int[][] Words, long[] Frequencies) CountWords(IReadOnlyList<string> texts)
    {
        // one dictionary per contiguous chunk of texts (one chunk per core), merged at the end
        int chunks = Math.Max(1, Math.Min(Environment.ProcessorCount, texts.Count));
        var partials = new Dictionary<string, long>[chunks];
        Parallel.For(0, chunks, c =>
        {
            var counts = new Dictionary<string, long>(StringComparer.Ordinal);
            var lookup = counts.GetAlternateLookup<ReadOnlySpan<char>>();
            for (int i = (int)((long)texts.Count * c / chunks); i < (int)((long)texts.Count * (c + 1) / chunks); i++)
            {
                ReadOnlySpan<char> text = texts[i];
                for (int at = 0; at < text.Length;)
                {
                    int end = PreTokenizer.PieceEnd(text, at);
                    CollectionsMarshal.GetValueRefOrAddDefault(lookup, text[at..end], out _)++;
                    at = end;
                }
            }
            partials[c] = counts;
        });
        var total = partials[0];
        foreach (var partial in partials.Skip(1))
            foreach (var (piece, count) in partial)
                CollectionsMarshal.GetValueRefOrAddDefault(total, piece, out _) += count;
        var pieces = total.Keys.ToArray();
        Array.Sort(pieces, StringComparer.Ordinal);
        var words = new int[pieces.Length][];
        var frequencies = new long[pieces.Length];
        for (int w = 0; w < pieces.Length; w++)
        {
            words[w] = Encoding.UTF8.GetBytes(pieces[w]).Select(b => (int)b).ToArray();
            frequencies[w] = total[pieces[w]];
        }
        return (words, frequencies);
    }

    /// <summary>Learns <paramref name="mergeCount"/> merges on the words (modified in place).</summary>
    public static List<(int Left, int Right)> Merge(int[][] words, long[] frequencies, int mergeCount)
    {
        var lengths = words.Select(w => w.Length).ToArray();
        var pairCounts = new Dictionary<long, long>(PairKeyComparer.Instance);
        var pairWords = new Dictionary<long, List<int>>(PairKeyComparer.Instance);
        for (int w = 0; w < words.Length; w++)
            for (int i = 0; i + 1 < lengths[w]; i++)
            {
                long key = Key(words[w][i], words[w][i + 1]);
                CollectionsMarshal.GetValueRefOrAddDefault(pairCounts, key, out _) += frequencies[w];
                AddWord(pairWords, key, w);
            }
        var heap = new PriorityQueue<long, (long Count, long Key)>(Comparer<(long Count, long Key)>.Create((a, b) =>
            a.Count != b.Count ? b.Count.CompareTo(a.Count) : a.Key.CompareTo(b.Key)));
        foreach (var (key, count) in pairCounts) heap.Enqueue(key, (count, key));

        var merges = new List<(int, int)>(mergeCount);
        var visited = new int[words.Length];
        Array.Fill(visited, -1);
        while (merges.Count < mergeCount)
        {
            if (!heap.TryDequeue(out long pair, out var priority))
                throw new DataException($"BPE: the training text has no more pairs to merge after {256 + merges.Count} tokens; " +
                                        $"vocab size {256 + mergeCount} cannot be reached (use --vocab-size {256 + merges.Count} or less, or more text)");
            if (!pairCounts.TryGetValue(pair, out long current) || current != priority.Count) continue; // stale entry
            int left = (int)(pair >> 32), right = (int)(uint)pair, id = 256 + merges.Count;
            merges.Add((left, right));
            // a fresh dictionary per merge: Clear() costs the capacity that one early, huge merge left behind
            var delta = new Dictionary<long, long>(PairKeyComparer.Instance);
            foreach (int w in pairWords[pair])
            {
                if (visited[w] == id) continue;
                visited[w] = id;
                MergeWord(words[w], ref lengths[w], left, right, id, frequencies[w], w, delta, pairWords);
            }
            foreach (var (key, d) in delta)
            {
                if (d == 0) continue;
                ref long count = ref CollectionsMarshal.GetValueRefOrAddDefault(pairCounts, key, out _);
                count += d;
                if (count <= 0) { pairCounts.Remove(key); pairWords.Remove(key); }
                else heap.Enqueue(key, (count, key));
            }
            pairCounts.Remove(pair);
            pairWords.Remove(pair);
        }
        return merges;
    }

    /// <summary>
    /// Merges every (left, right) in one word, left to right, recording only the pair counts that change: per occurrence
    /// the pair itself, the pair with the token before (unless that token was merged just before, which already counted
    /// it) and the pair with the token after (unless the next occurrence starts there: it counts (id, id) itself).
    /// </summary>
    private static void MergeWord(int[] s, ref int length, int left, int right, int id, long f, int word,
                                  Dictionary<long, long> delta, Dictionary<long, List<int>> pairWords)
    {
        int n = length, m = 0;
        bool previousMerged = false;
        for (int i = 0; i < n; i++)
        {
            if (i + 1 < n && s[i] == left && s[i + 1] == right)
            {
                Add(delta, Key(left, right), -f);
                if (m > 0)
                {
                    if (!previousMerged) Add(delta, Key(s[m - 1], left), -f);
                    long key = Key(s[m - 1], id);
                    Add(delta, key, f);
                    AddWord(pairWords, key, word);
                }
                if (i + 2 < n)
                {
                    Add(delta, Key(right, s[i + 2]), -f);
                    bool nextMerges = i + 3 < n && s[i + 2] == left && s[i + 3] == right;
                    if (!nextMerges)
                    {
                        long key = Key(id, s[i + 2]);
                        Add(delta, key, f);
                        AddWord(pairWords, key, word);
                    }
                }
                s[m++] = id;
                i++;
                previousMerged = true;
            }
            else
            {
                s[m++] = s[i];
                previousMerged = false;
            }
        }
        length = m;
    }

    private static void Add(Dictionary<long, long> delta, long key, long value) =>
        CollectionsMarshal.GetValueRefOrAddDefault(delta, key, out _) += value;

    private static void AddWord(Dictionary<long, List<int>> pairWords, long key, int word)
    {
        ref var list = ref CollectionsMarshal.GetValueRefOrAddDefault(pairWords, key, out _);
        list ??= [];
        if (list.Count == 0 || list[^1] != word) list.Add(word);
    }

    private static long Key(int left, int right) => ((long)left << 32) | (uint)right;
}
