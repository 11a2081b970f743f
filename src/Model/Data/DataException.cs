namespace Memopt.Model.Data;

/// <summary>
/// Bad or unusable training data: a missing path, an empty file, a corpus with no documents, a split too small for one
/// batch, a corrupt cache file. The message names the file (or split) and the problem, so a runner can print it as is.
/// </summary>
public class DataException(string message, Exception? inner = null) : Exception(message, inner);
