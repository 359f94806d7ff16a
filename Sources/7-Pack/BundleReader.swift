// Reading a bundle, as untrusted input: the header and manifest are validated completely (sizes against the bytes
// present, the exact tiling of buffers, every buffer's dtype and shape against its tensor's scheme) before any buffer is
// touched; `verifyIntegrity()` then checks every SHA-256 and the zero padding. Uncompressed buffers are views of the
// memory-mapped file; compressed ones are decoded into memory bounded by their declared sizes.

import AmusedCore
import AmusedModel
import AmusedRead
import Crypto
import Foundation

/// Where a buffer's bytes are and how they are stored.
public struct BundleBlob: Sendable {
    /// What it belongs to (`transformer/embed.embeddings.weight data`, `file tokenizer/vocab.json`).
    public let owner: String
    /// Its place in the file, sizes, encoding and digest, as the manifest gives them.
    public let location: BundleManifest.Location
    /// Element width (the byte planes of `zstd-planes`).
    public let width: Int

    /// First byte in the bundle.
    public var offset: Int { location.offset }
    /// Bytes stored in the bundle.
    public var storedBytes: Int { location.storedBytes }
    /// Bytes once decoded.
    public var bytes: Int { location.bytes }
    /// How the stored bytes are encoded.
    public var encoding: BundleManifest.Encoding { location.encoding }
    /// SHA-256 of the decoded bytes, hex.
    public var sha256: String { location.sha256 }
}

/// One tensor of a bundle.
public struct BundleTensor: Sendable {
    /// Canonical parameter key.
    public let key: String
    /// Logical shape.
    public let shape: [Int]
    /// Storage scheme.
    public let scheme: QuantScheme
    /// How the graph uses it.
    public let use: String
    /// Its buffers, in `scheme.buffers(for:)` order.
    public let buffers: [(role: String, dtype: DType, shape: [Int], blob: BundleBlob)]
}

/// One model component of a bundle.
public struct BundleComponent: Sendable {
    /// `transformer`, `text_encoder` or `vqvae`.
    public let name: String
    /// Its diffusers / transformers config.
    public let config: JSONValue
    /// Its tensors in graph order.
    public let tensors: [BundleTensor]
}

/// An opened `.amused` bundle.
public final class AmusedBundle: @unchecked Sendable {
    /// The file.
    public let path: String
    /// The manifest.
    public let manifest: BundleManifest
    /// Bytes of the manifest.
    public let manifestBytes: Int
    /// Model components.
    public let components: [BundleComponent]
    /// Named files (tokenizer files), by name.
    public let files: [String: BundleBlob]
    /// Whether buffers are compressed.
    public let compressed: Bool
    /// Every buffer in file order (the manifest's order: components' tensors' buffers, then files).
    public let blobs: [BundleBlob]
    let file: MappedFile

    /// The tokenizer file names a bundle may carry (an allowlist: no other name, no path, is ever accepted).
    public static let fileNames = [
        "tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/special_tokens_map.json",
        "tokenizer/tokenizer_config.json",
    ]

