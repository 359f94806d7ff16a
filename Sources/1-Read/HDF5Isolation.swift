// HDF5 files are parsed by libhdf5, a large C library with a long list of crash CVEs, so by default they are read
// in a child process: the helper (`amused hdf5-helper IN OUT`) converts the file to a temporary safetensors file and
// this process only ever parses safetensors. A helper that crashes is reported as a malformed file, never a crash.
// In-process parsing happens only when asked for by name (`HDF5File(path:)`, or `HDF5Reading.inProcess`).

import AmusedCore
import Foundation

/// How HDF5 files are parsed.
public enum HDF5Reading: Sendable {
    /// In a child process running `helper hdf5-helper IN OUT` (the `amused` executable); `nil` finds it (see
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
        let selfPath = (try? fm.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let folder = URL(fileURLWithPath: selfPath).deletingLastPathComponent().path
        let candidates =
            [selfPath].filter { $0.hasSuffix("/amused") } + [folder + "/amused"]
            + (environment["PATH"] ?? "").split(separator: ":").map { $0 + "/amused" }
        return candidates.first { fm.isExecutableFile(atPath: $0) }
    }

    /// Runs the helper on `path` and opens its safetensors output, presented as the HDF5 file it came from (the
    /// temporary file is deleted once mapped: the mapping keeps it alive).
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
        let process = Process()
        process.executableURL = URL(fileURLWithPath: helper)
        process.arguments = ["hdf5-helper", path, output]
        // A crash in the child is reported by the parent; Swift's backtrace printer would only add noise.
        process.environment = ProcessInfo.processInfo.environment.merging(["SWIFT_BACKTRACE": "enable=no"]) { $1 }
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        do { try process.run() } catch {
            throw ReadError(.io, path: path, "cannot start the HDF5 helper \(helper): \(error)")
        }
        let message = String(decoding: Self.readToEnd(errors.fileHandleForReading.fileDescriptor), as: UTF8.self)
        process.waitUntilExit()
        if process.terminationReason == .uncaughtSignal {
            throw ReadError(
                .malformed, path: path,
                "libhdf5 crashed reading this file (signal \(process.terminationStatus)); it is damaged or hostile")
        }
        guard process.terminationStatus == 0 else {
            let parts =
                message.split(separator: "\n").last.map {
                    $0.split(separator: "\t", maxSplits: 2, omittingEmptySubsequences: false).map(String.init)
                } ?? []
            if parts.count == 3, let family = ReadError.Family(rawValue: parts[0]) {
                throw ReadError(family, path: path, field: parts[1].isEmpty ? nil : parts[1], parts[2])
            }
            throw ReadError(.malformed, path: path, "the HDF5 helper failed: \(message)")
        }
        return IsolatedHDF5(path: path, converted: try SafetensorsFile(path: output))
    }

    /// Everything `fd` yields until end of file (the last 64 KiB of it), read with read(2) and retried when a signal
    /// interrupts it: Foundation's readDataToEndOfFile() traps on EINTR (fuzzing found it: libFuzzer's SIGALRM).
    static func readToEnd(_ fd: Int32) -> [UInt8] {
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
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

    /// The helper's side: reads `input` in this process and writes it as safetensors to `output`; a refusal is
    /// written to stderr as one line the parent turns back into the same `ReadError`.
    public static func serve(input: String, output: String) -> Bool {
        do {
            let file = try HDF5File(path: input)
            try SafetensorsWriter.write(source: file, to: output)
            return true
        } catch {
            let e = error as? ReadError ?? ReadError(.io, path: input, "\(error)")
            let line = [e.family.rawValue, e.field ?? "", e.message].joined(separator: "\t")
            FileHandle.standardError.write(Data((line + "\n").utf8))
            return false
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
