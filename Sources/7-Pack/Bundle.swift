// The `.amused` bundle: one file an app can memory-map. Layout (all integers little-endian):
//
//   0   magic "AMUSEDKB"                 8 bytes
//   8   format version (1)               u32
//   12  reserved, zero                   u32
//   16  manifest offset                  u64
//   24  manifest length                  u64
//   32  SHA-256 of the manifest bytes    32 bytes
//   64  buffers, each at a multiple of 64, zero bytes between them
//   …   the manifest (UTF-8 JSON, schema Schemas/bundle-manifest.schema.json) at the next multiple of 64, to the end
//
// The file is tiled exactly: header, buffers in manifest order, padding below 64 bytes of zeros, manifest, nothing
// after. The manifest is written last, so a conversion can read its own buffers back to verify them first. Every
// buffer carries the SHA-256 of its (decoded) bytes; compressed bundles store zstd frames whose content size must equal
// the declared size. Readers treat all of it as untrusted (docs/hostile-inputs.md §6.7).

import AmusedCore
import AmusedRead
import CZstd
import Crypto
import Foundation

/// The one error type of the pack stage: reading, checking and writing bundles.
public struct BundleError: Error, DescribedError, Equatable {
    /// The hostile-inputs family (`integrity`, `inconsistent`, `limitExceeded`, …).
    public let family: ReadError.Family
    /// The bundle.
    public let path: String
    /// What is concerned: `manifest`, `header`, or `<component>/<tensor key>`, `file <name>`.
    public let field: String?
    /// Byte offset in the bundle, where one applies.
    public let offset: Int?
    /// What is wrong.
    public let message: String

    /// Creates an error.
    public init(_ family: ReadError.Family, path: String, field: String? = nil, offset: Int? = nil, _ message: String) {
        self.family = family
        self.path = path
        self.field = field
        self.offset = offset
        self.message = message
    }

    /// The family's name.
    public var kindName: String? { family.rawValue }
    /// What to do, by family.
    public var advice: String {
        switch family {
        case .integrity: "The bundle is damaged; copy it again or re-run amused convert."
        case .io:
            "Check the path, the permissions, the free space and any file-size limit; a bundle being "
                + "written is left as it was."
        case .unsupported: "Convert the checkpoint again with this version of amused."
        default: "This is not a valid .amused bundle; re-run amused convert to make one."
        }
    }
}

/// Constants and small helpers of the bundle format.
public enum BundleFormat {
    /// The first 8 bytes of every bundle.
    public static let magic: [UInt8] = Array("AMUSEDKB".utf8)
    /// The format version this toolkit writes and reads.
    public static let version: UInt32 = 1
    /// Header size; also the alignment of every buffer and of the manifest.
    public static let alignment = 64
    /// The largest manifest accepted (full-size bundles have manifests of about 1 MiB).
    public static let maxManifestBytes = 64 << 20
    /// The largest decoded buffer accepted (the largest aMUSEd tensor is 145 MiB in float32).
    public static let maxBufferBytes = 4 << 30
    /// The largest zstd window accepted when decoding (2^27 = 128 MiB).
    public static let windowLogMax: Int32 = 27
    /// The version of AmusedKit (recorded in manifests, printed by `amused --version`).
    public static let toolkitVersion = "0.2.0"
    /// The version of the zstd library compressed bundles go through.
    public static var zstdVersion: String { String(cString: ZSTD_versionString()) }

    /// `n` rounded up to the alignment.
    static func aligned(_ n: Int) -> Int { (n + alignment - 1) / alignment * alignment }

    /// Lower-case hex of a SHA-256 digest.
    static func hex(_ digest: SHA256.Digest) -> String {
        digest.map { String(format: "%02x", $0) }.joined()
    }

    /// The SHA-256 of `bytes` in hex.
    static func sha256(_ bytes: UnsafeRawBufferPointer) -> String { hex(SHA256.hash(data: bytes)) }

    /// The SHA-256 of a file in hex, read in 8 MiB pieces.
    public static func sha256(file path: String) throws -> (hex: String, bytes: Int) {
        let file = try ReadOnlyFile(path: path)
        var hasher = SHA256()
        var offset = 0
        while offset < file.byteCount {
            let n = min(8 << 20, file.byteCount - offset)
            let chunk = try file.read(at: offset, count: n)
            chunk.withUnsafeBytes { hasher.update(bufferPointer: $0) }
            offset += n
        }
        return (hex(hasher.finalize()), file.byteCount)
    }

    /// Splits elements of `width` bytes into byte planes (all first bytes, then all second bytes, …): float exponents
    /// line up, which zstd compresses far better.
    static func planes(_ bytes: UnsafeRawBufferPointer, width: Int) -> [UInt8] {
        let n = bytes.count / width
        var out = [UInt8](repeating: 0, count: bytes.count)
        for j in 0..<width {
            for i in 0..<n { out[j * n + i] = bytes[i * width + j] }
        }
        return out
    }

