using System.Text;
using FsCheck;
using FsCheck.Xunit;
using Memopt.Model.Data;

namespace Memopt.Tests.Data;

public class BpeTokenizerTests
{
    /// <summary>Well-formed text from a mix of scripts: ASCII, whitespace, Latin, Polish, CJK, emoji, combining marks, any scalar.</summary>
    private static string TextFrom(int[] codes)
    {
        const string polish = "ąćęłńóśźżĄĆĘŁŃÓŚŹŻ";
        const string spaces = " \n\t\r\u00A0\u3000\u2028";
        var sb = new StringBuilder();
        foreach (int code in codes)
        {
            uint u = (uint)code;
            uint pick = u % 8, v = u / 8;
            int scalar = pick switch
            {
                0 => (int)(0x20 + v % 95),
                1 => spaces[(int)(v % (uint)spaces.Length)],
                2 => (int)(0xC0 + v % 0x190),
                3 => polish[(int)(v % (uint)polish.Length)],
                4 => (int)(0x4E00 + v % 0x5200),
                5 => (int)(0x1F300 + v % 0x800),
                6 => (int)(0x300 + v % 0x70),
                _ => (int)(v % 0x10F800) is var s && s >= 0xD800 ? s + 0x800 : (int)(v % 0x10F800),
            };
            sb.Append(new Rune(scalar).ToString());
        }
        return sb.ToString();
    }

    [Property(MaxTest = 300)]
    public void Encode_then_decode_returns_any_wellformed_text(int[] codes)
    {
        var bpe = SmallData.Bpe.Value;
        string text = TextFrom(codes);
        int[] ids = bpe.Encode(text);
        Assert.True(ids.All(id => id >= 0 && id < bpe.VocabSize), "id out of range");
        string back = bpe.Decode(ids);
        Assert.True(back == text, $"round trip failed for {Escape(text)}: got {Escape(back)}");
    }

    [Property(MaxTest = 300)]
    public void Encode_then_decode_returns_fscheck_strings(NonNull<string> input)
    {
        // FsCheck strings may hold lone UTF-16 surrogates, which UTF-8 cannot represent: compare with their U+FFFD form.
        string text = input.Get;
        string wellFormed = Encoding.UTF8.GetString(Encoding.UTF8.GetBytes(text));
        var bpe = SmallData.Bpe.Value;
        Assert.Equal(wellFormed, bpe.Decode(bpe.Encode(text)));
        if (text == wellFormed) Assert.Equal(text, bpe.Decode(bpe.Encode(text)));
    }

    [Fact]
    public void Round_trips_emoji_and_long_runs_and_empty()
    {
        var bpe = SmallData.Bpe.Value;
        foreach (string text in new[] { "", "😀", "👍🏽👨‍👩‍👧", new string('=', 1000) + "x", new string(' ', 700) + "a", "a\r\n\r\nb", "𝐀𝐁𝐂 𠀀𠀁", "it's they'll we've I'm" })
            Assert.Equal(text, bpe.Decode(bpe.Encode(text)));
    }

    [Fact]
    public void Merges_compress_the_training_language()
    {
        var bpe = SmallData.Bpe.Value;
        string doc = SmallData.Corpus(2000, seed: 99).Documents[0];
        int bytes = Encoding.UTF8.GetByteCount(doc);
        int tokens = bpe.Encode(doc).Length;
        Assert.True(tokens * 2 < bytes, $"{tokens} tokens for {bytes} bytes: the merges do not compress");
    }

    [Theory]
    [InlineData(256)]
    [InlineData(257)]
    [InlineData(311)]
    [InlineData(500)]
    public void Trained_vocab_size_is_exact(int vocab)
    {
        var texts = SmallData.Corpus(5000).Documents;
        var bpe = BpeTrainer.Train(texts, vocab);
        Assert.Equal(vocab, bpe.VocabSize);
        Assert.Equal($"bpe-{vocab}", bpe.Name);
    }

    [Fact]
    public void Running_out_of_pairs_says_which_vocab_is_reachable()
    {
        var e = Assert.Throws<DataException>(() => BpeTrainer.Train(["ab ab ab"], 300));
        Assert.Contains("vocab size 300 cannot be reached", e.Message);
        Assert.Throws<DataException>(() => BpeTrainer.Train(["ab"], 255));
    }

    [Fact]
    public void Incremental_training_matches_naive_recounting()
    {
        var texts = SmallData.Corpus(3000, seed: 5).Documents.Append("aaaaaa aaa ąąąą 😀😀😀 it's it's").ToList();
        var (words, frequencies) = BpeTrainer.CountWords(texts);
        var naiveWords = words.Select(w => w.ToList()).ToList();
        var merges = BpeTrainer.Merge(words, frequencies, 200);
        var naive = NaiveMerges(naiveWords, frequencies, 200);
        Assert.Equal(naive, merges);
    }

