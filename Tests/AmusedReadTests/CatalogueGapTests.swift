// The catalogue cases (docs/hostile-inputs.md) that had no test, or only part of one: each built here byte by byte
// (HDF5 through libhdf5) and refused with the stated family, or — where the catalogue says so — accepted as inert.

import AmusedCore
import AmusedRead
import AmusedTestSupport
import CHDF5
import Foundation
import Testing

/// `zip` (as `zipBytes` writes it) re-ended with a ZIP64 end record claiming `entries` entries, its locator, and an
/// end record whose fields are the ZIP64 sentinels; `recordOffset` overrides where the locator points.
func zip64(_ zip: [UInt8], entries: UInt64, recordOffset: UInt64? = nil) -> [UInt8] {
    let eocd = zip.count - 22
    func u32(_ o: Int) -> UInt64 {
        UInt64(zip[o]) | UInt64(zip[o + 1]) << 8 | UInt64(zip[o + 2]) << 16 | UInt64(zip[o + 3]) << 24
    }
    let cdSize = u32(eocd + 12), cdOffset = u32(eocd + 16)
    var out = Array(zip[..<eocd])
    let record = UInt64(out.count)
    out +=
        le32(0x0606_4B50) + le64(44) + le16(45) + le16(45) + le32(0) + le32(0) + le64(entries) + le64(entries)
        + le64(cdSize) + le64(cdOffset)
    out += le32(0x0706_4B50) + le32(0) + le64(recordOffset ?? record) + le32(1)
    out +=
        le32(0x0605_4B50) + le16(0) + le16(0) + le16(0xFFFF) + le16(0xFFFF) + le32(0xFFFF_FFFF) + le32(0xFFFF_FFFF)
        + le16(0)
    return out
}

/// A state dict {"w": int32[4]} saved as torch does for newer dtypes: an untyped byte storage and
/// `_rebuild_tensor_v3` with the dtype object.
let untypedInt32 = P.stateDict(
    P.global("torch._utils", "_rebuild_tensor_v3") + P.mark + P.mark + P.str("storage")
        + P.global("torch.storage", "UntypedStorage") + P.str("0") + P.str("cpu") + P.int(16) + P.tuple + [0x51]
        + P.int(0) + P.mark + P.int(4) + P.tuple + P.mark + P.int(1) + P.tuple + [0x89] + P.orderedDict
        + P.global("torch", "int32") + P.tuple + P.reduce)

