namespace Memopt.Tensors;

/// <summary>
/// How GEMMs whose operands are both float32 run on a device (the counterpart of PyTorch's
/// torch.backends.cuda.matmul.allow_tf32 and torch.set_float32_matmul_precision). Off CUDA, and for any operand that
/// is not float32, every mode runs the IEEE kernels.
/// </summary>
public enum Fp32Matmul
{
    /// <summary>IEEE float32 fused multiply-adds on the SIMT kernels (PyTorch's default, "highest").</summary>
    Ieee,
    /// <summary>Operands rounded to TF32 (10-bit mantissa) on the tensor cores, fp32 accumulation (PyTorch's allow_tf32).</summary>
    Tf32,
    /// <summary>3xTF32 on the tensor cores: each operand split into a TF32 big part and a TF32 small part, three products
    /// per product (small·big + big·small + big·big); about 2^-21 relative error per product, near IEEE fp32.</summary>
    Tf32x3,
}

/// <summary>The modes' command-line names (ieee, tf32, 3xtf32), written and read in one place.</summary>
public static class Fp32MatmulNames
{
    public static string Name(this Fp32Matmul mode) => mode switch { Fp32Matmul.Tf32 => "tf32", Fp32Matmul.Tf32x3 => "3xtf32", _ => "ieee" };

    /// <summary>The mode named <paramref name="name"/> (any case); an <see cref="ArgumentException"/> naming the choices otherwise.</summary>
    public static Fp32Matmul Parse(string name)
    {
        foreach (var mode in Enum.GetValues<Fp32Matmul>())
            if (string.Equals(mode.Name(), name, StringComparison.OrdinalIgnoreCase)) return mode;
        throw new ArgumentException($"--fp32-matmul must be ieee, tf32 or 3xtf32, got '{name}'");
    }
}
