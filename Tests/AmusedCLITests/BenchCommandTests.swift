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
        let forced = try runAmused(["bench", FixturePaths.path("records/tiny-256/model"), "--runs", "1",
                                    "--part", "transformer"], environment: ["AMUSED_GEMM": "blas"])
        #expect(forced.stdout.hasPrefix("products: OpenBLAS") || forced.stdout.hasPrefix("products: Accelerate"))
    }
}
