// Every dtype a format can carry, from files the real Python writers made (Fixtures/dtypes, by
// Tools/make_dtype_fixtures.py): GGUF's integer types and F64 (gguf-py), HDF5 float16 (h5py, as Keras mixed precision
// saves it) and bare .npy files (numpy.save) read to the dtype and values the Python readers give; what cannot be
// read is refused with the reason.

import AmusedCore
import AmusedRead
import AmusedTestSupport
import Foundation
import Testing

@Suite("dtype conformance")
struct DTypeConformanceTests {
    static let expected = FixturePaths.path("dtypes/expected.safetensors")

    @Test(arguments: ["gguf_types.gguf", "float16.h5", "array.npy", "fortran.npy", "bigendian.npy", "bool.npy"])
    func readsWhatPythonReads(_ file: String) throws {
        let reference = try SafetensorsFile(path: Self.expected)
        let names = reference.names.filter { $0.hasPrefix(file + "/") }
        try #require(!names.isEmpty)
        // HDF5 both ways: through the helper process (the default) and in this process by name.
        var sources: [any TensorSource] = [try openWeights(path: FixturePaths.path("dtypes/" + file))]
        if file.hasSuffix(".h5") { sources.append(try HDF5File(path: FixturePaths.path("dtypes/" + file))) }
        for source in sources {
            #expect(Set(source.names) == Set(names.map { String($0.dropFirst(file.count + 1)) }))
            for name in names {
                let want = try reference.tensor(named: name)
                let have = try source.tensor(named: String(name.dropFirst(file.count + 1))).contiguous()
                #expect(have.dtype == want.dtype && have.shape == want.shape, "\(name): \(have.dtype) \(have.shape)")
                let same = try have.withUnsafeBytes { a in try want.withUnsafeBytes { b in a.elementsEqual(b) } }
                #expect(same, "\(name): values differ")
            }
        }
    }

    /// h5py stores an ml_dtypes bfloat16 array as an untagged 2-byte opaque type: refused, saying so.
    @Test func bfloat16InHDF5IsRefusedWithTheReason() throws {
        let error = try #require(throws: ReadError.self) {
            let source = try openWeights(path: FixturePaths.path("dtypes/bfloat16.h5"))
            for n in source.names { _ = try source.tensor(named: n) }
        }
        #expect(error.family == .unsupported && error.message.contains("bfloat16"), "\(error)")
    }
}
