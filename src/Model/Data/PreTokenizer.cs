using System.Globalization;
using System.Text;

namespace Memopt.Model.Data;

/// <summary>
/// Splits text into the pieces BPE merges never cross, GPT-2 style, hand-written over Unicode scalars (so surrogate
/// pairs are never split and supplementary-plane letters count as letters). Rules, at each position:
/// <list type="number">
/// <item>an English contraction: 's 't 'm 'd 're 've 'll;</item>
/// <item>a run of letters (with combining marks), a run of numbers, or a run of other non-space characters, each
///   optionally preceded by ONE space (" the", " 42", " ...");</item>
/// <item>a run of whitespace; when it is followed by text and ends with a ' ', that last space is left to prefix the
///   next piece (so "a  b" → "a", " ", " b"; "a\n\nb" → "a", "\n\n", "b").</item>
/// </list>
/// A piece longer than <see cref="MaxPieceChars"/> is cut there (bounds the cost of encoding pathological runs).
/// Pieces are contiguous and cover the text, which is what makes BPE lossless.
/// </summary>
public static class PreTokenizer
{
    /// <summary>Changes to these rules change every trained tokenizer: bump the version (it is part of the saved format).</summary>
    public const string Version = "gpt2-like-v1";
    public const int MaxPieceChars = 256;

    private enum Kind : byte { Space, Letter, Number, Other }

    /// <summary>Appends the range of every piece of <paramref name="text"/>, in order.</summary>
    public static void Split(ReadOnlySpan<char> text, List<Range> pieces)
    {
        for (int i = 0; i < text.Length;)
        {
            int end = PieceEnd(text, i);
            pieces.Add(new Range(i, end));
            i = end;
        }
    }

    /// <summary>End (exclusive) of the piece that starts at <paramref name="start"/>.</summary>
    public static int PieceEnd(ReadOnlySpan<char> text, int start)
    {
        int n = text.Length;
        int end = RawPieceEnd(text, start);
        if (end - start > MaxPieceChars)
        {
            end = start + MaxPieceChars;
            if (char.IsHighSurrogate(text[end - 1]) && end < n && char.IsLowSurrogate(text[end])) end--;
        }
        return end;
    }

    private static int RawPieceEnd(ReadOnlySpan<char> text, int i)
    {
        int n = text.Length;
        if (text[i] == '\'' && i + 1 < n)
        {
            char a = text[i + 1];
            if (a is 's' or 't' or 'm' or 'd') return i + 2;
            if (i + 2 < n && ((a == 'r' && text[i + 2] == 'e') || (a == 'v' && text[i + 2] == 'e') || (a == 'l' && text[i + 2] == 'l'))) return i + 3;
        }
        var (kind, length) = Classify(text, i);
        int p = i;
        if (kind == Kind.Space)
        {
            int j = i + length, last = i;
            while (j < n)
            {
                var (k, l) = Classify(text, j);
                if (k != Kind.Space) break;
                last = j;
                j += l;
            }
            if (j == n || text[last] != ' ') return j;
            if (last > i) return last;        // leave the final space to prefix the next piece
            (kind, length) = Classify(text, j); // a single space: it prefixes the run that follows
            p = j;
        }
        int end = p + length;
        while (end < n)
        {
            var (k, l) = Classify(text, end);
            if (k != kind) break;
            end += l;
        }
        return end;
    }

    private static (Kind Kind, int Length) Classify(ReadOnlySpan<char> text, int i)
    {
        char c = text[i];
        if (c < 128)
        {
            if ((uint)((c | 0x20) - 'a') <= 'z' - 'a') return (Kind.Letter, 1);
            if ((uint)(c - '0') <= 9) return (Kind.Number, 1);
            if (c == ' ' || (uint)(c - '\t') <= '\r' - '\t') return (Kind.Space, 1);
            return (Kind.Other, 1);
        }
        if (Rune.DecodeFromUtf16(text[i..], out Rune rune, out int consumed) != System.Buffers.OperationStatus.Done)
            return (Kind.Other, 1); // a lone surrogate
        if (Rune.IsWhiteSpace(rune)) return (Kind.Space, consumed);
        if (Rune.IsLetter(rune)) return (Kind.Letter, consumed);
        if (Rune.IsNumber(rune)) return (Kind.Number, consumed);
        var category = Rune.GetUnicodeCategory(rune);
        if (category is UnicodeCategory.NonSpacingMark or UnicodeCategory.SpacingCombiningMark or UnicodeCategory.EnclosingMark)
            return (Kind.Letter, consumed);
        return (Kind.Other, consumed);
    }
}
