using Memopt.Model.Data;

namespace Memopt.Tests.Data;

public class CorpusReaderTests
{
    private static Corpus Read(string path) => CorpusReader.Read(CorpusFiles.Find(path));

    [Fact]
    public void Jsonl_bad_lines_are_counted_and_the_rest_is_used()
    {
        using var dir = new TempDirectory();
        string file = dir.File("c.jsonl", string.Join("\n",
            """{"text": "first document", "meta": {"source": "x"}}""",
            """{"text": "second\ndocument"}""",
            """{"text": 42}""",
            """{"title": "no text"}""",
            """not json at all""",
            "",
            """[1, 2]""",
            """{"text": "   "}""",
            """{"text": "third, with unicode ż 😀"}""",
            """{"text": "truncated""") + "\r\n");
        var corpus = Read(file);
        Assert.Equal(["first document", "second\ndocument", "third, with unicode ż 😀"], corpus.Documents);
        Assert.Equal(6, corpus.BadLines);
        Assert.Equal(5, corpus.BadLineExamples.Count);
        Assert.Contains($"{file}:3: \"text\" is not a string", corpus.BadLineExamples[0]);
        Assert.Contains($"{file}:4: no \"text\" field", corpus.BadLineExamples[1]);
        Assert.Contains($"{file}:5: bad JSON", corpus.BadLineExamples[2]);
    }

    [Fact]
    public void Jsonl_line_with_invalid_utf8_is_a_bad_line()
    {
        using var dir = new TempDirectory();
        string file = dir.Sub("bad.jsonl");
        File.WriteAllBytes(file, [.. """{"text": "ok"}"""u8, (byte)'\n', .. """{"text": "x"""u8, 0xC3, 0x28, .. "\"}\n"u8]);
        var corpus = Read(file);
        Assert.Equal(["ok"], corpus.Documents);
        Assert.Equal(1, corpus.BadLines);
    }

    [Fact]
    public void Missing_path_is_reported_with_its_name()
    {
        var e = Assert.Throws<DataException>(() => CorpusFiles.Find("/nonexistent/memopt/corpus.txt"));
        Assert.Equal("/nonexistent/memopt/corpus.txt: no such file or directory", e.Message);
    }

    [Theory]
    [InlineData("empty.txt", "", "file is empty")]
    [InlineData("blank.txt", " \n\n \t\n", "file is empty")]
    [InlineData("empty.jsonl", "", "file is empty")]
    [InlineData("blank.jsonl", "\n\n", "file is empty")]
    [InlineData("allbad.jsonl", "{\"x\": 1}\nnope\n", "no documents: all 2 lines are malformed (line 1: no \"text\" field)")]
    [InlineData("data.csv", "a,b", "unsupported file type")]
    public void Empty_or_useless_files_are_reported_with_their_name(string name, string content, string problem)
    {
        using var dir = new TempDirectory();
        string file = dir.File(name, content);
        var e = Assert.Throws<DataException>(() => Read(file));
        Assert.StartsWith(file, e.Message);
        Assert.Contains(problem, e.Message);
    }

    [Fact]
    public void Empty_file_inside_a_directory_is_reported()
    {
        using var dir = new TempDirectory();
        dir.File("a.txt", "text");
        string empty = dir.File("sub/b.txt", "");
        var e = Assert.Throws<DataException>(() => Read(dir.Path));
        Assert.Equal($"{empty}: file is empty (no text)", e.Message);
    }

    [Fact]
    public void Directory_without_corpus_files_is_reported()
    {
        using var dir = new TempDirectory();
        dir.File("readme.md", "# not a corpus");
        var e = Assert.Throws<DataException>(() => Read(dir.Path));
        Assert.Contains("no .txt or .jsonl files", e.Message);
    }

    [Fact]
    public void Invalid_utf8_text_file_is_reported_with_the_offset()
    {
        using var dir = new TempDirectory();
        string file = dir.Sub("latin1.txt");
        File.WriteAllBytes(file, [(byte)'a', (byte)'b', 0xE9, (byte)'c']);
        var e = Assert.Throws<DataException>(() => Read(file));
        Assert.Equal($"{file}: not valid UTF-8 (at byte 2)", e.Message);
    }

    [Fact]
    public void Text_files_split_into_documents_at_blank_lines()
    {
        using var dir = new TempDirectory();
        Assert.Equal(["one line\nsecond line of the same document"], Read(dir.File("one.txt", "one line\r\nsecond line of the same document\r\n")).Documents);
        Assert.Equal(["para one\nstill one", "para two", "  indented three"],
            Read(dir.File("many.txt", "\npara one\nstill one\n\n\npara two\n \t \n  indented three\n")).Documents);
        string bom = dir.Sub("bom.txt");
        File.WriteAllBytes(bom, [0xEF, 0xBB, 0xBF, .. "x\n\ny"u8]);
        Assert.Equal(["x", "y"], Read(bom).Documents);
    }

    [Fact]
    public void Directory_is_read_recursively_in_sorted_order()
    {
        using var dir = new TempDirectory();
        dir.File("b.txt", "from b");
        dir.File("a/z.jsonl", "{\"text\": \"from a/z\"}\n");
        dir.File("a/c.txt", "from a/c");
        dir.File("notes.md", "ignored");
        var corpus = Read(dir.Path);
        Assert.Equal(["from a/c", "from a/z", "from b"], corpus.Documents);
    }

    [Fact]
    public void Content_hash_changes_with_content_and_not_with_location()
    {
        using var one = new TempDirectory();
        using var two = new TempDirectory();
        one.File("x.txt", "same");
        two.File("x.txt", "same");
        string h1 = CorpusFiles.Find(one.Path).ContentHash();
        Assert.Equal(h1, CorpusFiles.Find(two.Path).ContentHash());
        two.File("x.txt", "different");
        Assert.NotEqual(h1, CorpusFiles.Find(two.Path).ContentHash());
    }
}
