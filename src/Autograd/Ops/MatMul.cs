using Memopt.Kernels;
using Memopt.Tensors;

namespace Memopt.Autograd;

public static partial class Ops
{
    /// <summary>
    /// C = op(A)·op(B), op(X) = X or Xᵀ (the last two dims), for A [batch?, ·, ·] and B [batch?, ·, ·]; a rank-2
    /// operand is broadcast over the other's batch (see <see cref="MatMulShape"/>).
    /// Backward: d op(A) = dC·op(B)ᵀ and d op(B) = op(A)ᵀ·dC, laid out for the stored (possibly transposed) operand;
    /// for a broadcast operand the per-batch gradients are summed into its one matrix by the GEMM itself.
    /// Keeps B only if A needs a gradient and A only if B does. A and B share a dtype (float32 or bf16), and so does C.
    /// </summary>
    public static Var MatMul(Var a, Var b, bool transA = false, bool transB = false, string op = "matmul",
        MemoryCategory category = MemoryCategory.Activations)
    {
        Check.SameDType(op, a.Value, b.Value, "a", "b");
        var s = MatMulShape.Of(a.Shape, b.Shape, transA, transB);
        var c = NewOutput(a, s.Output, op, category);
        Kernels.MatMul.Forward(a.Value, b.Value, c.Value, transA, transB);

        bool needA = a.RequiresGrad, needB = b.RequiresGrad;
        Tensor[] saved = (needA, needB) switch
        {
            (true, true) => [a.Value, b.Value],
            (true, false) => [b.Value],
            _ => [a.Value],
        };
        Tape.Record(op, c, [a, b], saved, (dc, kept) =>
        {
            // dC as the GEMM sees it: [batch?, M, N], contiguous.
            var dC = MatrixOperand.Dense(dc);
            if (needA)
            {
                var bKept = MatrixOperand.Dense(kept[needB ? 1 : 0]);
                var dA = MatrixOperand.Dense(a.GradBuffer(op));
                if (!transA) // dA [M,K] += dC [M,N] · op(B)ᵀ [N,K]
                    Kernels.MatMul.Gemm(dC, bKept.AsTransposed(!transB), dA, s.M, s.K, s.N, s.Batch, accumulate: true);
                else         // dA [K,M] += op(B) [K,N] · dCᵀ [N,M]
                    Kernels.MatMul.Gemm(bKept.AsTransposed(transB), dC.AsTransposed(true), dA, s.K, s.M, s.N, s.Batch, accumulate: true);
            }
            if (needB)
            {
                var aKept = MatrixOperand.Dense(kept[0]);
                var dB = MatrixOperand.Dense(b.GradBuffer(op));
                if (!transB) // dB [K,N] += op(A)ᵀ [K,M] · dC [M,N]
                    Kernels.MatMul.Gemm(aKept.AsTransposed(!transA), dC, dB, s.K, s.N, s.M, s.Batch, accumulate: true);
                else         // dB [N,K] += dCᵀ [N,M] · op(A) [M,K]
                    Kernels.MatMul.Gemm(dC.AsTransposed(true), aKept.AsTransposed(transA), dB, s.N, s.K, s.M, s.Batch, accumulate: true);
            }
        });
        return c;
    }
}
