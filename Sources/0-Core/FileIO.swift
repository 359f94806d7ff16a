// Small, checked file primitives: bounded positional reads and all-or-nothing writes.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A read-only file handle for bounded positional reads (headers, indexes) without mapping the data.
public final class ReadOnlyFile: @unchecked Sendable {
    /// The path, for messages.
    public let path: String
    /// The size when opened.
    public let byteCount: Int
    private let fd: Int32

    /// Opens `path` for reading; fails unless it is a regular file.
    public init(path: String) throws(TensorError) {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .io(path: path, message: "cannot open (\(MappedFile.errnoText()))") }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else {
            close(fd)
            throw .io(path: path, message: "not a readable regular file")
        }
        self.fd = fd
        self.byteCount = Int(st.st_size)
    }

    deinit { close(fd) }

    /// The whole file.
    public func readAll() throws(TensorError) -> [UInt8] { try read(at: 0, count: byteCount) }

    /// Reads exactly `count` bytes at `offset`; the caller has checked the range lies inside the file.
    public func read(at offset: Int, count: Int) throws(TensorError) -> [UInt8] {
        guard offset >= 0, count >= 0, let end = SizeMath.add(offset, count), end <= byteCount else {
            throw .invalidView("read of \(count) bytes at \(offset) is outside \(path) (\(byteCount) bytes)")
        }
        var out = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = out.withUnsafeMutableBytes { buf in
                pread(fd, buf.baseAddress! + done, count - done, off_t(offset + done))
            }
            if n < 0 {
                if errno == EINTR { continue }
                throw .io(path: path, message: "read failed (\(MappedFile.errnoText()))")
            }
            if n == 0 { throw .fileChanged(path: path, expectedBytes: byteCount, actualBytes: offset + done) }
            done += n
        }
        return out
    }
}

/// Writes a file all-or-nothing: bytes go to a fresh temporary file beside the destination (created with O_EXCL),
/// which is fsynced, renamed over the destination and followed by an fsync of the folder. Until `commit()` the
/// destination is untouched; a writer dropped without committing removes its temporary file.
public final class AtomicFileWriter {
    /// The final path.
    public let destination: String
    /// The temporary path being written.
    public let temporaryPath: String
    private var fd: Int32
    private var committed = false
    /// Bytes appended so far.
    public private(set) var position = 0

    /// Creates the temporary file next to `destination`.
    public init(destination: String) throws(TensorError) {
        self.destination = destination
        let dir = AtomicFileWriter.folder(of: destination)
        let base = destination.split(separator: "/").last.map(String.init) ?? destination
        var attempt = 0
        while true {
            let candidate = dir + "/." + base + ".\(getpid()).\(UInt32.random(in: 0...UInt32.max)).tmp"
            let fd = open(candidate, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o644)
            if fd >= 0 {
                self.fd = fd
                self.temporaryPath = candidate
                return
            }
            attempt += 1
            if errno != EEXIST || attempt > 16 {
                throw .write(path: candidate, message: "cannot create temporary file (\(MappedFile.errnoText()))")
            }
        }
    }

    deinit {
        if !committed {
            if fd >= 0 { close(fd) }
            unlink(temporaryPath)
        }
    }