let catalogueGapCases: [FormatCase] = {
    var c: [FormatCase] = []
    func add(_ id: String, _ file: String, _ bytes: [UInt8], _ family: ReadError.Family) {
        c.append(FormatCase(id: id, file: file, bytes: bytes, family: family))
    }
    let good = P.stateDict(P.tensor())
    let members = [
        Member(name: "archive/data.pkl", data: good),
        Member(name: "archive/data/0", data: [UInt8](repeating: 0, count: 16)),
    ]
    // PT-01: containers that are not zip archives.
    add("PT-01 7z", "a.pt", [0x37, 0x7A, 0xBC, 0xAF, 0x27, 0x1C] + [UInt8](repeating: 0, count: 40), .unsupported)
    add("PT-01 gzip", "a.pt", [0x1F, 0x8B, 0x08, 0x00] + [UInt8](repeating: 0, count: 40), .unsupported)
    add(
        "PT-01 tar", "a.pt",
        [UInt8](repeating: 0, count: 257) + Array("ustar\u{0}00".utf8) + [UInt8](repeating: 0, count: 248),
        .unsupported)
    // PT-13: stack underflow.
    add("PT-13 TUPLE2 with one item", "a.pt", torchArchive(P.proto + P.int(1) + [0x86] + P.stop), .malformed)
    add(
        "PT-13 SETITEMS with an odd count", "a.pt",
        torchArchive(
            P.proto + P.orderedDict + P.mark + P.str("w")
                + P.setitems + P.stop), .malformed)
    // PT-24: a non-empty tensor metadata dict (the seventh argument).
    add(
        "PT-24 tensor metadata", "a.pt",
        torchArchive(
            P.stateDict(
                P.global("torch._utils", "_rebuild_tensor_v2") + P.mark + P.storage() + P.int(0) + P.mark + P.int(4)
                    + P.tuple
                    + P.mark + P.int(1) + P.tuple + [0x89] + P.orderedDict + P.orderedDict + P.str("k") + P.int(1) + [
                        0x73
                    ]
                    + P.tuple + P.reduce)), .forbidden)
    // PT-27: a key that is not a string.
    add(
        "PT-27 integer key", "a.pt",
        torchArchive(
            P.proto + P.orderedDict + P.mark + P.int(7) + P.tensor() + P.setitems
                + P.stop), .malformed)
    // PT-28: protocol-5 buffers.
    add("PT-28 BYTEARRAY8", "a.pt", torchArchive([0x80, 4, 0x96] + le64(1) + [0] + P.stop), .unsupported)
    add("PT-28 NEXT_BUFFER", "a.pt", torchArchive([0x80, 4, 0x97] + P.stop), .unsupported)
    // Big-endian records whose elements would need swapping after an untyped storage is given a dtype (v3).
    add("PT big-endian untyped i32", "a.pt", torchArchive(untypedInt32, byteorder: "big"), .unsupported)
    // ZP-06: a compressed storage record (torch.save writes them stored).
    add(
        "ZP-06 deflated record", "a.pt",
        zipBytes([
            members[0],
            Member(
                name: "archive/data/0", data: [UInt8](repeating: 0, count: 16),
                method: 8, compressed: [0x63, 0x60, 0x20, 0x0D, 0x00, 0x00]),
        ]),
        .unsupported)
    // ZP-10: the ZIP64 end record outside the file.
    add(
        "ZP-10 ZIP64 record beyond EOF", "a.pt", zip64(zipBytes(members), entries: 2, recordOffset: 1 << 40), .malformed
    )
    // ZP-11: ten million entries claimed by a ZIP64 end record: refused before any index is built.
    add("ZP-11 ten million entries", "a.pt", zip64(zipBytes(members), entries: 10_000_000), .limitExceeded)
    // ZP-12: a nested archive where data.pkl should be: never opened as an archive, its bytes are no pickle.
    add("ZP-12 zip inside", "a.pt", zipBytes([Member(name: "archive/data.pkl", data: zipBytes(members))]), .unsupported)
    // GG-02: versions 0 and 4.
    add("GG-02 version 0", "a.gguf", ggufBytes(version: 0), .unsupported)
    add("GG-02 version 4", "a.gguf", ggufBytes(version: 4), .unsupported)
    // GG-10: a non-ASCII key, a key over 65 535 bytes.
    add("GG-10 non-ASCII key", "a.gguf", ggufBytes(kvCount: 1, kv: ggufString("ключ") + le32(4) + le32(1)), .malformed)
    add(
        "GG-10 key of 65 536 bytes", "a.gguf",
        ggufBytes(
            kvCount: 1,
            kv: ggufString(String(repeating: "k", count: 65_536))
                + le32(4) + le32(1)), .malformed)
    // GG-13: n_dims 0xFFFFFFFF, refused before any dimension is read.
    add("GG-13 n_dims 2^32-1", "a.gguf", ggufBytes(tensorCount: 1, tensors: ggufString("t") + le32(-1)), .malformed)
    // GG-17: an offset near the top of the range whose end wraps.
    add(
        "GG-17 end wraps", "a.gguf",
        ggufBytes(
            tensorCount: 1,
            tensors: ggufTensor(
                "t", dims: [1 << 60],
                offset: (1 << 62) - 32)), .arithmeticOverflow)
    // NP-03: a v2.0 header length of 2^32-1, refused before the header is read.
    add(
        "NP-03 v2 header length 2^32-1", "a.npz",
        zipBytes([
            Member(
                name: "a.npy",
                data: [0x93] + Array("NUMPY".utf8)
                    + [2, 0] + le32(-1) + [UInt8](repeating: 0x20, count: 64))
        ]), .limitExceeded)
    return c
}()

/// The positive controls and inert cases beside them (the refusals run with the others in FormatHostileTests).
@Suite("hostile inputs: catalogue cases that had no test")
struct CatalogueGapTests {
    /// The same untyped storage written little-endian reads as the int32 values it holds (the control for the
    /// big-endian refusal above).
    @Test func untypedLittleEndianReads() throws {
        let scratch = try ScratchFolder()
        let record = [Int32(1), -2, 3, 1 << 30].flatMap { v in withUnsafeBytes(of: v.littleEndian, Array.init) }
        let path = try scratch.write("a.pt", torchArchive(untypedInt32, records: ["0": record]))
        #expect(try PyTorchCheckpoint(path: path).tensor(named: "w").int64s() == [1, -2, 3, 1 << 30])
    }

