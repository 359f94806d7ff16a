// HDF5 files are parsed by libhdf5, a large C library with a long list of crash CVEs, so by default they are read
// in a child process: the helper (`amused hdf5-helper`, started once per process and kept) reads each file in a fresh
// fork of itself and converts it to a temporary safetensors file; this process only ever parses safetensors. A copy
// that crashes is reported as a malformed file, never a crash, and the next file gets a fresh copy.
// In-process parsing happens only when asked for by name (`HDF5File(path:)`, or `HDF5Reading.inProcess`).

import AmusedCore
import CHDF5
import Foundation

/// How HDF5 files are parsed.
public enum HDF5Reading: Sendable {
    /// In a child process running `helper hdf5-helper` (the `amused` executable); `nil` finds it (see
    /// `HDF5Isolation.helper`).
    case isolated(helper: String?)
    /// In this process, through libhdf5 directly.
    case inProcess

    /// The default: isolated, with the helper found as `HDF5Isolation.helper` says.
    public static let `default` = HDF5Reading.isolated(helper: nil)
}

/// Reading HDF5 through the helper process.
public enum HDF5Isolation {
    /// The helper executable: `AMUSED_HDF5_HELPER` when set; this process itself when it is `amused`; else an
    /// `amused` beside this process's executable (as in a SwiftPM build folder) or on `PATH`.
    public static func helper() -> String? {
        let environment = ProcessInfo.processInfo.environment
        if let explicit = environment["AMUSED_HDF5_HELPER"], !explicit.isEmpty { return explicit }
        let fm = FileManager.default
        let selfPath = Bundle.main.executablePath ?? CommandLine.arguments[0]
        let folder = URL(fileURLWithPath: selfPath).deletingLastPathComponent().path
        let candidates =
            [selfPath].filter { $0.hasSuffix("/amused") } + [folder + "/amused"]
            + (environment["PATH"] ?? "").split(separator: ":").map { $0 + "/amused" }
        return candidates.first { path in
            var isDirectory: ObjCBool = false
            return fm.fileExists(atPath: path, isDirectory: &isDirectory) && !isDirectory.boolValue
                && fm.isExecutableFile(atPath: path)  // a folder named amused (Sources/amused) is not it
        }
    }

    /// Reads `path` through the helper (one persistent helper per executable, started on first use) and opens its
    /// safetensors output, presented as the HDF5 file it came from (the temporary file is deleted once mapped: the
    /// mapping keeps it alive).
    public static func open(path: String, helper: String? = nil) throws(ReadError) -> any TensorSource {
        guard let helper = helper ?? Self.helper() else {
            throw ReadError(
                .unsupported, path: path,
                "HDF5 files are read in a helper process and no amused executable "
                    + "was found: build it (swift build) and put it on PATH or set AMUSED_HDF5_HELPER, or read in this "
                    + "process by name with HDF5File(path:)")
        }
        let output = NSTemporaryDirectory() + "amused-hdf5-\(UUID().uuidString).safetensors"
        defer { unlink(output) }
        let answer = try HelperConnection.connection(to: helper).request(input: path, output: output)
        let parts = answer.split(separator: "\t", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
        switch (parts.first, parts.count) {
        case ("ok", 1): return IsolatedHDF5(path: path, converted: try SafetensorsFile(path: output))
        case ("crashed", 2):
            throw ReadError(
                .malformed, path: path,
                "libhdf5 crashed reading this file (signal \(parts[1])); it is damaged or hostile")
        case (let family?, 3):
            throw ReadError(
                ReadError.Family(rawValue: family) ?? .malformed, path: path, field: parts[1].isEmpty ? nil : parts[1],
                parts[2])
        default: throw ReadError(.malformed, path: path, "the HDF5 helper failed: \(answer)")
        }
    }

    /// Everything `fd` yields until end of file (the last 64 KiB of it), read with read(2) and retried when a signal
    /// interrupts it: Foundation's readDataToEndOfFile() traps on EINTR (fuzzing found it: libFuzzer's SIGALRM).
    /// With `seconds`, nil once that much wall-clock time has passed without the end.
    static func readToEnd(_ fd: Int32, seconds: Double? = nil) -> [UInt8]? {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        let deadline = seconds.map { Date().addingTimeInterval($0) }
        while true {
            if let deadline {
                let left = deadline.timeIntervalSinceNow
                guard left > 0 else { return nil }
                var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let ready = poll(&poller, 1, Int32(min(left * 1000, 60_000)) + 1)
                if ready == 0 || (ready < 0 && errno == EINTR) { continue }
            }
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                out += buffer[..<n]
                if out.count > 1 << 16 { out.removeFirst(out.count - (1 << 16)) }
            } else if n < 0 && errno == EINTR {
                continue
            } else {
                return out
            }
        }
    }

