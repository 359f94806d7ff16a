// The README's "Using the library" example, compiled and run here so that it stays true: the code between the
// markers below must be the README's Swift block, line for line. Run on a float32 bundle of tiny-256 with the
// record's text-to-image settings (the request's defaults, seed 0), it must draw the image diffusers drew.

import AmusedBind
import AmusedConvert
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
    let bundle = try AmusedBundle(path: bundlePath)  // header, manifest and layout checked; the file is mapped
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

/// The README's second example, the main job: a checkpoint to an int8 bundle verified against its reference record.
func readmeConversionExample(checkpointPath: String, recordPath: String, bundlePath: String) throws -> Bool {
    // README-CONVERT-BEGIN
    let checkpoint = try Checkpoint(path: checkpointPath)  // any layout the name maps know; configs and names checked
    let options = ConversionOptions(policy: try QuantPolicy.preset("int8"))  // or QuantPolicy.load(path) for your own
    let parity = ParityCheck(record: try ReferenceRecord(path: recordPath))  // a record made by Tools/record.py
    let result = try Conversion.toBundle(checkpoint, to: bundlePath, options: options, parity: parity) { report in
        print(report.text)  // per case: pass or fail, errors, the first tensor out of tolerance
    }  // a failed check throws ParityFailure and leaves bundlePath as it was
    print("\(result.bytes) bytes, \(Double(result.bytes) / Double(result.float32Bytes))× float32")
    // README-CONVERT-END
    return result.parity?.pass ?? false
}

@Suite("README library example")
struct LibraryExampleTests {
    /// Both code blocks of the README's "Using the library" are, line for line, the functions above.
    @Test(arguments: [(1, "EXAMPLE"), (2, "CONVERT")])
    func theReadmeShowsThisCode(block index: Int, marker: String) throws {
        let readme = try String(contentsOfFile: FixturePaths.repo + "/README.md", encoding: .utf8)
        let section = try #require(
            readme.components(separatedBy: "## Using the library").dropFirst().first?
                .components(separatedBy: "\n## ").first)
        let blocks = section.components(separatedBy: "```swift\n").dropFirst().map {
            $0.components(separatedBy: "```")[0]
        }
        let block = try #require(blocks.count >= index ? blocks[index - 1] : nil)
        let source = try String(contentsOfFile: #filePath, encoding: .utf8)
        let example = try #require(
            source.components(separatedBy: "// README-\(marker)-BEGIN\n").dropFirst().first?
                .components(separatedBy: "    // README-\(marker)-END").first)
        let readmeLines = block.split(separator: "\n", omittingEmptySubsequences: false)
            .filter { !$0.hasPrefix("import ") && !$0.isEmpty }
        let exampleLines = example.split(separator: "\n").map { $0.dropFirst(4) }
        #expect(readmeLines == exampleLines)
    }

    /// The conversion example on the tiny fixture against its record's component cases (the pipeline cases are run
    /// by the bundle tests; here they would add minutes in a debug build): the bundle is written and passes, with
    /// the report stored in it. The same checkpoint with 64 bytes of its text encoder's weights damaged
    /// converts to a bundle that fails the check, and nothing is written.
    @Test func theConversionExampleVerifiesAndRefuses() throws {
        let scratch = try ScratchFolder()
        let fm = FileManager.default
        let record = scratch.path + "/record"
        try fm.createDirectory(atPath: record, withIntermediateDirectories: true)
        try fm.copyItem(
            atPath: FixturePaths.path("records/tiny-256/record.safetensors"),
            toPath: record + "/record.safetensors")
        let original = try Checkpoint.readJSON(FixturePaths.path("records/tiny-256/record.json"))
        var json = try #require(original.objectValue)
        let components = ["text_encoder", "transformer", "vq_decode", "vq_encode"]
        json.set(
            "cases",
            .array(
                try #require(original["cases"]?.arrayValue).filter {
                    components.contains($0["kind"]?.stringValue ?? "")
                }))
        json.set("model", .string(FixturePaths.path("records/tiny-256/model")))
        try Data(JSONValue.object(json).serialized.utf8).write(to: URL(fileURLWithPath: record + "/record.json"))

        let good = scratch.path + "/tiny-256-int8.amused"
        #expect(
            try readmeConversionExample(
                checkpointPath: FixturePaths.path("records/tiny-256/model"),
                recordPath: record, bundlePath: good))
        let stored = try #require(try AmusedBundle(path: good).manifest.parity.map(JSONValue.object))
        #expect(stored["pass"]?.boolValue == true)
        #expect(stored["model"]?.stringValue == "tiny-256-int8.amused")  // the name only: bundles are reproducible

        let damaged = scratch.path + "/damaged"
        try fm.copyItem(atPath: FixturePaths.path("records/tiny-256/model"), toPath: damaged)
        let weights = damaged + "/text_encoder/model.safetensors"
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: weights)))
        let headerLength = Int(bytes[0..<8].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
        let header = try StrictJSONParser(path: weights).parse(bytes[8..<(8 + headerLength)])
        let offsets = try #require(header["text_model.final_layer_norm.weight"]?["data_offsets"]?.arrayValue)
        let start = 8 + headerLength + (offsets[0].intValue ?? 0)
        for i in start..<(start + 64) { bytes[i] = 0x41 }  // the last norm's first 16 gains become about 12 (from ~1)
        try Data(bytes).write(to: URL(fileURLWithPath: weights))
        let bad = scratch.path + "/damaged.amused"
        #expect(throws: ParityFailure.self) {
            _ = try readmeConversionExample(checkpointPath: damaged, recordPath: record, bundlePath: bad)
        }
        #expect(!fm.fileExists(atPath: bad))
    }

    @Test func theExampleDrawsWhatDiffusersDrew() throws {
        let scratch = try ScratchFolder()
        let bundlePath = scratch.path + "/tiny-256.amused", pngPath = scratch.path + "/cat.png"
        try BundleConversion.convert(
            try Checkpoint(path: FixturePaths.path("records/tiny-256/model")), to: bundlePath,
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
