// `amused bench`: the JSON that Tools/bench.py reads — a best and median time per part (transformer, VQ decode, text
// encoder), the peak RSS, and which library did the matrix products.

import AmusedRead
import AmusedTestSupport
import Foundation
import Testing

@Suite("amused bench")
struct BenchCommandTests {
    @Test func jsonHasEachPartAndTheProductsLibrary() throws {
        let result = try runAmused(["bench", FixturePaths.path("records/tiny-256/model"), "--runs", "1", "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let report = try StrictJSONParser(path: "stdout").parse(Array(result.stdout.utf8))
        for part in ["transformer", "vq_decode", "text_encoder"] {
            let p = try #require(report[part], "\(part)")
            #expect((p["best_seconds"]?.doubleValue ?? -1) >= 0)
            #expect((p["median_seconds"]?.doubleValue ?? -1) >= (p["best_seconds"]?.doubleValue ?? 0))
            #expect((p["peak_rss_mib"]?.doubleValue ?? 0) > 0)
        }
        #expect(report["transformer"]?["grid"]?.intValue == 8)  // tiny-256's sample_size
        let products = try #require(report["products"]?.stringValue)
        // BLAS is named either way: as the library in use, or as what AMUSED_GEMM=blas would use instead.
        #expect(products.contains("OpenBLAS") || products.contains("Accelerate"), "\(products)")
        let forced = try runAmused(
            [
                "bench", FixturePaths.path("records/tiny-256/model"), "--runs", "1",
                "--part", "transformer",
            ], environment: ["AMUSED_GEMM": "blas"])
        #expect(forced.stdout.hasPrefix("cpu: "), "the CPU comes first: \(forced.stdout)")
        #expect(forced.stdout.contains("\nproducts: OpenBLAS") || forced.stdout.contains("\nproducts: Accelerate"))
        #expect(report["cpu"]?.stringValue?.isEmpty == false)
    }

    /// `--part train-step` times a LoRA step; `--part gradients` checks a step's gradients against a record of
    /// Tools/lora_grad_records.py (here tiny-256's, within the tests' 1e-4) and fails cleanly without --reference.
    @Test func trainStepAndGradientParts() throws {
        let model = FixturePaths.path("records/tiny-256/model")
        let step = try runAmused(["bench", model, "--part", "train-step", "--batch", "1", "--runs", "1", "--json"])
        #expect(step.status == 0, "\(step.stderr)")
        let report = try StrictJSONParser(path: "stdout").parse(Array(step.stdout.utf8))
        #expect((report["train_step"]?["best_seconds"]?.doubleValue ?? -1) >= 0)
        let grads = try runAmused([
            "bench", model, "--part", "gradients", "--runs", "1", "--json",
            "--reference", FixturePaths.path("records/tiny-256/finetune"),
        ])
        #expect(grads.status == 0, "\(grads.stderr)")
        let g = try StrictJSONParser(path: "stdout").parse(Array(grads.stdout.utf8))["gradients"]
        #expect(g?["tensors"]?.intValue == 72)
        #expect((g?["worst_relative_error"]?.doubleValue ?? 1) <= 1e-4)
        let missing = try runAmused(["bench", model, "--part", "gradients"])
        #expect(missing.status != 0 && missing.stderr.contains("--reference"))
    }
}
