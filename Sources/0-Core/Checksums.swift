// CRC-32 (ISO 3309 / ITU-T V.42, the zip and PNG checksum) through zlib's `crc32_z`, which is linked for DEFLATE
// anyway and is optimised C in every build (the slice-by-8 loop it replaces was Swift, unoptimised in the debug builds
// the tests run).

import CZlib

/// CRC-32 with the reflected polynomial 0xEDB88320.
public enum CRC32 {
    /// The CRC-32 of `bytes`, continuing from `crc` (0 to start).
    public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return crc }
        return UInt32(crc32_z(UInt(crc), base.assumingMemoryBound(to: Bytef.self), bytes.count))
    }

    /// The CRC-32 of `bytes`.
    public static func checksum<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
        Array(bytes).withUnsafeBytes { checksum($0) }
    }
}