    /// Reverses `planes`.
    static func interleave(_ planes: UnsafeRawBufferPointer, width: Int, into out: UnsafeMutableRawPointer) {
        let n = planes.count / width
        let o = out.assumingMemoryBound(to: UInt8.self)
        for j in 0..<width {
            for i in 0..<n { o[i * width + j] = planes[j * n + i] }
        }
    }

    /// One zstd frame of `bytes` at `level`, with the content size and a checksum in the frame.
    static func compress(_ bytes: UnsafeRawBufferPointer, level: Int32) -> [UInt8] {
        let cctx = ZSTD_createCCtx()!
        defer { ZSTD_freeCCtx(cctx) }
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level)
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1)
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 1)
        // Single-threaded and with a bounded window, so the same input always gives the same bytes and decoders
        // within windowLogMax can read it.
        ZSTD_CCtx_setParameter(cctx, ZSTD_c_windowLog, min(windowLogMax, 23))
        var out = [UInt8](repeating: 0, count: ZSTD_compressBound(bytes.count))
        let n = out.withUnsafeMutableBytes { dst in
            ZSTD_compress2(cctx, dst.baseAddress, dst.count, bytes.baseAddress, bytes.count)
        }
        precondition(ZSTD_isError(n) == 0, "zstd compression failed: \(String(cString: ZSTD_getErrorName(n)))")
        out.removeSubrange(n...)
        return out
    }

    /// Checks that `stored` is exactly one zstd frame that decodes to `expected` bytes, before anything of that size
    /// is allocated: frames without a content size, with a different one, with a window beyond `windowLogMax`,
    /// followed by anything, or claiming more than zstd can produce from their size are refused.
    static func checkFrame(
        _ stored: UnsafeRawBufferPointer, expected: Int, path: String, field: String,
        offset: Int
    ) throws(BundleError) {
        // zstd's densest block is RLE: 4 bytes (header and byte) for at most 128 KiB, so at most 32768:1.
        guard expected / 32768 <= stored.count else {
            throw BundleError(
                .limitExceeded, path: path, field: field, offset: offset,
                "\(expected) bytes claimed from a \(stored.count)-byte zstd frame, more than zstd can produce")
        }
        guard stored.count >= 4 else {
            throw BundleError(.truncated, path: path, field: field, offset: offset, "zstd frame too short")
        }
        var header = ZSTD_frameHeader()
        let h = ZSTD_getFrameHeader(&header, stored.baseAddress, stored.count)
        guard h == 0, header.frameType == ZSTD_frame else {
            throw BundleError(
                .inconsistent, path: path, field: field, offset: offset,
                "not a single zstd data frame (a skippable frame or a broken header)")
        }
        guard header.frameContentSize != UInt64.max else {
            throw BundleError(
                .inconsistent, path: path, field: field, offset: offset, "zstd frame without a content size")
        }
        guard header.frameContentSize == UInt64(expected) else {
            throw BundleError(
                .inconsistent, path: path, field: field, offset: offset,
                "zstd frame holds \(header.frameContentSize) bytes, the manifest says \(expected)")
        }
        guard header.windowSize <= UInt64(1) << UInt64(windowLogMax) else {
            throw BundleError(
                .limitExceeded, path: path, field: field, offset: offset,
                "zstd window of \(header.windowSize) bytes exceeds 2^\(windowLogMax)")
        }
        let frame = ZSTD_findFrameCompressedSize(stored.baseAddress, stored.count)
        guard ZSTD_isError(frame) == 0, frame == stored.count else {
            throw BundleError(
                .inconsistent, path: path, field: field, offset: offset,
                "bytes after the zstd frame (a second frame, a skippable frame or trailing data)")
        }
    }

    /// Decodes exactly one zstd frame of `stored` into `out` (`expected` bytes; `checkFrame` has passed).
    static func decompress(
        _ stored: UnsafeRawBufferPointer, expected: Int, into out: UnsafeMutableRawPointer,
        path: String, field: String, offset: Int
    ) throws(BundleError) {
        let dctx = ZSTD_createDCtx()!
        defer { ZSTD_freeDCtx(dctx) }
        ZSTD_DCtx_setParameter(dctx, ZSTD_d_windowLogMax, windowLogMax)
        let n = ZSTD_decompressDCtx(dctx, out, expected, stored.baseAddress, stored.count)
        guard ZSTD_isError(n) == 0 else {
            throw BundleError(
                .integrity, path: path, field: field, offset: offset,
                "zstd: \(String(cString: ZSTD_getErrorName(n)))")
        }
        guard n == expected else {
            throw BundleError(
                .inconsistent, path: path, field: field, offset: offset, "zstd gave \(n) bytes, expected \(expected)")
        }
    }
}

/// Little-endian integer helpers for the header.
extension [UInt8] {
    mutating func appendLE<T: FixedWidthInteger>(_ v: T) {
        Swift.withUnsafeBytes(of: v.littleEndian) { append(contentsOf: $0) }
    }

    func readLE<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        var v: T = 0
        Swift.withUnsafeMutableBytes(of: &v) { dst in
            for i in 0..<MemoryLayout<T>.size { dst[i] = self[offset + i] }
        }
        return T(littleEndian: v)
    }
}
