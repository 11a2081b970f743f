using Memopt.Model.Data;
using Memopt.Runner;
using Memopt.Runner.Commands;

namespace Memopt.Tests.Data;

public class PrepareCommandTests
{
    [Fact]
    public void Prints_documents_tokens_and_sequences_per_split()
    {
        using var dir = new TempDirectory();
        string data = dir.File("corpus.txt", string.Join("\n\n", SmallData.Corpus(5000).Documents));
        var options = new PrepareOptions { Data = data, VocabSize = 300, SeqLen = 8, CacheDir = dir.Sub("cache") };
        var output = new StringWriter();
        Assert.Equal(0, PrepareCommand.Run(options, output, TextWriter.Null));
        string text = output.ToString();
        Assert.Contains("documents", text);
        Assert.Contains("sequences (T=8)", text);
        foreach (string split in new[] { "train", "val", "test" }) Assert.Matches($@"(?m)^{split}\s+[\d,]+\s+[\d,]+\s+[\d,]+$", text);
        Assert.Contains("(built)", text);
        output = new StringWriter();
        PrepareCommand.Run(options, output, TextWriter.Null);
        Assert.Contains("(reused)", output.ToString());
    }

    [Fact]
    public void Synthetic_corpus_reports_the_entropy_bound()
    {
        var options = new PrepareOptions { VocabSize = 300, SeqLen = 8, NoCache = true, CorpusWords = 4000 };
        var output = new StringWriter();
        PrepareCommand.Run(options, output, TextWriter.Null);
        Assert.Contains("nats/word", output.ToString());
        Assert.Contains("best val", output.ToString());
        Assert.Matches(@"bigram val  \d+\.\d{4} nats/token = perplexity \d+\.\d\d, [+-]\d+\.\d% over the best", output.ToString());
        Assert.Contains($"{SyntheticLanguage.DefaultVocabularySize}-word language", output.ToString());
        output = new StringWriter();
        options.SyntheticVocab = 200; // --synthetic-vocab reaches the generator
        PrepareCommand.Run(options, output, TextWriter.Null);
        Assert.Contains("200-word language", output.ToString());
    }

    [Fact]
    public void Bad_input_is_a_user_error()
    {
        var e = Assert.Throws<UserError>(() => PrepareCommand.Run(new PrepareOptions { Data = "/no/such/corpus.txt", NoCache = true }, TextWriter.Null, TextWriter.Null));
        Assert.Contains("/no/such/corpus.txt: no such file or directory", e.Message);
        Assert.Throws<UserError>(() => PrepareCommand.Run(new PrepareOptions { Tokenizer = "gpt5", NoCache = true }, TextWriter.Null, TextWriter.Null));
    }
}
