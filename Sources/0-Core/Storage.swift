// Tensor bytes: owned memory, or a read-only view into a memory-mapped file that is never copied.

import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Errors from the tensor layer: conversions, views and mapped files.
public enum TensorError: Error, LocalizedError, Equatable, Sendable, CustomStringConvertible {
    /// The same as `description` (what the command line prints).
    public var errorDescription: String? { description }

    /// A file could not be opened, measured or mapped (errno text included).
    case io(path: String, message: String)
    /// A file could not be written, made durable or put in place (errno text included); the destination is as it was.
    case write(path: String, message: String)
    /// A mapped file changed size after it was opened: its tensors can no longer be trusted.
    case fileChanged(path: String, expectedBytes: Int, actualBytes: Int)
    /// A conversion between these types is not supported.
    case unsupportedConversion(from: DType, to: DType)
    /// A view does not fit inside its storage or does not match its shape.
    case invalidView(String)

    /// The problem alone, naming the file, without advice (for errors that wrap this one and give their own).
    public var summary: String {
        switch self {
        case .io(let path, let message), .write(let path, let message): "\(path): \(message)"
        default: description
        }
    }

    /// A message that names the problem and says what to do.
    public var description: String {
        switch self {
        case .io(let path, let message):
            "\(path): \(message). Check that the file exists and is readable."
        case .write(let path, let message):
            "\(path): \(message). Check the folder's permissions, the free space and any file-size limit; "
                + "the destination was left as it was."
        case .fileChanged(let path, let expected, let actual):
            "\(path): the file changed size while it was open (\(expected) bytes when opened, \(actual) now). "
                + "Another process is rewriting it; wait for it to finish and run again."
        case .unsupportedConversion(let from, let to):
            "cannot convert \(from.rawValue) elements to \(to.rawValue); convert packed or complex tensors explicitly."
        case .invalidView(let message):
            "invalid tensor view: \(message)"
        }
    }
}

/// A read-only, private memory mapping of a whole file. The mapping lives as long as any tensor that views it.
public final class MappedFile: @unchecked Sendable {
    /// The path the file was opened from, for messages.
    public let path: String
    /// Bytes mapped (the file's size when it was opened).
    public let byteCount: Int
    private let fd: Int32
    private let base: UnsafeRawPointer?

    /// Maps `path` read-only. An empty file maps to no memory.
    public init(path: String) throws(TensorError) {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .io(path: path, message: "cannot open (\(Self.errnoText()))") }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            let message = Self.errnoText()
            close(fd)
            throw .io(path: path, message: "cannot stat (\(message))")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw .io(path: path, message: "not a regular file")
        }
        let size = Int(st.st_size)
        var base: UnsafeRawPointer? = nil
        if size > 0 {
            let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
            guard let p, p != MAP_FAILED else {
                let message = Self.errnoText()
                close(fd)
                throw .io(path: path, message: "cannot map \(size) bytes (\(message))")
            }
            base = UnsafeRawPointer(p)
        }
        self.fd = fd
        self.byteCount = size
        self.base = base
    }

    deinit {
        if let base { munmap(UnsafeMutableRawPointer(mutating: base), byteCount) }
        close(fd)
    }

    /// Fails when the file no longer has the size it had when mapped. A mapping of a file that another process
    /// truncated faults (SIGBUS) when touched past the new end, so every reader calls this before it touches bytes.
    public func checkIntact() throws(TensorError) {
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw .io(path: path, message: "cannot stat (\(Self.errnoText()))")
        }
        if Int(st.st_size) != byteCount {
            throw .fileChanged(path: path, expectedBytes: byteCount, actualBytes: Int(st.st_size))
        }
    }

    /// Drops the pages of `offset ..< offset + count` from this process's memory (they are read again from the file
    /// if touched later), so that streaming through a large file keeps the resident set near one tensor.
    public func release(offset: Int, count: Int) {
        guard let base, count > 0, offset >= 0, offset < byteCount else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = (offset / page) * page
        let end = min(byteCount, offset + count)
        // Only whole pages inside the range are dropped (never a neighbour's partly used page… which is harmless
        // anyway for a read-only private mapping: it would just be read again).
        guard end > start else { return }
        _ = madvise(UnsafeMutableRawPointer(mutating: base + start), end - start, Int32(MADV_DONTNEED))
    }

    /// The address of byte `offset`, which the caller has checked lies inside the file.
    public func pointer(at offset: Int) -> UnsafeRawPointer {
        guard let base else { return UnsafeRawPointer(bitPattern: 0x1)! }  // empty file: only empty views exist
        return base + offset
    }

    static func errnoText() -> String { String(cString: strerror(errno)) }
}

/// The bytes behind a tensor: owned (freed with the last reference) or a range of a mapped file.
public final class Storage: @unchecked Sendable {
    /// First byte.
    public let baseAddress: UnsafeRawPointer
    /// Number of bytes.
    public let byteCount: Int
    /// The mapped file this storage views, if any (kept alive by this reference).
    public let mappedFile: MappedFile?
    private let owned: UnsafeMutableRawPointer?

    /// Owned, zero-filled storage of `byteCount` bytes, 64-byte aligned.
    public init(zeroedByteCount byteCount: Int) {
        let p = UnsafeMutableRawPointer.allocate(byteCount: Swift.max(byteCount, 1), alignment: 64)
        p.initializeMemory(as: UInt8.self, repeating: 0, count: Swift.max(byteCount, 1))
        self.owned = p
        self.baseAddress = UnsafeRawPointer(p)
        self.byteCount = byteCount
        self.mappedFile = nil
    }

    /// Owned storage holding a copy of `bytes`.
    public convenience init(copying bytes: UnsafeRawBufferPointer) {
        self.init(zeroedByteCount: bytes.count)
        if bytes.count > 0, let src = bytes.baseAddress {
            owned!.copyMemory(from: src, byteCount: bytes.count)
        }
    }

    /// A view of `byteCount` bytes at `offset` in `file`; fails when the range is not inside the file.
    public init(file: MappedFile, offset: Int, byteCount: Int) throws(TensorError) {
        guard offset >= 0, byteCount >= 0, let end = SizeMath.add(offset, byteCount), end <= file.byteCount else {
            throw .invalidView(
                "bytes \(offset)..<\(offset &+ byteCount) lie outside \(file.path) (\(file.byteCount) bytes)")
        }
        self.baseAddress = file.pointer(at: offset)
        self.byteCount = byteCount
        self.mappedFile = file
        self.owned = nil
    }

    deinit { owned?.deallocate() }

    /// Drops this storage's pages from memory if it views a mapped file (see `MappedFile.release`).
    public func releasePages() {
        guard let file = mappedFile else { return }
        file.release(offset: baseAddress - file.pointer(at: 0), count: byteCount)
    }

    /// True when the bytes are a view into a mapped file (zero-copy).
    public var isMapped: Bool { mappedFile != nil }

    /// Mutable access to owned storage; nil for mapped (read-only) storage.
    public var mutableBaseAddress: UnsafeMutableRawPointer? { owned }
}