    /// <summary>Reference BPE: recount every pair before each merge; ties broken by the smaller (left, right).</summary>
    private static List<(int, int)> NaiveMerges(List<List<int>> words, long[] freq, int count)
    {
        var merges = new List<(int, int)>();
        for (int m = 0; m < count; m++)
        {
            var counts = new Dictionary<(int, int), long>();
            for (int w = 0; w < words.Count; w++)
                for (int i = 0; i + 1 < words[w].Count; i++)
                    counts[(words[w][i], words[w][i + 1])] = counts.GetValueOrDefault((words[w][i], words[w][i + 1])) + freq[w];
            var best = counts.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key.Item1).ThenBy(kv => kv.Key.Item2).First().Key;
            merges.Add(best);
            int id = 256 + m;
            foreach (var word in words)
                for (int i = 0; i + 1 < word.Count; i++)
                    if (word[i] == best.Item1 && word[i + 1] == best.Item2) { word[i] = id; word.RemoveAt(i + 1); }
        }
        return merges;
    }

    [Fact]
    public void Save_then_load_gives_the_same_tokenizer()
    {
        using var dir = new TempDirectory();
        var bpe = SmallData.Bpe.Value;
        string vocab = dir.Sub("t.vocab"), merges = dir.Sub("t.merges");
        bpe.Save(vocab, merges);
        var loaded = BpeTokenizer.Load(vocab, merges);
        Assert.Equal(bpe.VocabSize, loaded.VocabSize);
        Assert.Equal(bpe.Merges, loaded.Merges);
        Assert.Equal(bpe.Fingerprint, loaded.Fingerprint);
        for (int id = 0; id < bpe.VocabSize; id++) Assert.True(bpe.TokenBytes(id).SequenceEqual(loaded.TokenBytes(id)), $"token {id}");
        string text = string.Join("\n\n", SmallData.Corpus(3000, seed: 11).Documents) + " Zażółć 😀";
        Assert.Equal(bpe.Encode(text), loaded.Encode(text));
        Assert.Empty(Directory.GetFiles(dir.Path, "*.tmp-*"));
    }

    [Fact]
    public void Loading_a_damaged_tokenizer_names_the_file()
    {
        using var dir = new TempDirectory();
        string vocab = dir.Sub("t.vocab"), merges = dir.Sub("t.merges");
        SmallData.Bpe.Value.Save(vocab, merges);
        var lines = File.ReadAllLines(merges);
        File.WriteAllLines(merges, lines[..^3]);
        var e = Assert.Throws<DataException>(() => BpeTokenizer.Load(vocab, merges));
        Assert.Contains(merges, e.Message);
        File.Delete(merges);
        e = Assert.Throws<DataException>(() => BpeTokenizer.Load(vocab, merges));
        Assert.Contains("not found", e.Message);
    }

    [Fact]
    public void Pretokenizer_pieces_cover_the_text_and_keep_surrogate_pairs()
    {
        string text = "Hello  world,\n\n it's 123 😀😀 𝐀𝐁 ąę\t\tx" + new string('-', 600);
        var pieces = new List<Range>();
        PreTokenizer.Split(text, pieces);
        Assert.Equal(text, string.Concat(pieces.Select(r => text[r])));
        foreach (var r in pieces)
        {
            int end = r.End.GetOffset(text.Length);
            Assert.False(end < text.Length && char.IsLowSurrogate(text[end]), $"piece ends inside a surrogate pair at {end}");
            Assert.True(end - r.Start.GetOffset(text.Length) <= PreTokenizer.MaxPieceChars);
        }
        Assert.Equal(["Hello", " ", " world", ",", "\n\n", " it", "'s", " 123", " 😀😀", " 𝐀𝐁", " ąę", "\t\t", "x"],
            pieces.Take(13).Select(r => text[r]));
    }

    [Theory]
    [InlineData(TiktokenTextTokenizer.Cl100k, 100277)]
    [InlineData(TiktokenTextTokenizer.O200k, 200019)]
    public void Pretrained_encodings_load_offline_and_round_trip(string name, int vocab)
    {
        var tokenizer = new TiktokenTextTokenizer(name);
        Assert.Equal(vocab, tokenizer.VocabSize);
        Assert.Equal(name, tokenizer.Name);
        string text = "Hello world, zażółć gęślą jaźń 😀\n\n日本語";
        int[] ids = tokenizer.Encode(text);
        Assert.True(ids.All(id => id < vocab));
        Assert.Equal(text, tokenizer.Decode(ids));
        Assert.Equal([9906, 1917], new TiktokenTextTokenizer(TiktokenTextTokenizer.Cl100k).Encode("Hello world"));
    }

    private static string Escape(string s) => string.Concat(s.Select(c => c < 128 && !char.IsControl(c) ? c.ToString() : $"\\u{(int)c:x4}"));
}
