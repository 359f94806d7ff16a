// Zip archives (PKWARE APPNOTE 6.3, with ZIP64), as torch.save and numpy.savez write them. Read-only, memory-mapped,
// strict: the central directory and every local header must agree, entries may not overlap each other or the
// directory, names are never paths, and CRCs are checked before a record's bytes are used.

import AmusedCore

/// One member of a zip archive.
public struct ZipEntry: Sendable {
    /// The member name.
    public let name: String
    /// 0 = stored, 8 = deflated.
    public let method: Int
    /// Bytes in the archive.
    public let compressedSize: Int
    /// Bytes once extracted.
    public let size: Int
    /// CRC-32 of the extracted bytes.
    public let crc: UInt32
    /// Offset of the local header.
    public let headerOffset: Int
    /// Offset of the member's data.
    public let dataOffset: Int
}

/// A validated zip archive over a memory-mapped file.
public final class ZipArchive: @unchecked Sendable {
    /// Most members accepted (ZP-11).
    public static let maxEntries = 100_000
    /// The archive's path.
    public let path: String
    /// Members in central-directory order.
    public let entries: [ZipEntry]
    let file: MappedFile
    private let byName: [String: Int]
    private var verified = Set<Int>()
    private let lock = Lock()

    /// Opens and validates `path`.
    public init(path: String) throws(ReadError) {
        self.path = path
        do { file = try MappedFile(path: path) } catch { throw ReadError.from(error, path: path) }
        let size = file.byteCount
        let bytes = UnsafeRawBufferPointer(start: file.pointer(at: 0), count: size)
        func u16(_ o: Int) -> Int { Int(bytes.loadUnaligned(fromByteOffset: o, as: UInt16.self).littleEndian) }
        func u32(_ o: Int) -> Int { Int(bytes.loadUnaligned(fromByteOffset: o, as: UInt32.self).littleEndian) }
        func u64(_ o: Int) throws(ReadError) -> Int {
            let v = bytes.loadUnaligned(fromByteOffset: o, as: UInt64.self).littleEndian
            guard v <= UInt64(Int.max) else {
                throw ReadError(.arithmeticOverflow, path: path, offset: o, "64-bit size overflows")
            }
            return Int(v)
        }
        guard size >= 22, u32(0) == 0x0403_4B50 else {
            throw ReadError(.unsupported, path: path, offset: 0, "not a zip archive")
        }
        // End of central directory: the last signature within the final 64 KiB + 22 bytes.
        var eocd = -1
        var o = size - 22
        while o >= max(0, size - 22 - 65535) {
            if u32(o) == 0x0605_4B50 {
                eocd = o
                break
            }
            o -= 1
        }
        guard eocd >= 0 else { throw ReadError(.malformed, path: path, "no end-of-central-directory record") }
        var count = u16(eocd + 10)
        var cdSize = u32(eocd + 12)
        var cdOffset = u32(eocd + 16)
        if count == 0xFFFF || cdSize == 0xFFFF_FFFF || cdOffset == 0xFFFF_FFFF {
            // ZIP64: a locator just before the EOCD points at the ZIP64 EOCD record.
            guard eocd >= 20, u32(eocd - 20) == 0x0706_4B50 else {
                throw ReadError(.malformed, path: path, offset: eocd, "ZIP64 sentinel without a ZIP64 locator")
            }
            let record = try u64(eocd - 12)
            guard record <= size - 56, u32(record) == 0x0606_4B50 else {
                throw ReadError(.malformed, path: path, offset: eocd - 20, "ZIP64 end record outside the file")
            }
            count = try u64(record + 32)
            cdSize = try u64(record + 40)
            cdOffset = try u64(record + 48)
        }
        guard count <= Self.maxEntries else {
            throw ReadError(.limitExceeded, path: path, offset: eocd, "\(count) entries (limit \(Self.maxEntries))")
        }
        guard let cdEnd = SizeMath.add(cdOffset, cdSize), cdEnd <= size, count * 46 <= cdSize else {
            throw ReadError(.malformed, path: path, offset: eocd, "central directory outside the file")
        }
        var entries: [ZipEntry] = []
        var names: [String: Int] = [:]
        var folded = Set<String>()
        var p = cdOffset
        for _ in 0..<count {
            guard p + 46 <= cdEnd, u32(p) == 0x0201_4B50 else {
                throw ReadError(.malformed, path: path, offset: p, "bad central directory entry")
            }
            let flags = u16(p + 8), method = u16(p + 10)
            let crc = UInt32(u32(p + 16))
            var compressed = u32(p + 20), uncompressed = u32(p + 24)
            let nameLength = u16(p + 28), extraLength = u16(p + 30), commentLength = u16(p + 32)
            var headerOffset = u32(p + 42)
            guard p + 46 + nameLength + extraLength + commentLength <= cdEnd else {
                throw ReadError(.malformed, path: path, offset: p, "central directory entry runs past the directory")
            }
            let nameBytes = Array(bytes[(p + 46)..<(p + 46 + nameLength)])
            guard let name = String(validating: nameBytes, as: UTF8.self) else {
                throw ReadError(.malformed, path: path, offset: p + 46, "member name is not UTF-8")
            }
            // ZIP64 extra field: the 0xFFFFFFFF fields, in order, as 64-bit values.
            var e = p + 46 + nameLength
            let extraEnd = e + extraLength
            while e + 4 <= extraEnd {
                let id = u16(e), length = u16(e + 2)
                guard e + 4 + length <= extraEnd else {
                    throw ReadError(.malformed, path: path, offset: e, "bad extra field")
                }
                if id == 0x0001 {
                    var q = e + 4
                    func take() throws(ReadError) -> Int {
                        guard q + 8 <= e + 4 + length else {
                            throw ReadError(.malformed, path: path, offset: q, field: name, "short ZIP64 extra field")
                        }
                        defer { q += 8 }
                        return try u64(q)
                    }
                    if uncompressed == 0xFFFF_FFFF { uncompressed = try take() }
                    if compressed == 0xFFFF_FFFF { compressed = try take() }
                    if headerOffset == 0xFFFF_FFFF { headerOffset = try take() }
                }
                e += 4 + length
            }
            if uncompressed == 0xFFFF_FFFF || compressed == 0xFFFF_FFFF || headerOffset == 0xFFFF_FFFF {
                throw ReadError(
                    .malformed, path: path, offset: p, field: name, "ZIP64 sentinel without a ZIP64 extra field")
            }
            guard !name.isEmpty, !name.hasPrefix("/"), !name.contains("\\"), !name.contains("\0"),
                !name.split(separator: "/").contains("..")
            else { throw ReadError(.forbidden, path: path, offset: p + 46, field: name, "member name is a path trick") }
            guard flags & 0x1 == 0 else {
                throw ReadError(.unsupported, path: path, offset: p, field: name, "encrypted member")
            }
            guard method == 0 || method == 8 else {
                throw ReadError(.unsupported, path: path, offset: p, field: name, "compression method \(method)")
            }
            guard method == 8 || compressed == uncompressed else {
                throw ReadError(.inconsistent, path: path, offset: p, field: name, "stored member with two sizes")
            }
            guard names[name] == nil, folded.insert(name.lowercased()).inserted else {
                throw ReadError(.malformed, path: path, offset: p, field: name, "duplicate member name")
            }
            // The local header must agree with the central directory.
            guard headerOffset <= size - 30, u32(headerOffset) == 0x0403_4B50 else {
                throw ReadError(.malformed, path: path, offset: headerOffset, field: name, "no local header here")
            }
            let localNameLength = u16(headerOffset + 26), localExtra = u16(headerOffset + 28)
            guard u16(headerOffset + 8) == method, localNameLength == nameLength,
                headerOffset + 30 + nameLength <= size,
                Array(bytes[(headerOffset + 30)..<(headerOffset + 30 + nameLength)]) == nameBytes
            else {
                throw ReadError(
                    .inconsistent, path: path, offset: headerOffset, field: name,
                    "local header disagrees with the directory")
            }
            if u16(headerOffset + 6) & 0x8 == 0 {
                // Without a data descriptor the local sizes and CRC are meaningful and must match.
                let localCRC = UInt32(u32(headerOffset + 14)), localC = u32(headerOffset + 18),
                    localU = u32(headerOffset + 22)
                guard localCRC == crc, localC == compressed || localC == 0xFFFF_FFFF,
                    localU == uncompressed || localU == 0xFFFF_FFFF
                else {
                    throw ReadError(
                        .inconsistent, path: path, offset: headerOffset, field: name,
                        "local sizes or CRC disagree with the directory")
                }
            }
            let dataOffset = headerOffset + 30 + nameLength + localExtra
            guard let dataEnd = SizeMath.add(dataOffset, compressed), dataEnd <= cdOffset else {
                throw ReadError(
                    .malformed, path: path, offset: dataOffset, field: name,
                    "member data overlaps the central directory or runs past it")
            }
            names[name] = entries.count
            entries.append(
                ZipEntry(
                    name: name, method: method, compressedSize: compressed, size: uncompressed, crc: crc,
                    headerOffset: headerOffset, dataOffset: dataOffset))
            p += 46 + nameLength + extraLength + commentLength
        }
        // No two members may share bytes.
        let sorted = entries.sorted { $0.headerOffset < $1.headerOffset }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.dataOffset + a.compressedSize > b.headerOffset {
            throw ReadError(.malformed, path: path, offset: b.headerOffset, field: b.name, "members overlap")
        }
        self.entries = entries
        self.byName = names
    }

