namespace Memopt.Model.Data;

public enum TokenizerKind { Bpe, Cl100k, O200k }

/// <summary>Everything <see cref="DataPipeline.Prepare"/> needs; the defaults are those of <c>memopt prepare</c>.</summary>
public sealed record DataOptions
{
    /// <summary>A .txt / .jsonl file or a directory of them; null: the embedded synthetic corpus.</summary>
    public string? DataPath { get; init; }
    public TokenizerKind Tokenizer { get; init; } = TokenizerKind.Bpe;
    /// <summary>Size of the trained BPE (≥ 256); ignored for the pretrained encodings.</summary>
    public int VocabSize { get; init; } = 10_000;
    /// <summary>T: the model's context; sequences are T+1 tokens with stride T.</summary>
    public int SeqLen { get; init; } = 256;
    /// <summary>Seeds the synthetic corpus and the document split (batch order has its own seed in <see cref="BatchIterator"/>).</summary>
    public ulong Seed { get; init; } = 1;
    /// <summary>Where tokenizers and tokenized splits are cached; null: no cache.</summary>
    public string? CacheDir { get; init; } = "./cache";
    /// <summary>Length of the synthetic corpus in words (chain symbols); ignored with <see cref="DataPath"/>.</summary>
    public long CorpusWords { get; init; } = SyntheticCorpusOptions.DefaultWords;
    /// <summary>Number of distinct words of the synthetic language.</summary>
    public int SyntheticVocabulary { get; init; } = SyntheticLanguage.DefaultVocabularySize;
    /// <summary>Progress and cache messages (e.g. "rebuilding: FILE is corrupt"); null: silent.</summary>
    public Action<string>? Log { get; init; }
}
