namespace Memopt.Model.Data;

/// <summary>
/// Documents in corpus order, before splitting. For the synthetic corpus each document also carries the number of chain
/// symbols ("words") it renders and the true model's negative log-likelihood of them, so a split can state the best
/// achievable loss on itself.
/// </summary>
public sealed class Corpus
{
    public required IReadOnlyList<string> Documents { get; init; }
    /// <summary>Synthetic corpus only: chain symbols per document (the closing paragraph break included).</summary>
    public long[]? DocumentWords { get; init; }
    /// <summary>Synthetic corpus only: −ln P(document | previous paragraph break) under the generating chain, in nats.</summary>
    public double[]? DocumentNllNats { get; init; }
    /// <summary>Synthetic corpus only: the chain symbols of each document as generated (closing paragraph break included), so word-level statistics need no re-tokenization.</summary>
    public int[][]? DocumentSymbols { get; init; }
    /// <summary>.jsonl lines that were not a JSON object with a non-empty "text" string (skipped).</summary>
    public int BadLines { get; init; }
    /// <summary>The first few bad lines as "file:line: reason".</summary>
    public IReadOnlyList<string> BadLineExamples { get; init; } = [];
    /// <summary>Where the documents came from, for reports.</summary>
    public required string Description { get; init; }

    /// <summary>Text written between documents (and after the last) when a split is turned into one token stream.</summary>
    public const string DocumentSeparator = "\n\n";
}