    /// Writes all of `bytes` to `fd` (see `writeFully`).
    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool { bytes.withUnsafeBytes { writeFully(fd, $0) } }

    /// The helper's side (`amused hdf5-helper`): answers requests on standard input until it ends. A request is the
    /// input path and the output path, each ended by a NUL byte; the answer is one line: `ok`, `crashed<TAB>SIGNAL`,
    /// or a refusal as `family<TAB>field<TAB>message` that the parent turns back into the same `ReadError`. Each file
    /// is read in a fresh `fork` of this process, so a crash costs only that copy and no state left by one hostile
    /// file reaches the next. `beforeEach` runs in the copy first (a test hook).
    public static func serveRequests(beforeEach: () -> Void = {}) {
        signal(SIGPIPE, SIG_IGN)  // a parent that went away ends the loop through a failed write, not a signal
        signal(SIGCHLD, SIG_DFL)  // an embedding app's SIG_IGN would make waitpid lose every child's status
        HDF5File.initializeLibrary()  // once, before forking: each copy starts from an initialised library
        var pending: [UInt8] = []
        while let (input, output) = nextRequest(&pending) {
            let answer = readForked(input: input, output: output, beforeEach: beforeEach)
            guard writeAll(1, Array((answer + "\n").utf8)) else { return }
        }
    }

    /// Longest request accepted (two paths).
    static let maxRequest = 1 << 16

    /// The next `input NUL output NUL` request from standard input; nil at its end (or on a malformed request).
    static func nextRequest(_ pending: inout [UInt8]) -> (String, String)? {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while pending.count(where: { $0 == 0 }) < 2 {
            guard pending.count <= maxRequest else { return nil }
            let n = buffer.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
            if n > 0 {
                pending += buffer[..<n]
            } else if !(n < 0 && errno == EINTR) {
                return nil
            }
        }
        let first = pending.firstIndex(of: 0)!, second = pending[(first + 1)...].firstIndex(of: 0)!
        defer { pending.removeFirst(second + 1) }
        return (
            String(decoding: pending[..<first], as: UTF8.self),
            String(decoding: pending[(first + 1)..<second], as: UTF8.self)
        )
    }

    /// Reads `input` into `output` in a forked copy of this process and returns the answer line.
    static func readForked(input: String, output: String, beforeEach: () -> Void) -> String {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { return "io\t\tthe HDF5 helper cannot make a pipe (errno \(errno))" }
        // The budget follows links (a hub-cache snapshot file is a link to its blob).
        var info = stat()
        let budget = ReaderBudget(fileSize: stat(input, &info) == 0 ? Int(info.st_size) : 0)
        let threads = amused_thread_count()
        guard threads == 1 else {
            close(fds[0])
            close(fds[1])
            return "io\t\tthe HDF5 helper runs \(threads) threads and forks only single-threaded (a copy of a threaded "
                + "process can inherit a held lock); run it as `amused hdf5-helper`, not inside another program"
        }
        let child = amused_fork()
        if child == 0 {
            close(fds[0])
            amused_detach_stdio()  // it answers through the pipe, never on the socket it inherited
            // libhdf5 can loop on a hostile file, allocating as it goes (fuzzing found one that grows past 20 GB in
            // under a minute): this copy gets a budget of memory and CPU time that any real file of its size fits.
            guard amused_limit_reader(budget.memoryBytes, budget.cpuSeconds) == 0 else {
                _ = writeAll(fds[1], Array("io\t\tthe HDF5 helper cannot limit its reader (errno \(errno))".utf8))
                _exit(0)
            }
            beforeEach()
            _ = writeAll(fds[1], Array(readInThisProcess(input: input, output: output).utf8))
            _exit(0)  // no atexit handlers: the parent's libhdf5 and files are not this copy's to close
        }
        close(fds[1])
        guard child > 0 else {
            close(fds[0])
            return "io\t\tthe HDF5 helper cannot fork (errno \(errno))"
        }
        // CPU time bounds a reader that computes; wall-clock time bounds one that waits (a FIFO, a hung mount).
        let bytes = readToEnd(fds[0], seconds: budget.wallSeconds)
        close(fds[0])
        if bytes == nil { kill(child, SIGKILL) }
        var status: Int32 = 0
        while waitpid(child, &status, 0) < 0 && errno == EINTR {}
        // A reader killed while writing leaves its temporary file (named with its pid) beside the output: removed.
        if bytes == nil || (status & 0x7F) != 0 { AtomicFileWriter.removeStale(for: output) }
        if bytes == nil {
            return "limitExceeded\t\tlibhdf5 did not finish reading this file within \(Int(budget.wallSeconds)) s "
                + "(wall clock); it is damaged, hostile or not a regular file"
        }
        let answer = String(decoding: bytes ?? [], as: UTF8.self)
        let signal = status & 0x7F  // WTERMSIG; 0 is a normal exit, 0x7F a stopped child
        if signal == SIGXCPU || signal == SIGKILL {
            return "limitExceeded\t\tlibhdf5 was stopped after \(budget.cpuSeconds) s of CPU time reading this file "
                + "(the budget is \(ReaderBudget.baseSeconds) s + 1 s per 25 MB); it is damaged or hostile"
        }
        if signal != 0 && signal != 0x7F { return "crashed\t\(signal)" }
        return answer.isEmpty ? "malformed\t\tthe HDF5 reader ended without an answer (status \(status))" : answer
    }