    /// Appends `bytes`.
    public func write(_ bytes: UnsafeRawBufferPointer) throws(TensorError) {
        var done = 0
        while done < bytes.count {
            let n = Glibc_write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw .write(path: temporaryPath, message: "write failed (\(MappedFile.errnoText()))")
            }
            done += n
        }
        position += bytes.count
    }

    /// Overwrites `bytes` at `offset` (inside what was appended already; for headers written last).
    public func write(_ bytes: [UInt8], at offset: Int) throws(TensorError) {
        guard offset >= 0, offset + bytes.count <= position else {
            throw .write(path: temporaryPath, message: "write at \(offset) is outside the \(position) bytes written")
        }
        let n = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress!, bytes.count, off_t(offset)) }
        guard n == bytes.count else {
            throw .write(path: temporaryPath, message: "write failed (\(MappedFile.errnoText()))")
        }
    }

    /// Makes what was written so far durable, without committing (so it can be mapped and read back).
    public func flush() throws(TensorError) {
        guard fsync(fd) == 0 else {
            throw .write(path: temporaryPath, message: "fsync failed (\(MappedFile.errnoText()))")
        }
    }

    /// Removes temporary files a killed writer left beside `destination` (`.<name>.<pid>.<random>.tmp` whose process
    /// no longer runs). Returns how many were removed.
    @discardableResult
    public static func removeStale(for destination: String) -> Int {
        let dir = folder(of: destination)
        let base = destination.split(separator: "/").last.map(String.init) ?? destination
        guard let d = opendir(dir) else { return 0 }
        defer { closedir(d) }
        var removed = 0
        while let entry = readdir(d) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            guard name.hasPrefix("." + base + "."), name.hasSuffix(".tmp") else { continue }
            let parts = name.dropFirst(base.count + 2).dropLast(4).split(separator: ".")
            guard parts.count == 2, let pid = Int32(parts[0]), UInt32(parts[1]) != nil else { continue }
            if pid != getpid() && kill(pid, 0) != 0 && errno == ESRCH {
                if unlink(dir + "/" + name) == 0 { removed += 1 }
            }
        }
        return removed
    }

    /// Appends `bytes`.
    public func write(_ bytes: [UInt8]) throws(TensorError) {
        var failure: TensorError?
        bytes.withUnsafeBytes { raw in
            do throws(TensorError) { try write(raw) } catch { failure = error }
        }
        if let failure { throw failure }
    }

    /// Test hook (OUT-03 of docs/hostile-inputs.md): `AMUSED_TEST_FAIL_FSYNC=file` or `folder` makes that fsync fail
    /// with EIO, as a failing disk would; nothing else can make fsync fail on demand.
    static let failingFsync: String? = getenv("AMUSED_TEST_FAIL_FSYNC").map { String(cString: $0) }

    static func sync(_ fd: Int32, _ which: String) -> Int32 {
        if failingFsync == which {
            errno = EIO
            return -1
        }
        return fsync(fd)
    }

    /// Makes the file durable and puts it in place of the destination. `durable: false` skips the two fsyncs (for a
    /// scratch file read back at once and deleted, where waiting for the disk buys nothing).
    public func commit(durable: Bool = true) throws(TensorError) {
        guard !durable || Self.sync(fd, "file") == 0 else {
            throw .write(path: temporaryPath, message: "fsync failed (\(MappedFile.errnoText()))")
        }
        close(fd)
        fd = -1
        guard rename(temporaryPath, destination) == 0 else {
            throw .write(path: destination, message: "rename failed (\(MappedFile.errnoText()))")
        }
        committed = true
        guard durable else { return }
        let dfd = open(AtomicFileWriter.folder(of: destination), O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            defer { close(dfd) }
            guard Self.sync(dfd, "folder") == 0 else {
                throw .write(path: destination, message: "fsync of the folder failed (\(MappedFile.errnoText()))")
            }
        }
    }

    static func folder(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let dir = String(path[..<slash])
        return dir.isEmpty ? "/" : dir
    }
}

@inline(__always)
private func Glibc_write(_ fd: Int32, _ p: UnsafeRawPointer, _ n: Int) -> Int {
    #if canImport(Glibc)
    return Glibc.write(fd, p, n)
    #else
    return Darwin.write(fd, p, n)
    #endif
}

/// Writes all of `bytes` to `fd`, through signal interruptions and short writes; false on an error (errno says which).
public func writeFully(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
    var done = 0
    while done < bytes.count {
        let n = Glibc_write(fd, bytes.baseAddress! + done, bytes.count - done)
        if n > 0 {
            done += n
        } else if !(n < 0 && errno == EINTR) {
            return false
        }
    }
    return true
}
