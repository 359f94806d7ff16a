// Bundles are untrusted on read (docs/hostile-inputs.md §6.7): every case of the catalogue, each
// rejected with its family and the tensor, file, header or manifest it concerns, before any oversized allocation.

import AmusedPack
import AmusedRead
import AmusedTestSupport
import CZstd
import Foundation
import Testing

@Suite("hostile bundles", .serialized)
struct HostileBundleTests {
    let scratch: ScratchFolder
    let plain: String
    let packed: String

    init() throws {
        scratch = try ScratchFolder()
        // The VQ-GAN alone keeps these bundles small enough to damage byte by byte.
        plain = try makeBundle("int8", in: scratch.path, name: "vq.amused", model: "records/tiny-256/model/vqvae")
        packed = try makeBundle(
            "int8", in: scratch.path, name: "vqz.amused", model: "records/tiny-256/model/vqvae",
            compression: 5)
    }

    func damaged(
        _ source: String, _ name: String, blobs: (inout [[UInt8]]) -> Void = { _ in },
        edit: (inout JSONObject) -> Void = { _ in }, header: (inout [UInt8]) -> Void = { _ in },
        trailing: [UInt8] = []
    ) throws -> String {
        var parts = try BundleParts(source)
        blobs(&parts.blobs)
        let path = scratch.path + "/" + name
        try parts.write(to: path, edit: edit, header: header, trailing: trailing)
        return path
    }

    /// The first tensor key of the bundle with an int8 data buffer.
    func int8Key(_ path: String) throws -> String {
        try #require(try AmusedBundle(path: path).components.flatMap(\.tensors).first { $0.scheme == .int8 }?.key)
    }

    @Test func positiveControlRebuildsToTheSameBytes() throws {
        let path = try damaged(plain, "same.amused")
        #expect(try fileBytes(path) == fileBytes(plain))
        #expect(bundleError(path) == nil)
    }

