namespace Memopt.Kernels;

/// <summary>
/// Scalar functions usable inside kernels (plain static float math that ILGPU compiles for CUDA and the CPU)
/// and their float64 twins for the CPU references.
/// </summary>
public static class KernelMath
{
    public const float InvSqrt2 = 0.70710678118654752f;
    public const float InvSqrt2Pi = 0.39894228040143268f;

    /// <summary>
    /// erfc(z) for z ≥ 0 ~ t·exp(−z² + P(t)), Numerical Recipes' Chebyshev fit, fractional error &lt; 1.2e-7 over the
    /// whole range: computed directly, never as 1 − erf, which cancels to nothing by z ≈ 4 (erfc(4) ≈ 1.5e-8). The rounding of
    /// z² inside exp adds ~z²·6e-8 relative.
    /// </summary>
    public static float Erfc(float z)
    {
        float t = 1f / (1f + 0.5f * z);
        float poly = -1.26551223f + t * (1.00002368f + t * (0.37409196f + t * (0.09678418f + t * (-0.18628806f
                   + t * (0.27886807f + t * (-1.13520398f + t * (1.48851587f + t * (-0.82215223f + t * 0.17087277f))))))));
        return t * MathF.Exp(-z * z + poly);
    }

    /// <summary>
    /// Φ(x), the standard normal CDF, from one erfc whatever the sign: t = Φ(−|x|) = ½·erfc(|x|/√2), then t below 0 and
    /// 1 − t above. The tail keeps its relative precision (½(1 + erf(x/√2)) cancelled to a 1e-3 relative error of GELU
    /// near x = −5), and a warp with mixed signs takes no second path.
    /// </summary>
    public static float NormalCdf(float x)
    {
        float tail = 0.5f * Erfc(MathF.Abs(x) * InvSqrt2);
        return x >= 0f ? 1f - tail : tail;
    }

    /// <summary>erf in float64: Maclaurin series below 3, 1 − <see cref="ErfcDouble"/> above (accurate to ~1e-14).</summary>
    public static double ErfDouble(double x)
    {
        double ax = Math.Abs(x);
        double r;
        if (ax < 3.0)
        {
            double term = ax, sum = ax, x2 = ax * ax;
            for (int n = 1; n < 200; n++)
            {
                term *= -x2 / n;
                double add = term / (2 * n + 1);
                sum += add;
                if (Math.Abs(add) < 1e-17 * Math.Abs(sum)) break;
            }
            r = 2.0 / Math.Sqrt(Math.PI) * sum;
        }
        else r = 1 - ErfcDouble(ax);
        return x < 0 ? -r : r;
    }

    /// <summary>
    /// erfc in float64 for x ≥ 0: 1 − erf below 3 (erfc ≥ 2e-5 there, so the difference keeps ~11 digits), the
    /// continued fraction above, which keeps its relative precision however far the tail goes.
    /// </summary>
    public static double ErfcDouble(double x)
    {
        if (x < 3.0) return 1 - ErfDouble(x);
        // Lentz evaluation of erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...)))).
        double f = x, c = x, d = 0;
        for (int n = 1; n < 300; n++)
        {
            double an = n * 0.5;
            d = x + an * d; d = 1 / d;
            c = x + an / c;
            double delta = c * d;
            f *= delta;
            if (Math.Abs(delta - 1) < 1e-16) break;
        }
        return Math.Exp(-x * x) / Math.Sqrt(Math.PI) / f;
    }
}
