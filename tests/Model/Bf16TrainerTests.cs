using Memopt.Model;
using Memopt.Model.Data;
using Memopt.Model.Training;
using Memopt.Tensors;
using Xunit;

namespace Memopt.Tests.Model;

/// <summary>The training loop and its no-grad evaluation with a bf16 model, next to the same run in float32.</summary>
public class Bf16TrainerTests(ITestOutputHelper output)
{
    [Fact]
    public void Trainer_runs_and_evaluates_in_bf16_close_to_float32()
    {
        var cache = Directory.CreateTempSubdirectory("memopt-bf16-train").FullName;
        try
        {
            var data = DataPipeline.Prepare(TrainerTests.SmallCorpus(cache));
            var options = new TrainingOptions { BatchSize = 8, Steps = 8, LearningRate = 3e-3f, EvalBatches = 3, TimingWarmupSteps = 1, TimingSteps = 5 };
            RunMetrics Train(Precision precision)
            {
                using var dev = ComputeDevice.Create(DeviceKind.Cpu);
                using var model = new TransformerLM(dev, TrainerTests.SmallModel, seed: 1, precision);
                return new Trainer(model, data, options with { Bf16 = precision == Precision.Bf16 }).Run("synthetic");
            }
            var f32 = Train(Precision.Fp32);
            var bf16 = Train(Precision.Bf16);
            output.WriteLine($"val loss float32 {f32.ValLoss:F5}, bf16 {bf16.ValLoss:F5}; activations peak {f32.Memory.PeakPerCategory["activations"]} -> {bf16.Memory.PeakPerCategory["activations"]} B");
            // Same data order and initial weights; the evaluation (no-grad, bf16 activations) lands within the issue's 2%.
            Assert.True(Math.Abs(bf16.ValLoss - f32.ValLoss) <= 0.02 * f32.ValLoss, $"val loss bf16 {bf16.ValLoss} vs float32 {f32.ValLoss}");
            Assert.True(bf16.ValLoss < bf16.LossCurve[0], "bf16 training lowers the loss");
            Assert.True(bf16.Memory.PeakPerCategory["activations"] < 0.6 * f32.Memory.PeakPerCategory["activations"]);

            // The options and the model must agree on the precision.
            using var dev = ComputeDevice.Create(DeviceKind.Cpu);
            using var fp32Model = new TransformerLM(dev, TrainerTests.SmallModel, seed: 1);
            var e = Assert.Throws<ArgumentException>(() => new Trainer(fp32Model, data, options with { Bf16 = true }));
            Assert.Contains("--bf16 is on but the model was built in fp32", e.Message);
        }
        finally
        {
            Directory.Delete(cache, recursive: true);
        }
    }
}
