using System.Text;

namespace Memopt.Model.Data;

/// <summary>
/// The word list of the synthetic language: distinct pronounceable words built from consonant–vowel syllables
/// (a few Polish letters included, so the tokenizer also meets multi-byte UTF-8). Word i has frequency rank i, and
/// frequent words are short (Zipf's law of abbreviation), as in natural languages.
/// </summary>
public static class SyntheticWords
{
    private static readonly string[] Onsets = ["b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "w", "z", "ch", "sz", "ł", "ż"];
    private static readonly string[] Vowels = ["a", "e", "i", "o", "u", "y", "ó", "a", "e", "o"];
    private static readonly string[] Codas = ["", "", "", "", "", "n", "r", "s", "k", "ł"];

    public static string[] Generate(int count, ulong seed)
    {
        if (count < 1) throw new ArgumentOutOfRangeException(nameof(count), "the synthetic vocabulary needs at least one word");
        var rng = DeterministicRandom.ForStream(seed, 0x776F726473UL); // "words"
        var words = new string[count];
        var taken = new HashSet<string>(StringComparer.Ordinal);
        var sb = new StringBuilder();
        for (int rank = 0; rank < count; rank++)
        {
            int baseSyllables = rank < 40 ? 1 : rank < 1500 ? 2 : rank < 12000 ? 3 : 4;
            for (int attempt = 0; ; attempt++)
            {
                // one extra syllable now and then, and more once a length class is crowded
                int syllables = baseSyllables + (rank >= 40 && rng.NextInt(4) == 0 ? 1 : 0) + attempt / 50;
                sb.Clear();
                for (int s = 0; s < syllables; s++)
                {
                    sb.Append(Onsets[rng.NextInt(Onsets.Length)]);
                    sb.Append(Vowels[rng.NextInt(Vowels.Length)]);
                    sb.Append(Codas[rng.NextInt(Codas.Length)]);
                }
                string w = sb.ToString();
                if (taken.Add(w)) { words[rank] = w; break; }
            }
        }
        return words;
    }
}
