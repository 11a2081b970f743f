using Memopt.Kernels;
using Memopt.Tensors;

namespace Memopt.Autograd;

public static partial class Ops
{
    /// <summary>The weight a GEMM with x reads: its bf16 shadow when x is bf16 and it has one, else the weight itself.</summary>
    internal static Tensor GemmWeight(Var x, Var weight) =>
        x.Value.DType == DType.BF16 && weight is Parameter { Bf16Copy: { } shadow } ? shadow : weight.Value;

    /// <summary>x [..., in], weight [out, in], bias [out] or none: (out, in, rows of x), or a ShapeException naming the op.</summary>
    internal static (int Out, int In, int Rows) CheckLinear(string op, Var x, Var weight, Var? bias)
    {
        Check.That(weight.Shape.Rank == 2, op, $"weight {weight.Shape} must be [out, in]");
        int outFeatures = weight.Shape[0], inFeatures = weight.Shape[1];
        Check.That(x.Shape.Last == inFeatures, op, $"input {x.Shape} must end in {inFeatures}, the in-features of weight {weight.Shape}");
        if (bias is not null)
            Check.That(bias.Shape.Rank == 1 && bias.Shape[0] == outFeatures, op, $"bias {bias.Shape} must be [{outFeatures}] for weight {weight.Shape}");
        Check.That(x.Shape.Rows <= int.MaxValue, op, $"input {x.Shape} has more than 2^31-1 rows");
        return (outFeatures, inFeatures, (int)x.Shape.Rows);
    }

    /// <summary>
    /// A fully connected layer in PyTorch's convention (so checkpoints load unchanged): y = x·Wᵀ + b with
    /// W [out, in], b [out], x [..., in] → y [..., out]; every leading dimension of x is a row of one 2-D GEMM.
    /// Backward: dx += dy·W, dW += dyᵀ·x (summed over all rows), db += Σ_rows dy.
    /// Keeps W only if x needs a gradient and x only if W does.
    /// Mixed precision: with a bf16 x and a parameter that has a bf16 shadow (<see cref="Parameter.Bf16Copy"/>), the
    /// GEMMs read the shadow (so both operands are bf16) and y is bf16; dW still accumulates, in float32, into the
    /// parameter's float32 gradient. The bias is added in the GEMM's epilogue (no second pass over y), in float32 to
    /// the float32 product, so a bf16 y is rounded once.
    /// </summary>
    public static Var Linear(Var x, Var weight, Var? bias = null, string op = "linear")
    {
        var (outFeatures, inFeatures, rows) = CheckLinear(op, x, weight, bias);
        var w = GemmWeight(x, weight);

        var y = NewOutput(x, x.Shape.WithLast(outFeatures), op);
        Kernels.MatMul.Gemm(MatrixOperand.Rows(x.Value), MatrixOperand.Dense(w, transposed: true), MatrixOperand.Rows(y.Value),
            rows, outFeatures, inFeatures, bias: bias?.Value);

        bool needX = x.RequiresGrad, needW = weight.RequiresGrad;
        Tensor[] saved = (needX, needW) switch
        {
            (true, true) => [w, x.Value],
            (true, false) => [w],
            (false, true) => [x.Value],
            _ => [],
        };
        Var[] inputs = bias is null ? [x, weight] : [x, weight, bias];
        Tape.Record(op, y, inputs, saved, (dy, kept) =>
        {
            var dY = MatrixOperand.Rows(dy);
            if (needX) // dx [R,in] += dy [R,out] · W [out,in]
                Kernels.MatMul.Gemm(dY, MatrixOperand.Dense(kept[0]), MatrixOperand.Rows(x.GradBuffer(op)),
                    rows, inFeatures, outFeatures, accumulate: true);
            if (needW) // dW [out,in] += dyᵀ [out,R] · x [R,in]
                Kernels.MatMul.Gemm(dY.AsTransposed(true), MatrixOperand.Rows(kept[needX ? 1 : 0]), MatrixOperand.Dense(weight.GradBuffer(op)),
                    outFeatures, inFeatures, rows, accumulate: true);
            if (bias is { RequiresGrad: true }) BiasAdd.Backward(dy, bias.GradBuffer(op));
        });
        return y;
    }
}