    /// The member called `name`.
    public func entry(_ name: String) -> ZipEntry? { byName[name].map { entries[$0] } }

    /// A stored member's bytes as a zero-copy view of the mapped file, CRC-checked on first use unless `verify` is
    /// false (then `verify(_:)` must run before the bytes are trusted).
    public func storedData(_ e: ZipEntry, verify check: Bool = true) throws(ReadError) -> Storage {
        guard e.method == 0 else { throw ReadError(.unsupported, path: path, field: e.name, "member is compressed") }
        do {
            try file.checkIntact()
            let storage = try Storage(file: file, offset: e.dataOffset, byteCount: e.size)
            if check { try verify(e) }
            return storage
        } catch let error as ReadError {
            throw error
        } catch let error as TensorError {
            throw ReadError.from(error, path: path, field: e.name)
        } catch {
            throw ReadError(.io, path: path, field: e.name, "\(error)")
        }
    }

    /// The first `count` bytes of a member (fewer when it is shorter), inflating only what they need; not CRC-checked
    /// (the whole member is when `data` reads it).
    public func prefix(_ e: ZipEntry, count: Int) throws(ReadError) -> [UInt8] {
        if e.method == 0 {
            let s = try storedData(e, verify: false)
            return Array(UnsafeRawBufferPointer(start: s.baseAddress, count: min(e.size, count)))
        }
        try checkDeflateClaim(e)
        let input = Array(UnsafeRawBufferPointer(start: file.pointer(at: e.dataOffset), count: e.compressedSize))
        do { return try Inflate.prefix(input, count: min(e.size, count)) } catch {
            throw ReadError(.integrity, path: path, offset: e.dataOffset, field: e.name, "\(error)")
        }
    }

