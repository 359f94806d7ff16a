// Export: GGUF written by AmusedKit holds the values (and, for Q8_0, the very bytes) gguf-py produces; conversion
// through safetensors and GGUF preserves every value the source readers returned.

import AmusedCore
import AmusedRead
import AmusedTestSupport
import Foundation
import Testing

@Suite("writers")
struct WriterTests {
    /// Q8_0 quantization is byte-identical with gguf-py's (the fixture's q8 tensor was quantized by gguf-py from the
    /// float32 values stored as gguf_source/q8).
    @Test func q8MatchesGGUFPy() throws {
        let expected = try SafetensorsFile(path: FixturePaths.path("formats/expected.safetensors"))
        let source = try expected.tensor(named: "gguf_source/q8")
        let scratch = try ScratchFolder()
        let ours = scratch.path + "/q8.gguf"
        try GGUFWriter.write([("q8", source)], type: .q8_0, to: ours)
        let theirs = try GGUFFile(path: FixturePaths.path("formats/model.gguf"))
        let mine = try GGUFFile(path: ours)
        #expect(try mine.tensor(named: "q8").floats() == theirs.tensor(named: "q8").floats())
        #expect(mine.ggmlTypes["q8"] == 8)
    }

    /// PyTorch → safetensors → read back, and PyTorch → GGUF (F32) → read back: the values torch.load returns.
    @Test(arguments: ["safetensors", "gguf"])
    func conversionKeepsValues(_ format: String) throws {
        let scratch = try ScratchFolder()
        let out = scratch.path + "/out." + format
        let result = try convertWithCLI(FixturePaths.path("formats/state_dict.pt"), format: format, out: out)
        #expect(result == 0)
        let written = try openWeights(path: out)
        let expected = try SafetensorsFile(path: FixturePaths.path("formats/expected.safetensors"))
        for name in written.names {
            let reference = try expected.tensor(named: "torch/" + name)
            let ours = try written.tensor(named: name)
            #expect(ours.elementCount == reference.elementCount, "\(name)")
            if format == "gguf" {
                // GGUF export writes float tensors: every value as torch's .to(float32) gives it.
                #expect(try ours.floats() == reference.doubles().map { Float($0) }, "\(name)")
            } else {
                #expect(try ours.doubles() == reference.doubles(), "\(name)")
            }
        }
        #expect(written.names.count == 22)
        #expect(try scratch.listing() == ["out." + format], "no temporary file left behind")
    }

    func convertWithCLI(_ input: String, format: String, out: String) throws -> Int32 {
        let candidates = [
            URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("amused")
                .path,
            FixturePaths.repo + "/.build/debug/amused",
        ]
        let binary = try #require(candidates.first { FileManager.default.isExecutableFile(atPath: $0) })
        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["export", input, "--format", format, "--out", out]
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }
}
