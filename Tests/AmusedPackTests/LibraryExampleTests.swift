// The README's "Using the library" example, compiled and run here so that it stays true: the code between the
// markers below must be the README's Swift block, line for line. Run on a float32 bundle of tiny-256 with the
// record's text-to-image settings (the request's defaults, seed 0), it must draw the image diffusers drew.

import AmusedBind
import AmusedImage
import AmusedKernels
import AmusedModel
import AmusedPack
import AmusedQuantize
import AmusedRead
import AmusedTestSupport
import AmusedVerify
import Foundation
import Testing

/// The README example as a function of where the bundle is and where the PNG goes.
func readmeExample(bundlePath: String, pngPath: String) throws {
    // README-EXAMPLE-BEGIN
    Kernels.configureAllocator()  // once, at start-up: large activations stay in the heap (glibc)
    let bundle = try AmusedBundle(path: bundlePath)        // header, manifest and layout checked; the file is mapped
    let components = try AmusedComponents(bundle: bundle)  // every buffer's SHA-256 checked, weights bound strictly
    let pipeline = try AmusedPipeline(components: components)
    let side = pipeline.transformer.config.sampleSize * pipeline.vqvae.config.scaleFactor  // 256 for amused-256
    var request = GenerationRequest(prompts: ["a photo of a cat"], height: side, width: side)
    request.seed = 0  // torch.Generator().manual_seed(0): the same tokens diffusers samples
    let result = try pipeline.generate(request) { step, steps in print("step \(step) of \(steps)") }
    let image = Image8(width: result.width, height: result.height, channels: 3, pixels: result.images)
    try Data(PNG.encode(image)).write(to: URL(fileURLWithPath: pngPath))
    // README-EXAMPLE-END
}

@Suite("README library example")
struct LibraryExampleTests {
    @Test func theReadmeShowsThisCode() throws {
        let readme = try String(contentsOfFile: FixturePaths.repo + "/README.md", encoding: .utf8)
        let section = try #require(readme.components(separatedBy: "## Using the library").dropFirst().first)
        let block = try #require(section.components(separatedBy: "```swift\n").dropFirst().first?
            .components(separatedBy: "```").first)
        let source = try String(contentsOfFile: #filePath, encoding: .utf8)
        let example = try #require(source.components(separatedBy: "// README-EXAMPLE-BEGIN\n").dropFirst().first?
            .components(separatedBy: "    // README-EXAMPLE-END").first)
        let readmeLines = block.split(separator: "\n", omittingEmptySubsequences: false)
            .filter { !$0.hasPrefix("import ") && !$0.isEmpty }
        let exampleLines = example.split(separator: "\n").map { $0.dropFirst(4) }
        #expect(readmeLines == exampleLines)
    }

    @Test func theExampleDrawsWhatDiffusersDrew() throws {
        let scratch = try ScratchFolder()
        let bundlePath = scratch.path + "/tiny-256.amused", pngPath = scratch.path + "/cat.png"
        try BundleConversion.convert(try Checkpoint(path: FixturePaths.path("records/tiny-256/model")), to: bundlePath,
                                     options: ConversionOptions(policy: try QuantPolicy.preset("fp32")))
        try readmeExample(bundlePath: bundlePath, pngPath: pngPath)

        let record = try ReferenceRecord(path: FixturePaths.path("records/tiny-256"))
        let c = try #require(record.cases.first { $0.name == "t2i_b1_cfg" })
        // The record's case is the request's defaults: one prompt, seed 0, 12 steps, guidance 10, temperature (2, 0).
        #expect(c.json["prompts"]?.arrayValue?.compactMap(\.stringValue) == ["a photo of a cat"])
        #expect(c.json["seed"]?.uint64Value == 0 && c.json["steps"]?.intValue == 12)
        #expect(c.json["guidance_scale"]?.doubleValue == 10)
        let expected = try record.tensor(c, "image", rank: 4).floats()  // uint8 levels, [1, H, W, 3]
        let png = try PNG.decode(Array(try Data(contentsOf: URL(fileURLWithPath: pngPath))))
        #expect(png.pixels.count == expected.count)
        // Tokens are identical at every step (the parity tests show it); pixels may differ by one uint8 level where a
        // decoder output sits on a rounding boundary.
        let worst = zip(png.pixels, expected).map { abs(Float($0) - $1) }.max() ?? 0
        #expect(worst <= 1)
    }
}