    /// What a forked reader of one file may use: address space of twice the file plus 512 MiB beyond what the helper
    /// maps (libhdf5 copies a dataset at a time; the safetensors output is streamed), and CPU time of
    /// `baseSeconds` plus one second per 25 MB (libhdf5 reads a real file at well over 100 MB/s).
    struct ReaderBudget {
        /// CPU seconds every file gets: `AMUSED_HDF5_CPU_SECONDS` when set (tests), else 20.
        static let baseSeconds: UInt =
            ProcessInfo.processInfo.environment["AMUSED_HDF5_CPU_SECONDS"].flatMap { UInt($0) } ?? 20
        let memoryBytes: UInt64
        let cpuSeconds: UInt
        /// Wall-clock seconds: the CPU budget and ten more.
        var wallSeconds: Double { Double(cpuSeconds) + 10 }

        init(fileSize: Int) {
            let size = UInt64(max(fileSize, 0))
            memoryBytes = size.multipliedReportingOverflow(by: 2).partialValue + (512 << 20)
            cpuSeconds = Self.baseSeconds + UInt(size / (25 << 20))
        }
    }

    /// Reads `input` in this process and writes it as safetensors to `output`: `ok`, or the refusal as one line.
    static func readInThisProcess(input: String, output: String) -> String {
        do {
            let file = try HDF5File(path: input)
            // A scratch file the parent maps at once and deletes: no fsync (under heavy disk writes, such as a
            // build beside it, fsync stalled reads for over a second — fuzzing's timeout found it).
            try SafetensorsWriter.write(source: file, to: output, durable: false)
            return "ok"
        } catch {
            let e = error as? ReadError ?? ReadError(.io, path: input, "\(error)")
            return [e.family.rawValue, e.field ?? "", e.message].map(oneLine).joined(separator: "\t")
        }
    }

    /// `text` safe inside one answer line: every control or line-breaking scalar (a link name in a file may hold
    /// "\r\n", which Swift counts as one Character) becomes a space, and at most 1024 scalars are kept.
    static func oneLine(_ text: String) -> String {
        var out = String.UnicodeScalarView()
        for scalar in text.unicodeScalars.prefix(1024) {
            let v = scalar.value
            let breaks = v < 0x20 || v == 0x7F || (0x80...0x9F).contains(v) || v == 0x2028 || v == 0x2029
            out.append(breaks ? " " : scalar)
        }
        return String(out)
    }
}

/// The parent's end of one persistent helper: started on first use, asked one file at a time, started again when it
/// has gone away.
final class HelperConnection: @unchecked Sendable {
    private static let registry = Lock()
    nonisolated(unsafe) private static var connections: [String: HelperConnection] = [:]

