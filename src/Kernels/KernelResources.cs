using System.Runtime.InteropServices;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using Memopt.Tensors;

namespace Memopt.Kernels;

/// <summary>What the CUDA driver made of one loaded kernel: registers per thread, local (spill) bytes per thread, resident groups per SM.</summary>
public readonly record struct KernelResources(int Registers, int LocalBytes, int GroupsPerMultiprocessor)
{
    public override string ToString() => $"{Registers} registers, {LocalBytes} B local, {GroupsPerMultiprocessor} groups/SM";

    /// <summary>The driver's figures for a loaded kernel (its launcher delegate) launched with <paramref name="groupSize"/> threads and
    /// <paramref name="dynamicSharedBytes"/> of dynamic shared memory; null off CUDA.</summary>
    public static KernelResources? Of(ComputeDevice device, Delegate launcher, int groupSize, int dynamicSharedBytes = 0)
    {
        if (!device.IsCuda || KernelUtil.GetKernel(launcher) is not CudaKernel cuda) return null;
        return Of(device, cuda, groupSize, dynamicSharedBytes);
    }

    /// <summary>The same for a kernel loaded without a launcher of ILGPU's (the tensor-core GEMM's wgmma module).</summary>
    public static KernelResources Of(ComputeDevice device, CudaKernel cuda, int groupSize, int dynamicSharedBytes = 0)
    {
        CuFuncGetAttribute(out int registers, CuFuncAttributeNumRegs, cuda.FunctionPtr);
        CuFuncGetAttribute(out int local, CuFuncAttributeLocalSizeBytes, cuda.FunctionPtr);
        int groups = device.Accelerator.EstimateMaxActiveGroupsPerMultiprocessor(cuda, groupSize, dynamicSharedBytes);
        return new KernelResources(registers, local, groups);
    }

    [DllImport("libcuda.so.1", EntryPoint = "cuFuncGetAttribute")]
    private static extern int CuFuncGetAttribute(out int value, int attribute, IntPtr function);

    private const int CuFuncAttributeLocalSizeBytes = 3, CuFuncAttributeNumRegs = 4;
}