    @Test("BD-01: manifest missing, truncated, not JSON, unknown version")
    func manifestProblems() throws {
        // Manifest bytes that are not a complete JSON document (header hash correct): malformed.
        var bytes = try fileBytes(plain)
        let offset = Int(bytes[16..<24].withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        let cut = Array(bytes[offset..<(offset + 40)])
        bytes = Array(bytes[..<offset]) + cut
        bytes.replaceSubrange(24..<32, with: withUnsafeBytes(of: UInt64(cut.count).littleEndian, Array.init))
        bytes.replaceSubrange(32..<64, with: Array(SHA256Digest.of(cut)))
        try Data(bytes).write(to: URL(fileURLWithPath: scratch.path + "/cut.amused"))
        let e1 = try #require(bundleError(scratch.path + "/cut.amused"))
        #expect(e1.family == .malformed && e1.field == "manifest")
        // Missing manifest: the file ends after the header.
        try Data(try fileBytes(plain)[..<64]).write(to: URL(fileURLWithPath: scratch.path + "/none.amused"))
        #expect(bundleError(scratch.path + "/none.amused")?.family == .inconsistent)
        // Unknown versions, in the header and in the manifest.
        let v2 = try damaged(plain, "v2.amused", header: { h in h[8] = 2 })
        #expect(bundleError(v2)?.family == .unsupported)
        let m2 = try damaged(plain, "m2.amused", edit: { m in m.set("version", .number("2")) })
        #expect(bundleError(m2)?.family == .unsupported)
        // A manifest that is JSON but not a bundle manifest.
        let empty = try damaged(plain, "empty.amused", edit: { m in m = JSONObject() })
        #expect(bundleError(empty)?.family == .malformed)
        let tiny = scratch.path + "/tiny.amused"
        try Data([0x41, 0x4D]).write(to: URL(fileURLWithPath: tiny))
        #expect(bundleError(tiny)?.family == .truncated)
    }

    @Test("BD-01: a manifest that is JSON but not of the manifest's shape is refused, naming where")
    func manifestShape() throws {
        let key = try int8Key(plain)
        let cases: [(String, String, (inout JSONObject) -> Void)] = [
            ("unknown top-level key", "manifest", { m in m.set("extra", .bool(true)) }),
            ("toolkit missing", "manifest", { m in m = m.removing("toolkit") }),
            ("quantization not an object", "manifest.quantization", { m in m.set("quantization", .array([])) }),
            (
                "policy broken", "manifest.quantization",
                { m in
                    var q = m["quantization"]!.objectValue!
                    q.set("policy", .object(JSONObject()))
                    m.set("quantization", .object(q))
                }
            ),
            (
                "source layout unknown", "manifest.source",
                { m in
                    var s = m["source"]!.objectValue!
                    s.set("layout", .string("zip"))
                    m.set("source", .object(s))
                }
            ),
            (
                "zstd without a level", "manifest.compression",
                { m in
                    var c = JSONObject()
                    c.set("codec", .string("zstd"))
                    m.set("compression", .object(c))
                }
            ),
            ("unknown key in a tensor", "vqvae/\(key)", { m in m.editTensor(key) { $0.set("note", .string("hi")) } }),
            ("use unknown", "vqvae/\(key)", { m in m.editTensor(key) { $0.set("use", .string("lut")) } }),
            (
                "products not what the tensor computes as", "vqvae/\(key)",
                { m in m.editTensor(key) { $0.set("products", .string("int8·int8→int32")) } }
            ),
            (
                "error measure negative", "vqvae/\(key).error",
                { m in
                    m.editTensor(key) { t in
                        var e = t["error"]!.objectValue!
                        e.set("rms", .number("-1"))
                        t.set("error", .object(e))
                    }
                }
            ),
            ("sha256 not hex", "vqvae/\(key) data", { m in m.editBuffer(key, 0) { $0.set("sha256", .string("XYZ")) } }),
            (
                "negative offset", "vqvae/\(key) data",
                { m in m.editBuffer(key, 0) { $0.set("offset", .number("-64")) } }
            ),
        ]
        for (name, field, edit) in cases {
            let path = try damaged(plain, "shape-\(name.replacingOccurrences(of: " ", with: "-")).amused", edit: edit)
            let e = try #require(bundleError(path), "\(name)")
            #expect(e.family == .malformed, "\(name): \(e)")
            #expect(e.field == field, "\(name): \(e)")
        }
        // Bundles written before `products` was recorded lack it, and are read as before.
        let older = try damaged(
            plain, "no-products.amused", edit: { m in m.editTensor(key) { $0 = $0.removing("products") } })
        #expect(bundleError(older) == nil)
    }

    @Test("BD-02: a 10 TB buffer claim is refused before anything is allocated")
    func hugeClaim() throws {
        let key = try int8Key(plain)
        let path = try damaged(
            plain, "huge.amused",
            edit: { m in
                m.editBuffer(key, 0) { b in
                    b.set("bytes", .number("10000000000000"))
                    b.set("stored_bytes", .number("10000000000000"))
                }
            })
        let e = try #require(bundleError(path))
        #expect(e.family == .limitExceeded)
        #expect(e.field?.contains(key) == true)
        // A manifest length beyond the cap is refused from the header alone.
        let long = try damaged(
            plain, "long.amused",
            header: { h in
                h.replaceSubrange(24..<32, with: withUnsafeBytes(of: UInt64(1) << 40, Array.init))
            })
        #expect(bundleError(long)?.family == .limitExceeded)
    }

    /// Crash 6 of the known six: a manifest (its SHA-256 recomputed, as anyone can) giving an int8 tensor the shape
    /// [1, 2^32, 2^32] overflowed before any size check.
    @Test func shapeOverflowIsRefusedByName() throws {
        let key = try int8Key(plain)
        let path = try damaged(
            plain, "shape.amused",
            edit: { m in
                m.editTensor(key) { t in
                    t.set("shape", .array(["1", "4294967296", "4294967296"].map(JSONValue.number)))
                }
            })
        let e = try #require(bundleError(path))
        #expect(e.family == .arithmeticOverflow, "\(e)")
        #expect(e.field?.contains(key) == true)
    }

    /// One zstd frame of `bytes` with the content size flag as given.
    func frame(_ bytes: [UInt8], contentSize: Bool, level: Int32 = 3) -> [UInt8] {
        let cctx = ZSTD_createCCtx()!
        defer { ZSTD_freeCCtx(cctx) }
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level)
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, contentSize ? 1 : 0)
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1)
        var out = [UInt8](repeating: 0, count: ZSTD_compressBound(bytes.count))
        let n = out.withUnsafeMutableBytes { o in
            bytes.withUnsafeBytes { i in
                ZSTD_compress2(cctx, o.baseAddress, o.count, i.baseAddress, i.count)
            }
        }
        return Array(out[..<n])
    }

    /// The index and decoded bytes of the first zstd buffer in `packed`.
    func firstCompressed() throws -> (index: Int, owner: String, decoded: [UInt8]) {
        let bundle = try AmusedBundle(path: packed)
        let objects = BundleParts.blobObjects(bundle.manifest.json)
        let i = try #require(
            objects.firstIndex { $0["encoding"]?.stringValue == "zstd" && ($0["bytes"]?.intValue ?? 0) > 16 })
        let blob = bundle.components.flatMap { $0.tensors.flatMap { $0.buffers.map(\.blob) } }[i]
        let decoded = try bundle.withBytesForTests(blob)
        return (i, blob.owner, decoded)
    }

    @Test("BD-03: a zstd frame without a content size, or with another one")
    func frameContentSize() throws {
        let (i, owner, decoded) = try firstCompressed()
        let noSize = try damaged(packed, "nosize.amused", blobs: { $0[i] = frame(decoded, contentSize: false) })
        let e = try #require(bundleError(noSize))
        #expect(e.family == .inconsistent && e.field == owner)
        let other = try damaged(packed, "other.amused", blobs: { $0[i] = frame(decoded + [0], contentSize: true) })
        #expect(bundleError(other)?.family == .inconsistent)
    }

    @Test("BD-04: a frame window beyond windowLogMax")
    func hugeWindow() throws {
        let (i, owner, decoded) = try firstCompressed()
        // A hand-made frame header: no single segment, 4-byte content size, checksum, window 2^31.
        var header: [UInt8] = [0x28, 0xB5, 0x2F, 0xFD, 0x84, 21 << 3]
        withUnsafeBytes(of: UInt32(decoded.count).littleEndian) { header += $0 }
        let path = try damaged(packed, "window.amused", blobs: { $0[i] = header + [0, 0, 0, 0, 0, 0] })
        let e = try #require(bundleError(path))
        #expect(e.family == .limitExceeded && e.field == owner)
    }

    @Test("BD-06: trailing bytes, a second frame or a skippable frame after the blob")
    func trailingAfterFrame() throws {
        let (i, _, decoded) = try firstCompressed()
        let good = frame(decoded, contentSize: true)
        let skippable: [UInt8] = [0x50, 0x2A, 0x4D, 0x18, 4, 0, 0, 0, 1, 2, 3, 4]
        for (name, extra) in [
            ("junk", [UInt8](repeating: 7, count: 5)), ("second", frame([1, 2, 3], contentSize: true)),
            ("skip", skippable),
        ] {
            let path = try damaged(packed, "\(name).amused", blobs: { $0[i] = good + extra })
            #expect(bundleError(path)?.family == .inconsistent, "\(name)")
        }
        // A skippable frame alone instead of the data frame.
        let alone = try damaged(packed, "alone.amused", blobs: { $0[i] = skippable })
        #expect(bundleError(alone)?.family == .inconsistent)
        // Bytes after the manifest.
        let after = try damaged(plain, "after.amused", trailing: [0])
        #expect(bundleError(after)?.family == .inconsistent)
    }

    @Test("BD-07: a SHA-256 mismatch, a zstd checksum mismatch")
    func digests() throws {
        let key = try int8Key(plain)
        let bundle = try AmusedBundle(path: plain)
        let objects = BundleParts.blobObjects(bundle.manifest.json)
        let i = try #require(
            objects.firstIndex {
                $0["offset"]?.intValue
                    == bundle.components.flatMap(\.tensors)
                    .first { $0.key == key }!.buffers[0].blob.offset
            })
        let flipped = try damaged(plain, "sha.amused", blobs: { $0[i][0] ^= 0x01 })
        let e = try #require(bundleError(flipped))
        #expect(e.family == .integrity && e.field == "vqvae/\(key) data")
        let (j, owner, _) = try firstCompressed()
        let bad = try damaged(packed, "checksum.amused", blobs: { $0[j][$0[j].count - 1] ^= 0xFF })
        let e2 = try #require(bundleError(bad))
        #expect(e2.family == .integrity && e2.field == owner)
    }

    @Test(
        "BD-08: file names with paths are forbidden",
        arguments: [
            "../../etc/passwd", "/etc/passwd",
            "tokenizer/../x.json", "tokenizer\\vocab.json",
        ])
    func fileNames(_ name: String) throws {
        let parts = try BundleParts(try makeBundle("int8", in: scratch.path, name: "withfiles.amused"))
        let path = scratch.path + "/names.amused"
        try parts.write(
            to: path,
            edit: { m in
                var files = m["files"]!.arrayValue!
                var f = files[0].objectValue!
                f.set("name", .string(name))
                files[0] = .object(f)
                m.set("files", .array(files))
            })
        let e = try #require(bundleError(path, verify: false))
        #expect(e.family == .forbidden)
    }

    @Test("BD-10: dtype, shape or scheme inconsistent with the buffers")
    func inconsistentLayout() throws {
        let key = try int8Key(plain)
        let cases: [(String, (inout JSONObject) -> Void)] = [
            ("dtype", { m in m.editBuffer(key, 0) { $0.set("dtype", .string("F32")) } }),
            (
                "bytes",
                { m in m.editBuffer(key, 0) { b in b.set("bytes", .number(String(b["bytes"]!.intValue! + 1))) } }
            ),
            ("shape", { m in m.editTensor(key) { t in t.set("shape", .array([.number("3"), .number("5")])) } }),
            ("scheme", { m in m.editTensor(key) { t in t.set("scheme", .string("int4g32")) } }),
            (
                "offset",
                { m in m.editBuffer(key, 0) { b in b.set("offset", .number(String(b["offset"]!.intValue! + 64))) } }
            ),
        ]
        for (name, edit) in cases {
            let path = try damaged(plain, "bd10-\(name).amused", edit: edit)
            let e = try #require(bundleError(path), "\(name)")
            #expect([.inconsistent, .malformed].contains(e.family), "\(name): \(e)")
            #expect(e.field?.contains(key) == true || e.field == "manifest", "\(name): \(e)")
        }
    }

    @Test func everyByteOfHeaderAndManifestAndEveryBufferEdgeIsCovered() throws {
        // Flipping one byte anywhere must fail, naming what it hit: the header, the manifest, a tensor or a file.
        // Exhaustive over the header; each run of padding's first and last byte; each buffer's first, middle and last
        // byte; every 7th
        // manifest byte plus its first and last 64 (one SHA-256 in the header covers all of it alike).
        let original = try fileBytes(plain)
        let bundle = try AmusedBundle(path: plain)
        let blobs = BundleParts.blobObjects(bundle.manifest.json).map {
            ($0["offset"]!.intValue!, $0["stored_bytes"]!.intValue!)
        }
        let manifestStart = original.count - bundle.manifestBytes
        var positions =
            Array(0..<64) + Array(stride(from: manifestStart, to: original.count, by: 7))
            + Array(manifestStart..<min(original.count, manifestStart + 64))
            + Array(max(manifestStart, original.count - 64)..<original.count)
        var cursor = 64
        for (o, n) in blobs {
            if o > cursor { positions += [cursor, o - 1] }  // each run of padding: its first and last byte
            if n > 0 { positions += [o, o + n / 2, o + n - 1] }
            cursor = o + n
        }
        if manifestStart > cursor { positions += [cursor, manifestStart - 1] }
        let path = scratch.path + "/flip.amused"
        var failures = 0
        for p in positions {
            var bytes = original
            bytes[p] ^= 0x20
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            guard let e = bundleError(path) else {
                Issue.record("flipping byte \(p) went unnoticed")
                continue
            }
            let field = e.field ?? ""
            #expect(
                field == "header" || field == "manifest" || field.hasPrefix("vqvae/") || field.hasPrefix("file ")
                    || field.hasPrefix("manifest."), "byte \(p): \(e)")
            if p >= 64 && p < manifestStart { #expect(e.family == .integrity, "byte \(p): \(e)") }
            failures += 1
        }
        #expect(failures == positions.count)
    }
}

/// SHA-256 as bytes.
enum SHA256Digest {
    static func of(_ bytes: [UInt8]) -> [UInt8] {
        bytes.withUnsafeBytes { raw in
            let hex = SHA256Hex.of(raw)
            var out: [UInt8] = []
            var i = hex.startIndex
            while i < hex.endIndex {
                let j = hex.index(i, offsetBy: 2)
                out.append(UInt8(hex[i..<j], radix: 16)!)
                i = j
            }
            return out
        }
    }
}
