// Helpers for the bundle tests: converting the tiny fixtures, reading a bundle's manifest, and rebuilding a bundle
// with deliberate damage (a blob's stored bytes replaced, the manifest edited) while keeping or breaking the layout.

import AmusedCore
import AmusedPack
import AmusedQuantize
import AmusedRead
import AmusedTestSupport
import Crypto
import Foundation

/// Converts a tiny fixture model (default tiny-256) into `folder/name` with `preset` (int4 groups of 32, which the
/// tiny widths divide).
func makeBundle(
    _ preset: String, in folder: String, name: String? = nil, model: String = "records/tiny-256/model",
    compression: Int32? = nil
) throws -> String {
    let path = folder + "/" + (name ?? "\(preset).amused")
    var options = ConversionOptions(policy: try QuantPolicy.preset(preset).withInt4Group(32))
    options.compression = compression
    try BundleConversion.convert(try Checkpoint(path: FixturePaths.path(model)), to: path, options: options)
    return path
}

/// The bytes of a file.
func fileBytes(_ path: String) throws -> [UInt8] { [UInt8](try Data(contentsOf: URL(fileURLWithPath: path))) }

/// A bundle taken apart: header fields, stored blobs in manifest order, manifest.
struct BundleParts {
    var manifest: JSONObject
    /// Stored bytes of every blob in manifest order (components' tensors' buffers, then files).
    var blobs: [[UInt8]]

    init(_ path: String) throws {
        let bytes = try fileBytes(path)
        let offset = Int(UInt64(littleEndian: bytes[16..<24].withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }))
        manifest = try StrictJSONParser(path: path).parse(bytes[offset...]).objectValue!
        var blobs: [[UInt8]] = []
        for j in Self.blobObjects(.object(manifest)) {
            let o = j["offset"]!.intValue!, n = j["stored_bytes"]!.intValue!
            blobs.append(Array(bytes[o..<(o + n)]))
        }
        self.blobs = blobs
    }

    /// The buffer objects of a manifest, in file order.
    static func blobObjects(_ m: JSONValue) -> [JSONValue] {
        var out: [JSONValue] = []
        for c in m["components"]?.arrayValue ?? [] {
            for t in c["tensors"]?.arrayValue ?? [] { out += t["buffers"]?.arrayValue ?? [] }
        }
        return out + (m["files"]?.arrayValue ?? [])
    }

    /// Lays the parts out again (offsets and stored sizes rewritten to fit), applies `edit` to the manifest last,
    /// and writes a file with a correct header unless `header` changes it.
    func write(
        to path: String, edit: (inout JSONObject) -> Void = { _ in },
        header: (inout [UInt8]) -> Void = { _ in }, trailing: [UInt8] = []
    ) throws {
        var data = [UInt8](repeating: 0, count: 64)
        var offsets: [Int] = []
        for b in blobs {
            while data.count % 64 != 0 { data.append(0) }
            offsets.append(data.count)
            data += b
        }
        var m = manifest
        var k = 0
        func fix(_ j: JSONValue) -> JSONValue {
            var o = j.objectValue!
            o.set("offset", .number(String(offsets[k])))
            o.set("stored_bytes", .number(String(blobs[k].count)))
            k += 1
            return .object(o)
        }
        var components: [JSONValue] = []
        for c in m["components"]?.arrayValue ?? [] {
            var co = c.objectValue!
            co.set(
                "tensors",
                .array(
                    (c["tensors"]?.arrayValue ?? []).map { t in
                        var to = t.objectValue!
                        to.set("buffers", .array((t["buffers"]?.arrayValue ?? []).map(fix)))
                        return .object(to)
                    }))
            components.append(.object(co))
        }
        m.set("components", .array(components))
        m.set("files", .array((m["files"]?.arrayValue ?? []).map(fix)))
        edit(&m)
        while data.count % 64 != 0 { data.append(0) }
        let manifestBytes = Array(JSONValue.object(m).serialized.utf8)
        var h = Array("AMUSEDKB".utf8)
        func le<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { h += $0 } }
        le(UInt32(1))
        le(UInt32(0))
        le(UInt64(data.count))
        le(UInt64(manifestBytes.count))
        h += Array(SHA256.hash(data: manifestBytes))
        header(&h)
        data.replaceSubrange(0..<64, with: h)
        try Data(data + manifestBytes + trailing).write(to: URL(fileURLWithPath: path))
    }
}

/// The error opening (and verifying) a bundle throws, or nil when it opens cleanly.
func bundleError(_ path: String, verify: Bool = true) -> BundleError? {
    do {
        let b = try AmusedBundle(path: path)
        if verify { try b.verifyIntegrity() }
        return nil
    } catch {
        return error
    }
}

extension JSONObject {
    /// The object without `key`.
    func removing(_ key: String) -> JSONObject {
        var o = JSONObject()
        for (k, v) in entries where k != key { o.insert(k, v) }
        return o
    }

    /// Edits the first tensor's entry named `key` in any component.
    mutating func editTensor(_ key: String, _ edit: (inout JSONObject) -> Void) {
        var components: [JSONValue] = []
        for c in self["components"]?.arrayValue ?? [] {
            var co = c.objectValue!
            co.set(
                "tensors",
                .array(
                    (c["tensors"]?.arrayValue ?? []).map { t in
                        guard t["key"]?.stringValue == key, var o = t.objectValue else { return t }
                        edit(&o)
                        return .object(o)
                    }))
            components.append(.object(co))
        }
        set("components", .array(components))
    }

    /// Edits buffer `index` of tensor `key`.
    mutating func editBuffer(_ key: String, _ index: Int, _ edit: @escaping (inout JSONObject) -> Void) {
        editTensor(key) { t in
            var buffers = t["buffers"]!.arrayValue!
            var b = buffers[index].objectValue!
            edit(&b)
            buffers[index] = .object(b)
            t.set("buffers", .array(buffers))
        }
    }
}

/// SHA-256 in lower-case hex.
enum SHA256Hex {
    static func of(_ raw: UnsafeRawBufferPointer) -> String {
        SHA256.hash(data: raw).map { String(format: "%02x", $0) }.joined()
    }
}