    /// Deflate cannot expand more than 1032:1; a larger declared size is not real.
    func checkDeflateClaim(_ e: ZipEntry) throws(ReadError) {
        guard e.size <= max(e.compressedSize, 1) * 1032 else {
            throw ReadError(
                .limitExceeded, path: path, offset: e.dataOffset, field: e.name,
                "declared size \(e.size) is more than deflate can produce from \(e.compressedSize) bytes")
        }
    }

    /// A member's bytes, inflated if needed (bounded by its declared size), CRC-checked.
    public func data(_ e: ZipEntry) throws(ReadError) -> [UInt8] {
        if e.method == 0 {
            let s = try storedData(e)
            return Array(UnsafeRawBufferPointer(start: s.baseAddress, count: e.size))
        }
        try checkDeflateClaim(e)
        let input = Array(UnsafeRawBufferPointer(start: file.pointer(at: e.dataOffset), count: e.compressedSize))
        let out: [UInt8]
        do { out = try Inflate.raw(input, limit: e.size).output } catch {
            throw ReadError(.integrity, path: path, offset: e.dataOffset, field: e.name, "\(error)")
        }
        guard out.count == e.size else {
            throw ReadError(
                .integrity, path: path, offset: e.dataOffset, field: e.name,
                "inflates to \(out.count) bytes, the directory says \(e.size)")
        }
        guard out.withUnsafeBytes({ CRC32.checksum($0) }) == e.crc else {
            throw ReadError(.integrity, path: path, offset: e.dataOffset, field: e.name, "CRC-32 mismatch")
        }
        return out
    }

    /// Checks a stored member's CRC-32 once (later calls return at once), then drops its pages from memory.
    public func verify(_ e: ZipEntry) throws(ReadError) {
        guard e.method == 0, let index = byName[e.name] else { return }
        if lock.withLock({ verified.contains(index) }) { return }
        let bytes = UnsafeRawBufferPointer(start: file.pointer(at: e.dataOffset), count: e.size)
        guard CRC32.checksum(bytes) == e.crc else {
            throw ReadError(.integrity, path: path, offset: e.dataOffset, field: e.name, "CRC-32 mismatch")
        }
        file.release(offset: e.dataOffset, count: e.size)
        lock.withLock { _ = verified.insert(index) }
    }
}

/// A small mutex for the read stage's caches.
final class Lock: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    init() { pthread_mutex_init(&mutex, nil) }
    deinit { pthread_mutex_destroy(&mutex) }
    func withLock<R>(_ body: () -> R) -> R {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return body()
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