    /// PT-08's positive control: a genuine `_metadata` BUILD on the state dict still loads.
    @Test func metadataBuildLoads() throws {
        let scratch = try ScratchFolder()
        let metadata =
            P.emptyDict + P.str("_metadata") + P.orderedDict + P.str("") + P.emptyDict + P.str("version")
            + P.int(1) + [0x73] + [0x73] + [0x73]
        let pickle =
            P.proto + P.orderedDict + P.mark + P.str("w") + P.tensor() + P.setitems + metadata + [0x62] + P.stop
        let checkpoint = try PyTorchCheckpoint(path: try scratch.write("a.pt", torchArchive(pickle)))
        #expect(checkpoint.names == ["w"])
    }

    /// GG-23 and GG-24: metadata is kept exactly as written — an INT8 array stays integers (never reinterpreted as
    /// the F32 a tokenizer would expect), and a chat template with a template-injection payload is opaque text.
    @Test func metadataIsInert() throws {
        let scratch = try ScratchFolder()
        let payload = "{{ ''.__class__.__mro__[1].__subclasses__() }}{% for x in range(10**9) %}{% endfor %}"
        let kv =
            ggufString("tokenizer.ggml.scores") + le32(9) + le32(1) + le64(3) + [0xFF, 0x00, 0x7F]
            + ggufString("tokenizer.chat_template") + le32(8) + ggufString(payload)
        let path = try scratch.write("a.gguf", ggufBytes(kvCount: 2, kv: kv))
        let file = try GGUFFile(path: path)
        #expect(file.value("tokenizer.ggml.scores") == .array([.int(-1), .int(0), .int(127)]))
        #expect(file.value("tokenizer.chat_template") == .string(payload))
    }

    /// H5-10 and H5-11: attributes are never read for weights — a 10^6-entry `weight_names` attribute and a Keras
    /// `model_config` holding a Lambda layer's bytecode leave the datasets readable and are not deserialised.
    @Test func attributesAreIgnored() throws {
        let scratch = try ScratchFolder()
        let path = scratch.path + "/a.h5"
        HDF5File.initializeLibrary()
        // Attributes over 64 KiB need the dense attribute storage of the newer file format.
        let fapl = H5Pcreate(H5P_CLS_FILE_ACCESS_ID_g)
        H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_V110)
        let file = H5Fcreate(path, 2, 0, fapl)
        H5Pclose(fapl)
        var dims: [hsize_t] = [4]
        let space = H5Screate_simple(1, &dims, nil)
        let ds = H5Dcreate2(file, "w", H5T_IEEE_F32LE_g, space, 0, 0, 0)
        var values: [Float] = [1, 2, 3, 4]
        H5Dwrite(ds, H5T_NATIVE_FLOAT_g, 0, 0, 0, &values)
        var big: [hsize_t] = [1_000_000]
        let bigSpace = H5Screate_simple(1, &big, nil)
        let names = H5Acreate2(file, "weight_names", H5T_STD_I32LE_g, bigSpace, 0, 0)
        #expect(names >= 0)
        var zeros = [Int32](repeating: 0, count: 1_000_000)
        #expect(H5Awrite(names, H5T_NATIVE_INT_g, &zeros) >= 0)
        H5Aclose(names)
        let config =
            #"{"class_name": "Lambda", "config": {"function": ["4wEAAAAAAAAAAAAAAAEAAAACAAAAQwAAAHMIAAAAdABkAY0BUwApAk4="]}}"#
        let stringType = H5Tcopy(H5T_C_S1_g)
        H5Tset_size(stringType, config.utf8.count)
        let scalar = H5Screate(H5S_SCALAR)
        let attribute = H5Acreate2(file, "model_config", stringType, scalar, 0, 0)
        _ = config.withCString { H5Awrite(attribute, stringType, $0) }
        H5Aclose(attribute)
        H5Sclose(scalar)
        H5Tclose(stringType)
        H5Sclose(bigSpace)
        H5Dclose(ds)
        H5Sclose(space)
        H5Fclose(file)
        // The attributes are really there (4 MB of them), and the weights read all the same.
        let size = try #require(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)
        #expect(size > 4_000_000)
        let h5 = try HDF5File(path: path)
        #expect(h5.names == ["w"])
        #expect(try h5.tensor(named: "w").floats() == values)
    }
}
