// Writing bundles: buffers are appended one at a time (aligned, hashed as they go) to a temporary file beside the
// destination; the manifest goes last, then the header, then fsync, rename and fsync of the folder. Until that
// rename the destination is untouched; a writer dropped without committing removes its temporary file.

import AmusedCore
import AmusedRead
import Crypto
import Foundation

/// Appends buffers and finally the manifest to a new bundle.
final class BundleWriter {
    let out: AtomicFileWriter
    let destination: String
    /// zstd level for compressed bundles, nil for raw buffers.
    let compression: Int32?

    /// Starts a bundle that will replace `destination` on `commit`.
    init(destination: String, compression: Int32?) throws(BundleError) {
        self.destination = destination
        self.compression = compression
        do {
            out = try AtomicFileWriter(destination: destination)
            try out.write([UInt8](repeating: 0, count: BundleFormat.alignment))
        } catch { throw BundleError(.io, path: destination, error.summary) }
    }

    /// The path being written.
    var temporaryPath: String { out.temporaryPath }

    /// Appends `bytes` (elements of `width` bytes) at the next aligned offset; returns where they went.
    func append(_ bytes: UnsafeRawBufferPointer, width: Int) throws(BundleError) -> BundleManifest.Location {
        let sha = BundleFormat.sha256(bytes)
        var encoding = BundleManifest.Encoding.raw
        var stored: [UInt8]? = nil
        if let level = compression, bytes.count > 0 {
            // Byte planes help when elements are wider than a byte (exponents line up); kept only where they help.
            let plain = BundleFormat.compress(bytes, level: level)
            stored = plain
            encoding = .zstd
            if width > 1 {
                let planes = BundleFormat.planes(bytes, width: width)
                let split = planes.withUnsafeBytes { BundleFormat.compress($0, level: level) }
                if split.count < plain.count {
                    stored = split
                    encoding = .zstdPlanes
                }
            }
        }
        let offset = BundleFormat.aligned(out.position)
        do {
            if offset > out.position { try out.write([UInt8](repeating: 0, count: offset - out.position)) }
            if let stored { try out.write(stored) } else { try out.write(bytes) }
        } catch { throw BundleError(.io, path: destination, error.summary) }
        return BundleManifest.Location(
            offset: offset, storedBytes: stored?.count ?? bytes.count, bytes: bytes.count, encoding: encoding,
            sha256: sha)
    }

    /// Writes `manifest` and the header, and leaves the complete file at the temporary path (not yet renamed).
    func finish(manifest: BundleManifest) throws(BundleError) {
        let bytes = Array(manifest.json.serialized.utf8)
        guard bytes.count <= BundleFormat.maxManifestBytes else {
            throw BundleError(.limitExceeded, path: destination, field: "manifest", "manifest of \(bytes.count) bytes")
        }
        let offset = BundleFormat.aligned(out.position)
        var header = BundleFormat.magic
        header.appendLE(BundleFormat.version)
        header.appendLE(UInt32(0))
        header.appendLE(UInt64(offset))
        header.appendLE(UInt64(bytes.count))
        header += Array(SHA256.hash(data: bytes))
        do {
            if offset > out.position { try out.write([UInt8](repeating: 0, count: offset - out.position)) }
            try out.write(bytes)
            try out.write(header, at: 0)
            try out.flush()
        } catch { throw BundleError(.io, path: destination, error.summary) }
    }

    /// Puts the finished file in place of the destination (rename, then fsync of the folder).
    func commit() throws(BundleError) {
        do { try out.commit() } catch { throw BundleError(.io, path: destination, error.summary) }
    }
}