    /// The connection to `helper`, made once per process.
    static func connection(to helper: String) -> HelperConnection {
        registry.withLock {
            if let existing = connections[helper] { return existing }
            let made = HelperConnection(helper: helper)
            connections[helper] = made
            return made
        }
    }

    let helper: String
    private let lock = Lock()
    private var process: Process?
    private var socket: Int32 = -1
    private var received: [UInt8] = []

    private init(helper: String) { self.helper = helper }

    /// Asks the helper to read `input` into `output` and returns its answer line. A helper that has gone away between
    /// requests is started again, once.
    func request(input: String, output: String) throws(ReadError) -> String {
        guard !input.utf8.contains(0), !output.utf8.contains(0) else {
            throw ReadError(.malformed, path: input, "a path with a NUL byte cannot be read")
        }
        let absolute = input.hasPrefix("/") ? input : FileManager.default.currentDirectoryPath + "/" + input
        return try lock.withLock { () throws(ReadError) -> String in
            for _ in 0..<2 {
                if process == nil { try start(path: input) }
                if send(Array(absolute.utf8) + [0] + Array(output.utf8) + [0]), let line = receiveLine() {
                    // One request, one line: anything more means the helper's answers can no longer be trusted to
                    // belong to their requests; a fresh helper serves the next file.
                    if !received.isEmpty { stop() }
                    return line
                }
                stop()
            }
            throw ReadError(.io, path: input, "the HDF5 helper \(helper) stopped answering")
        }
    }

    private func start(path: String) throws(ReadError) {
        // One socket for both directions; SOCK_CLOEXEC keeps it out of every other child this process starts (the
        // helper must see its input end when this process goes away).
        var fds: [Int32] = [0, 0]
        guard amused_socketpair(&fds) == 0 else {
            throw ReadError(.io, path: path, "cannot make a socket for the HDF5 helper (errno \(errno))")
        }
        let theirs = FileHandle(fileDescriptor: fds[1], closeOnDealloc: false)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: helper)
        process.arguments = ["hdf5-helper"]
        // A crash in a child is reported by the parent; Swift's backtrace printer would only add noise. The helper
        // multiplies no matrices: one OpenBLAS thread means no idle worker threads started beside it at load (and none
        // present when it forks).
        var environment = ProcessInfo.processInfo.environment.merging(
            ["SWIFT_BACKTRACE": "enable=no", "OPENBLAS_NUM_THREADS": "1"]) { $1 }
        environment["AMUSED_PEAK_RSS_FILE"] = nil  // the parent's peak is the parent's to record
        process.environment = environment
        process.standardInput = theirs
        process.standardOutput = theirs
        process.standardError = FileHandle.nullDevice
        do { try process.run() } catch {
            close(fds[0])
            close(fds[1])
            throw ReadError(.io, path: path, "cannot start the HDF5 helper \(helper): \(error)")
        }
        close(fds[1])
        (self.process, socket, received) = (process, fds[0], [])
    }

    private func stop() {
        if socket >= 0 { close(socket) }  // the helper reads the end of its input and exits
        process?.waitUntilExit()
        (process, socket, received) = (nil, -1, [])
    }

    private func send(_ bytes: [UInt8]) -> Bool {
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { amused_send(socket, $0.baseAddress! + done, UInt($0.count - done)) }
            if n > 0 {
                done += n
            } else if !(n < 0 && errno == EINTR) {
                return false
            }
        }
        return true
    }

    /// The next answer line (without its newline); nil when the helper has gone away.
    private func receiveLine() -> String? {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            if let end = received.firstIndex(of: UInt8(ascii: "\n")) {
                defer { received.removeFirst(end + 1) }
                return String(decoding: received[..<end], as: UTF8.self)
            }
            guard received.count <= HDF5Isolation.maxRequest else { return nil }
            let n = buffer.withUnsafeMutableBytes { recv(socket, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                received += buffer[..<n]
            } else if !(n < 0 && errno == EINTR) {
                return nil
            }
        }
    }
}

/// The helper's safetensors output presented as the HDF5 file it came from.
struct IsolatedHDF5: TensorSource {
    let path: String
    let converted: SafetensorsFile
    var format: WeightFormat { .hdf5 }
    var infos: [TensorInfo] { converted.infos.map { $0.renamed($0.name, fileOffset: 0, path: path) } }
    func tensor(named name: String) throws(ReadError) -> Tensor { try converted.tensor(named: name) }
}
