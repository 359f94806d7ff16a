// PyTorch, NumPy and GGUF readers against files the real Python writers made (Fixtures/formats, from
// Tools/make_fixtures.py): every tensor decodes to exactly what torch.load, numpy.load and gguf-py read back.

import AmusedCore
import AmusedRead
import AmusedTestSupport
import Testing

@Suite("format conformance")
struct FormatConformanceTests {
    static let expected = try? SafetensorsFile(path: FixturePaths.path("formats/expected.safetensors"))

    /// Compares every tensor; `sameDtype` is false for GGUF, whose expected values are gguf-py's float32
    /// dequantization of every type.
    func compare(_ source: any TensorSource, prefix: String, sameDtype: Bool = true) throws {
        let expected = try #require(Self.expected)
        let names = expected.names.filter { $0.hasPrefix(prefix + "/") }
        #expect(Set(names.map { String($0.dropFirst(prefix.count + 1)) }) == Set(source.names))
        for name in names {
            let key = String(name.dropFirst(prefix.count + 1))
            let ours = try source.tensor(named: key), theirs = try expected.tensor(named: name)
            #expect(ours.shape == theirs.shape, "\(key)")
            if sameDtype { #expect(ours.dtype == theirs.dtype, "\(key): \(ours.dtype) vs \(theirs.dtype)") }
            if ours.dtype == .u64 {
                #expect(
                    try ours.int64s().map { UInt64(bitPattern: $0) } == theirs.int64s().map { UInt64(bitPattern: $0) },
                    "\(key)")
            } else if [.i64, .bool, .u8, .i32, .i16, .i8, .u16, .u32].contains(ours.dtype) {
                #expect(try ours.int64s() == theirs.int64s(), "\(key)")
            } else {
                // Exact: the same stored bits, widened the same way.
                #expect(try ours.doubles() == theirs.doubles(), "\(key)")
            }
        }
    }

    /// torch.save of a module state dict with shared storages, transposed and sliced views, every float and
    /// integer dtype, a scalar and an empty tensor.
    @Test func pytorchStateDict() throws {
        let checkpoint = try PyTorchCheckpoint(path: FixturePaths.path("formats/state_dict.pt"))
        try compare(checkpoint, prefix: "torch")
        // Views stay views of the mapped records (zero-copy), strides and offsets included.
        let transposed = try checkpoint.tensor(named: "view.transposed")
        #expect(transposed.isMapped && transposed.strides == [1, 5])
        #expect(try checkpoint.tensor(named: "view.slice").byteOffset == 11 * 4)
        #expect(try checkpoint.tensor(named: "shared.a").storage === checkpoint.tensor(named: "shared.b").storage)
    }

    @Test(arguments: ["stored.npz", "compressed.npz"])
    func numpyArchive(_ file: String) throws {
        try compare(try NumpyArchive(path: FixturePaths.path("formats/\(file)")), prefix: "npz")
    }

    /// gguf-py's F32, F16, Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 tensors, dequantized exactly as gguf-py dequantizes
    /// them, from a v3 file and the same file as v2.
    @Test(arguments: ["model.gguf", "model_v2.gguf"])
    func gguf(_ name: String) throws {
        let file = try GGUFFile(path: FixturePaths.path("formats/\(name)"))
        try compare(file, prefix: "gguf", sameDtype: false)
        #expect(file.version == (name == "model.gguf" ? 3 : 2))
        #expect(file.value("test.count") == .uint(7))
        #expect(file.value("test.name") == .string("tiny"))
        #expect(file.value("test.ids") == .array([3, 1, 4, 1, 5].map { .int($0) }))
        #expect(file.value("general.alignment") == .uint(64))
    }

    @Test func openWeightsDetectsEachFormat() throws {
        for (file, type) in [
            ("state_dict.pt", "PyTorchCheckpoint"), ("stored.npz", "NumpyArchive"),
            ("model.gguf", "GGUFFile"),
        ] {
            let source = try openWeights(path: FixturePaths.path("formats/\(file)"))
            #expect(String(describing: Swift.type(of: source)) == type)
        }
        let error = try #require(throws: ReadError.self) {
            try openWeights(path: FixturePaths.path("formats/legacy.pt"))
        }
        #expect(error.family == .unsupported)
    }
}