    /// True when `path` is a bundle: a regular file starting with the bundle magic (or named *.amused).
    public static func isBundle(_ path: String) -> Bool {
        var dir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &dir), !dir.boolValue else { return false }
        if path.hasSuffix(".amused") { return true }
        guard let file = try? ReadOnlyFile(path: path), file.byteCount >= 8, let head = try? file.read(at: 0, count: 8)
        else { return false }
        return head == BundleFormat.magic
    }

    /// Opens and validates `path` (no buffer is read; `verifyIntegrity()` checks the digests).
    public init(path: String) throws(BundleError) {
        self.path = path
        do { file = try MappedFile(path: path) } catch {
            throw BundleError(.io, path: path, "\(error)")
        }
        let size = file.byteCount
        func fail(_ family: ReadError.Family, _ field: String, _ offset: Int? = nil, _ message: String) -> BundleError {
            BundleError(family, path: path, field: field, offset: offset, message)
        }
        guard size >= BundleFormat.alignment else {
            throw fail(.truncated, "header", 0, "\(size) bytes: shorter than the 64-byte header")
        }
        let header = [UInt8](UnsafeRawBufferPointer(start: file.pointer(at: 0), count: BundleFormat.alignment))
        guard Array(header[0..<8]) == BundleFormat.magic else {
            throw fail(
                .malformed, "header", 0, "not an AmusedKit bundle (the magic bytes AMUSEDKB are missing or damaged)")
        }
        let version = header.readLE(UInt32.self, at: 8)
        guard version == BundleFormat.version else {
            throw fail(
                .unsupported, "header", 8,
                "format version \(version); this toolkit reads version \(BundleFormat.version)")
        }
        guard header.readLE(UInt32.self, at: 12) == 0 else {
            throw fail(.malformed, "header", 12, "reserved bytes are not zero")
        }
        let manifestOffset = header.readLE(UInt64.self, at: 16), manifestLength = header.readLE(UInt64.self, at: 24)
        guard manifestLength <= UInt64(BundleFormat.maxManifestBytes) else {
            throw fail(
                .limitExceeded, "manifest", 24,
                "manifest of \(manifestLength) bytes (limit \(BundleFormat.maxManifestBytes))")
        }
        guard manifestOffset >= UInt64(BundleFormat.alignment), manifestOffset % UInt64(BundleFormat.alignment) == 0,
            manifestOffset <= UInt64(size), manifestLength == UInt64(size) - manifestOffset, manifestLength > 0
        else {
            throw fail(
                .inconsistent, "manifest", 16,
                "manifest at \(manifestOffset) of \(manifestLength) bytes does not end the "
                    + "\(size)-byte file at an aligned offset")
        }
        let mOffset = Int(manifestOffset), mLength = Int(manifestLength)
        let manifestRaw = UnsafeRawBufferPointer(start: file.pointer(at: mOffset), count: mLength)
        let digest = Array(SHA256.hash(data: manifestRaw))
        guard digest == Array(header[32..<64]) else {
            throw fail(.integrity, "manifest", mOffset, "the manifest's SHA-256 does not match the header")
        }
        let json: JSONValue
        do { json = try StrictJSONParser(path: path, baseOffset: mOffset).parse(manifestRaw) } catch {
            throw fail(.malformed, "manifest", mOffset, error.errorDescription ?? "\(error)")
        }
        let manifest = try BundleManifest(json, path: path)
        self.manifest = manifest
        self.manifestBytes = mLength
        compressed = manifest.compression != .none

        // Every buffer, with its declared sizes checked against its dtype and shape.
        var blobs: [BundleBlob] = []
        func blob(_ l: BundleManifest.Location, owner: String, dtype: DType, shape: [Int]) throws(BundleError)
            -> BundleBlob
        {
            guard l.bytes <= BundleFormat.maxBufferBytes, l.storedBytes <= BundleFormat.maxBufferBytes else {
                throw fail(
                    .limitExceeded, owner, l.offset,
                    "buffer of \(max(l.bytes, l.storedBytes)) bytes (limit \(BundleFormat.maxBufferBytes))")
            }
            guard let count = SizeMath.product(shape), let expected = SizeMath.byteCount(elements: count, dtype: dtype),
                expected == l.bytes
            else {
                throw fail(
                    .inconsistent, owner, l.offset, "\(l.bytes) bytes for \(dtype.rawValue) \(describeShape(shape))")
            }
            guard l.encoding != .raw || l.storedBytes == l.bytes else {
                throw fail(
                    .inconsistent, owner, l.offset, "a raw buffer stores \(l.storedBytes) bytes but declares \(l.bytes)"
                )
            }
            let b = BundleBlob(owner: owner, location: l, width: max(1, dtype.bitWidth / 8))
            blobs.append(b)
            return b
        }
        var parsedComponents: [BundleComponent] = []
        for c in manifest.components {
            let name = c.part.rawValue
            guard !parsedComponents.contains(where: { $0.name == name }) else {
                throw fail(.inconsistent, "manifest.components", nil, "component \(name) appears twice")
            }
            var list: [BundleTensor] = []
            var seen = Set<String>()
            for t in c.tensors {
                let owner = "\(name)/\(t.key)"
                guard seen.insert(t.key).inserted else { throw fail(.inconsistent, owner, nil, "tensor appears twice") }
                guard let layout = t.scheme.buffers(for: t.shape), layout.count == t.buffers.count else {
                    throw fail(
                        .inconsistent, owner, nil,
                        "scheme \(t.scheme) and shape \(describeShape(t.shape)) need other buffers")
                }
                var parsed: [(String, DType, [Int], BundleBlob)] = []
                for (want, b) in zip(layout, t.buffers) {
                    guard b.role == want.role, b.dtype == want.dtype, b.shape == want.shape else {
                        throw fail(
                            .inconsistent, owner, nil,
                            "\(want.role) buffer must be \(want.dtype.rawValue) \(describeShape(want.shape)) "
                                + "for \(t.scheme) \(describeShape(t.shape))")
                    }
                    let owned = try blob(
                        b.location, owner: "\(owner) \(want.role)", dtype: want.dtype, shape: want.shape)
                    parsed.append((want.role, want.dtype, want.shape, owned))
                }
                list.append(
                    BundleTensor(key: t.key, shape: t.shape, scheme: t.scheme, use: t.use.rawValue, buffers: parsed))
            }
            parsedComponents.append(BundleComponent(name: name, config: .object(c.config), tensors: list))
        }
        var files: [String: BundleBlob] = [:]
        for f in manifest.files {
            guard files[f.name] == nil else { throw fail(.inconsistent, "file \(f.name)", nil, "appears twice") }
            files[f.name] = try blob(f.location, owner: "file \(f.name)", dtype: .u8, shape: [f.location.bytes])
        }
        // Exact tiling: buffers in order from byte 64, each at the next multiple of 64, the manifest after the last.
        var cursor = BundleFormat.alignment
        for b in blobs {
            guard b.offset == cursor else {
                throw fail(
                    .inconsistent, b.owner, b.offset,
                    "buffer at \(b.offset), expected \(cursor) (buffers must tile the file)")
            }
            guard let end = SizeMath.add(b.offset, b.storedBytes), end <= mOffset else {
                throw fail(.inconsistent, b.owner, b.offset, "buffer of \(b.storedBytes) bytes runs past the manifest")
            }
            cursor = BundleFormat.aligned(end)
        }
        guard cursor == mOffset else {
            throw fail(.inconsistent, "manifest", mOffset, "\(mOffset - cursor) unaccounted bytes before the manifest")
        }
        self.components = parsedComponents
        self.files = files
        self.blobs = blobs
    }

    /// The component `name`, if the bundle has it.
    public func component(_ name: String) -> BundleComponent? { components.first { $0.name == name } }

    /// Checks every buffer's SHA-256 (decoding compressed ones) and that all padding is zero. Throws an `integrity`
    /// error naming the first damaged tensor, file or padding.
    public func verifyIntegrity() throws(BundleError) {
        // The buffers are hashed on all cores (a full-size bundle is hundreds of megabytes); the outcomes are then read
        // in file order with the padding checks, so the error names the first damage, as a sequential pass would.
        let outcomes = hashAll()
        var cursor = BundleFormat.alignment
        let manifestOffset = file.byteCount - manifestBytes
        for (i, b) in (blobs + [nil] as [BundleBlob?]).enumerated() {
            let next = b?.offset ?? manifestOffset
            let padding = UnsafeRawBufferPointer(start: file.pointer(at: cursor), count: next - cursor)
            if let z = padding.firstIndex(where: { $0 != 0 }) {
                throw BundleError(
                    .integrity, path: path, field: b?.owner ?? "manifest", offset: cursor + z,
                    "padding byte is not zero")
            }
            guard let b else { break }
            if let failure = outcomes[i] { throw failure }
            cursor = b.offset + b.storedBytes
        }
    }

    /// For each buffer, nil when its decoded bytes have the manifest's SHA-256, else the error to report. Buffers are
    /// taken one at a time by as many workers as there are cores (compressed ones are decoded one per worker).
    func hashAll() -> [BundleError?] {
        let outcomes = IntegrityOutcomes(count: blobs.count)
        DispatchQueue.concurrentPerform(iterations: blobs.count) { i in
            let b = blobs[i]
            do throws(BundleError) {
                try withBytes(b) { bytes throws(BundleError) in
                    guard BundleFormat.sha256(bytes) == b.sha256 else {
                        throw BundleError(.integrity, path: path, field: b.owner, offset: b.offset, "SHA-256 mismatch")
                    }
                }
            } catch { outcomes.set(i, error) }
            // Hashing paged the buffer in; let it go again, so checking a bundle does not hold it all in memory.
            releasePages(b)
        }
        return outcomes.values
    }

    /// Drops the mapped pages of `blob` from this process's memory (read again from the file if touched).
    func releasePages(_ blob: BundleBlob) { file.release(offset: blob.offset, count: blob.storedBytes) }

    /// Runs `body` with the decoded bytes of `blob` (a view of the mapping when raw).
    func withBytes<R>(_ blob: BundleBlob, _ body: (UnsafeRawBufferPointer) throws(BundleError) -> R) throws(BundleError)
        -> R
    {
        do { try file.checkIntact() } catch { throw BundleError(.io, path: path, "\(error)") }
        let stored = UnsafeRawBufferPointer(start: file.pointer(at: blob.offset), count: blob.storedBytes)
        if blob.encoding == .raw { return try body(stored) }
        let storage = try decode(blob, stored)
        return try body(UnsafeRawBufferPointer(start: storage.baseAddress, count: blob.bytes))
    }

    func decode(_ blob: BundleBlob, _ stored: UnsafeRawBufferPointer) throws(BundleError) -> Storage {
        try BundleFormat.checkFrame(stored, expected: blob.bytes, path: path, field: blob.owner, offset: blob.offset)
        let out = Storage(zeroedByteCount: blob.bytes)
        if blob.encoding == .zstdPlanes {
            let planes = Storage(zeroedByteCount: blob.bytes)
            try BundleFormat.decompress(
                stored, expected: blob.bytes, into: planes.mutableBaseAddress!, path: path,
                field: blob.owner, offset: blob.offset)
            BundleFormat.interleave(
                UnsafeRawBufferPointer(start: planes.baseAddress, count: blob.bytes), width: blob.width,
                into: out.mutableBaseAddress!)
        } else {
            try BundleFormat.decompress(
                stored, expected: blob.bytes, into: out.mutableBaseAddress!, path: path,
                field: blob.owner, offset: blob.offset)
        }
        return out
    }

    /// A tensor's values in its stored form: views of the mapped file (uncompressed bundles, no copy) or decoded
    /// buffers (compressed bundles).
    public func quantized(_ t: BundleTensor) throws(BundleError) -> QuantizedTensor {
        var buffers: [Tensor] = []
        for b in t.buffers {
            do {
                let storage: Storage
                if b.blob.encoding == .raw {
                    storage = try Storage(file: file, offset: b.blob.offset, byteCount: b.blob.bytes)
                } else {
                    storage = try decode(
                        b.blob,
                        UnsafeRawBufferPointer(
                            start: file.pointer(at: b.blob.offset),
                            count: b.blob.storedBytes))
                }
                buffers.append(try Tensor(dtype: b.dtype, shape: b.shape, storage: storage))
            } catch let e as BundleError { throw e } catch {
                throw BundleError(.inconsistent, path: path, field: b.blob.owner, offset: b.blob.offset, "\(error)")
            }
        }
        do { return try QuantizedTensor(scheme: t.scheme, shape: t.shape, buffers: buffers) } catch {
            throw BundleError(.inconsistent, path: path, field: t.key, "\(error)")
        }
    }

    /// The decoded bytes of `blob` (for tests and tools that inspect buffers).
    public func withBytesForTests(_ blob: BundleBlob) throws(BundleError) -> [UInt8] {
        try withBytes(blob) { [UInt8]($0) }
    }

    /// The decoded bytes of file `name`.
    public func fileBytes(_ name: String) throws(BundleError) -> [UInt8]? {
        guard let b = files[name] else { return nil }
        return try withBytes(b) { [UInt8]($0) }
    }

    /// The name of the quantization policy the bundle was made with.
    public var policyName: String { manifest.quantization.policy.name }

    /// Total bytes of the file.
    public var byteCount: Int { file.byteCount }
}

/// The per-buffer results of a parallel integrity check: each worker writes only its own slots.
private final class IntegrityOutcomes: @unchecked Sendable {
    private(set) var values: [BundleError?]
    private let lock = NSLock()
    init(count: Int) { values = Array(repeating: nil, count: count) }
    func set(_ i: Int, _ error: BundleError) { lock.withLock { values[i] = error } }
}
